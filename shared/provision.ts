// What relaylease needs in JetStream, created by `relaylease setup` (an admin identity) and
// verified by the running roles, which only say exactly what is missing:
//   stream RELAY_LOGINS   subjects relaylease.login.>, file storage, dedupe window for retries
//   consumer authorizer   durable pull consumer shared by all authorizer replicas
//   bucket relay-leases   history 1, max_age = the longest lease TTL, per-message TTL with
//                         limit markers so every mirror hears of an expiry as a PURGE entry
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import { AUTHORIZER_DURABLE, LOGIN_SUBJECTS } from "./contract.ts";

export interface Shape {
  readonly stream: string;
  readonly bucket: string;
  readonly replicas: number;
  /** The longest TTL any lease may have: the bucket's max_age. */
  readonly maxLeaseTtlMs: number;
  readonly perMessageTtl: boolean;
}

export class ProvisionError extends Error {
  override name = "ProvisionError";
}

/** Login events are kept a day, for `relaylease events --since` and late authorizers. */
const LOGIN_RETENTION_MS = 24 * 3_600_000;
/** Retries of one event within this window are stored once (Nats-Msg-Id). */
const DUPLICATE_WINDOW_MS = 2 * 60_000;
/**
 * How long an expiry marker stays: a mirror that reconnects within it still hears the expiry;
 * one away longer reloads, and mirrors check `expiresAt` themselves anyway.
 */
const MARKER_TTL_MS = 15 * 60_000;

export function kvStreamName(bucket: string): string {
  return `KV_${bucket}`;
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

/** Creates what is missing and updates what differs; returns a line per change made. */
export async function provision(nc: NatsConnection, shape: Shape): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const changes: string[] = [];
  const wanted = loginStreamConfig(shape);
  const stream = await jsm.streams.info(shape.stream).catch(() => undefined);
  if (stream === undefined) {
    await jsm.streams.add(wanted);
    changes.push(`created stream ${shape.stream}`);
  } else if (stream.config.num_replicas !== shape.replicas) {
    await jsm.streams.update(shape.stream, { ...stream.config, num_replicas: shape.replicas });
    changes.push(
      `stream ${shape.stream}: replicas ${stream.config.num_replicas} -> ${shape.replicas}`,
    );
  }
  const consumer = await jsm.consumers
    .info(shape.stream, AUTHORIZER_DURABLE)
    .catch(() => undefined);
  if (consumer === undefined) {
    await jsm.consumers.add(shape.stream, {
      durable_name: AUTHORIZER_DURABLE,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: LOGIN_SUBJECTS,
      ack_wait: nanos(30_000),
      max_ack_pending: 1000,
    });
    changes.push(`created consumer ${shape.stream}/${AUTHORIZER_DURABLE}`);
  }
  changes.push(...(await provisionBucket(nc, jsm, shape)));
  return changes;
}

async function provisionBucket(
  nc: NatsConnection,
  jsm: JetStreamManager,
  shape: Shape,
): Promise<string[]> {
  const name = kvStreamName(shape.bucket);
  const existing = await jsm.streams.info(name).catch(() => undefined);
  if (existing === undefined) {
    await new Kvm(nc).create(shape.bucket, {
      history: 1,
      ttl: shape.maxLeaseTtlMs,
      replicas: shape.replicas,
      storage: StorageType.File,
      ...(shape.perMessageTtl ? { markerTTL: Math.min(MARKER_TTL_MS, shape.maxLeaseTtlMs) } : {}),
    });
    return [`created bucket ${shape.bucket}`];
  }
  const c = existing.config;
  if (shape.perMessageTtl && c.allow_msg_ttl !== true) {
    throw new ProvisionError(
      `bucket ${shape.bucket} exists without per-message TTL, which cannot be added to a bucket; ` +
        `delete it (leases are lost) and run setup again`,
    );
  }
  if (c.max_age === nanos(shape.maxLeaseTtlMs) && c.num_replicas === shape.replicas) return [];
  await jsm.streams.update(name, {
    ...c,
    max_age: nanos(shape.maxLeaseTtlMs),
    num_replicas: shape.replicas,
  });
  return [`bucket ${shape.bucket}: max_age and replicas set`];
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
