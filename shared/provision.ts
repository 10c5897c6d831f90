// What relaylease needs in JetStream, created by `relaylease setup` (an admin identity) and
// verified by the running roles, which only say exactly what is missing:
//   stream RELAY_LOGINS   subjects relaylease.login.>, file storage, dedupe window for retries
//   consumer authorizer   durable pull consumer shared by all authorizer replicas
//   bucket relay-leases   history 1, max_age = the longest lease TTL, per-message TTL with
//                         limit markers so every mirror hears of an expiry as a PURGE entry
// provision() is idempotent: it creates what is missing, updates what differs, reports each
// change, and refuses a change JetStream cannot make (it never deletes data to make one).
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import { formatDuration } from "./config.ts";
import { AUTHORIZER_DURABLE, LOGIN_SUBJECTS } from "./contract.ts";

export interface Shape {
  readonly stream: string;
  readonly bucket: string;
  readonly replicas: number;
  /** The longest TTL any lease may have: the bucket's max_age. */
  readonly maxLeaseTtlMs: number;
  readonly perMessageTtl: boolean;
  /** How long before an unacknowledged event goes to another authorizer. */
  readonly ackWaitMs?: number;
}

export class ProvisionError extends Error {
  override name = "ProvisionError";
}

/** Login events are kept a day, for `relaylease events --since` and late authorizers. */
export const LOGIN_RETENTION_MS = 24 * 3_600_000;
/** Retries of one event within this window are stored once (Nats-Msg-Id). */
export const DUPLICATE_WINDOW_MS = 2 * 60_000;
/**
 * How long an expiry marker stays: a mirror that reconnects within it still hears the expiry;
 * one away longer reloads, and mirrors check `expiresAt` themselves anyway.
 */
export const MARKER_TTL_MS = 15 * 60_000;
export const DEFAULT_ACK_WAIT_MS = 30_000;

export function kvStreamName(bucket: string): string {
  return `KV_${bucket}`;
}

export function markerTtlMs(shape: Shape): number {
  return Math.min(MARKER_TTL_MS, shape.maxLeaseTtlMs);
}

export function loginStreamConfig(shape: Shape): Partial<StreamConfig> & { name: string } {
  return {
    name: shape.stream,
    subjects: [LOGIN_SUBJECTS],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(LOGIN_RETENTION_MS),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    num_replicas: shape.replicas,
  };
}

export function authorizerConsumerConfig(shape: Shape): Partial<ConsumerConfig> {
  return {
    durable_name: AUTHORIZER_DURABLE,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: LOGIN_SUBJECTS,
    ack_wait: nanos(shape.ackWaitMs ?? DEFAULT_ACK_WAIT_MS),
    max_ack_pending: 1000,
  };
}

/** Creates what is missing and updates what differs; returns a line per change made. */
export async function provision(nc: NatsConnection, shape: Shape): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  return [
    ...(await provisionStream(jsm, shape)),
    ...(await provisionConsumer(jsm, shape)),
    ...(await provisionBucket(nc, jsm, shape)),
  ];
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  return jsm.streams.info(name).catch((err: unknown) => {
    if (err instanceof Error && /stream not found/i.test(err.message)) return undefined;
    throw err;
  });
}

async function provisionStream(jsm: JetStreamManager, shape: Shape): Promise<string[]> {
  const wanted = loginStreamConfig(shape);
  const info = await streamInfo(jsm, shape.stream);
  if (info === undefined) {
    await jsm.streams.add(wanted);
    return [`created stream ${shape.stream}`];
  }
  refuseStorageChange(`stream ${shape.stream}`, info);
  const changes = differences(`stream ${shape.stream}`, info.config, wanted, [
    "subjects",
    "num_replicas",
    "duplicate_window",
    "max_age",
  ]);
  if (changes.length > 0) await jsm.streams.update(shape.stream, { ...info.config, ...wanted });
  return changes;
}

async function provisionConsumer(jsm: JetStreamManager, shape: Shape): Promise<string[]> {
  const wanted = authorizerConsumerConfig(shape);
  const info = await jsm.consumers.info(shape.stream, AUTHORIZER_DURABLE).catch(() => undefined);
  const what = `consumer ${shape.stream}/${AUTHORIZER_DURABLE}`;
  if (info === undefined) {
    await jsm.consumers.add(shape.stream, wanted);
    return [`created ${what}`];
  }
  const changes = differences(what, info.config, wanted, [
    "filter_subject",
    "ack_wait",
    "max_ack_pending",
  ]);
  if (changes.length > 0) await jsm.consumers.update(shape.stream, AUTHORIZER_DURABLE, wanted);
  return changes;
}

async function provisionBucket(
  nc: NatsConnection,
  jsm: JetStreamManager,
  shape: Shape,
): Promise<string[]> {
  const name = kvStreamName(shape.bucket);
  const info = await streamInfo(jsm, name);
  if (info === undefined) {
    await new Kvm(nc).create(shape.bucket, {
      history: 1,
      ttl: shape.maxLeaseTtlMs,
      replicas: shape.replicas,
      storage: StorageType.File,
      ...(shape.perMessageTtl ? { markerTTL: markerTtlMs(shape) } : {}),
    });
    return [`created bucket ${shape.bucket}`];
  }
  refuseStorageChange(`bucket ${shape.bucket}`, info);
  const wanted: Partial<StreamConfig> = {
    max_age: nanos(shape.maxLeaseTtlMs),
    num_replicas: shape.replicas,
    max_msgs_per_subject: 1,
    // Per-message TTL can be turned on in place (never off again).
    ...(shape.perMessageTtl
      ? { allow_msg_ttl: true, subject_delete_marker_ttl: nanos(markerTtlMs(shape)) }
      : {}),
  };
  const changes = differences(`bucket ${shape.bucket}`, info.config, wanted, [
    "max_age",
    "num_replicas",
    "max_msgs_per_subject",
    "allow_msg_ttl",
    "subject_delete_marker_ttl",
  ]);
  if (changes.length > 0) await jsm.streams.update(name, { ...info.config, ...wanted });
  return changes;
}

function refuseStorageChange(what: string, info: StreamInfo): void {
  if (info.config.storage !== StorageType.File) {
    throw new ProvisionError(
      `${what} uses ${info.config.storage} storage and relaylease needs file storage, which ` +
        `JetStream cannot change in place; move its data away, delete it, and run setup again`,
    );
  }
}

/** One line per field whose current value differs from the wanted one. */
function differences<T extends object>(
  what: string,
  current: T,
  wanted: Partial<T>,
  fields: readonly (keyof T & string)[],
): string[] {
  const out: string[] = [];
  for (const f of fields) {
    const want = wanted[f];
    if (want === undefined) continue;
    const have = current[f];
    if (JSON.stringify(have) !== JSON.stringify(want)) {
      out.push(`${what}: ${f} ${show(f, have)} -> ${show(f, want)}`);
    }
  }
  return out;
}

function show(field: string, v: unknown): string {
  if (typeof v === "number" && /age|wait|window|ttl/.test(field)) {
    return formatDuration(Math.round(v / 1e6));
  }
  return v === undefined ? "unset" : JSON.stringify(v);
}

/**
 * The running roles' check: the stream, consumer and bucket they use exist. Throws a
 * ProvisionError that says what is missing and how to create it.
 */
export async function verifyProvisioned(
  js: JetStreamClient,
  names: { stream: string; bucket: string },
  need: { consumer?: boolean; bucket?: boolean },
): Promise<void> {
  const jsm = await js.jetstreamManager();
  const missing: string[] = [];
  if (need.consumer === true) {
    const ok = await jsm.consumers.info(names.stream, AUTHORIZER_DURABLE).then(
      () => true,
      () => false,
    );
    if (!ok) missing.push(`consumer ${names.stream}/${AUTHORIZER_DURABLE}`);
  }
  if (need.bucket === true) {
    const ok = await jsm.streams.info(kvStreamName(names.bucket)).then(
      () => true,
      () => false,
    );
    if (!ok) missing.push(`bucket ${names.bucket}`);
  }
  if (missing.length > 0) {
    throw new ProvisionError(
      `missing in JetStream: ${missing.join(", ")}; run \`relaylease setup\` with an admin identity`,
    );
  }
}
