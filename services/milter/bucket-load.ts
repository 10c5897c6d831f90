// The mirror's initial load: every key's last entry of the lease bucket, read over one ephemeral
// push consumer (deliver last per subject, no acks, flow control) into a core subscription.
// A KV watch does the same over an ordered pull consumer and costs about twice the CPU per entry
// (bench/front-doors.ts "mirror"); a million leases must load in seconds. The mirror then follows
// the bucket with a KV watch resumed after the revision this returns.
//
// Entries arrive in stream order. The load is complete at the first entry with nothing pending
// after it (or at once when the consumer starts with nothing pending). Writes during the load have
// later revisions: either they arrive here, or the watch resumed after the returned revision
// brings them. A gap in the consumer's delivery sequence or a silence of SILENCE_MS fails the
// load (the caller retries): a mirror with holes must never become ready.
import {
  AckPolicy,
  DeliverPolicy,
  jetstreamManager,
  type JetStreamManager,
} from "@nats-io/jetstream";
import { createInbox, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { kvStreamName } from "../../shared/provision.ts";

/** A bucket entry as the mirror applies it. */
export interface BucketEntry {
  readonly key: string;
  /** PUT, or a delete: DEL, PURGE, or the server's expiry marker (reported as PURGE). */
  readonly operation: "PUT" | "DEL" | "PURGE";
  readonly value: Uint8Array;
  readonly revision: number;
  /** When the server stored it, epoch ms. */
  readonly createdMs: number;
}

const HEARTBEAT_NS = 2_000_000_000;
/** No entry and no idle heartbeat for this long: the consumer or its server is gone. */
const SILENCE_MS = 10_000;
/** An abandoned consumer (we died mid-load) is removed by the server after this. */
const INACTIVE_NS = 60_000_000_000;

export class BucketLoadError extends Error {
  override name = "BucketLoadError";
}

/** Delivers the bucket's current entries to `onEntry`; resolves with the last revision read. */
export async function loadBucket(
  nc: NatsConnection,
  bucket: string,
  onEntry: (entry: BucketEntry) => void,
): Promise<number> {
  const stream = kvStreamName(bucket);
  const prefix = `$KV.${bucket}.`;
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const inbox = createInbox();
  let consumer: string | undefined;
  let expectedDelivery = 1;
  let lastRevision = 0;
  let heardAt = Date.now();
  let settled = false;
  let settle!: (error: Error | undefined) => void;
  const finished = new Promise<Error | undefined>((resolve) => {
    settle = (error) => {
      settled = true;
      resolve(error);
    };
  });
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      // Whatever comes after the end (a write racing the unsubscribe) is the watch's to deliver.
      if (settled) return;
      heardAt = Date.now();
      if (err !== null) {
        settle(err);
        return;
      }
      if (msg.data.length === 0 && isControl(msg)) return;
      const delivery = parseDelivery(msg.reply);
      if (delivery === undefined) {
        settle(new BucketLoadError(`not a consumer delivery: ${String(msg.reply)}`));
        return;
      }
      if (delivery.deliverySeq !== expectedDelivery) {
        settle(
          new BucketLoadError(`delivery ${expectedDelivery} missing (got ${delivery.deliverySeq})`),
        );
        return;
      }
      expectedDelivery++;
      lastRevision = delivery.streamSeq;
      onEntry({
        key: msg.subject.slice(prefix.length),
        operation: msg.data.length === 0 ? operationOf(msg) : "PUT",
        value: msg.data,
        revision: delivery.streamSeq,
        createdMs: delivery.timestampMs,
      });
      if (delivery.pending === 0) settle(undefined);
    },
  });
  const watchdog = setInterval(() => {
    if (Date.now() - heardAt > SILENCE_MS) {
      settle(new BucketLoadError(`nothing from the consumer for ${SILENCE_MS} ms`));
    }
  }, SILENCE_MS / 4);
  try {
    const info = await jsm.consumers.add(stream, {
      deliver_subject: inbox,
      deliver_policy: DeliverPolicy.LastPerSubject,
      filter_subject: `${prefix}>`,
      ack_policy: AckPolicy.None,
      flow_control: true,
      idle_heartbeat: HEARTBEAT_NS,
      inactive_threshold: INACTIVE_NS,
      mem_storage: true,
    });
    consumer = info.name;
    if (info.num_pending === 0 && info.delivered.consumer_seq === 0) settle(undefined);
    const error = await finished;
    if (error !== undefined) throw error;
    return lastRevision;
  } finally {
    clearInterval(watchdog);
    sub.unsubscribe();
    if (consumer !== undefined) await removeConsumer(jsm, stream, consumer);
  }

  /** Flow-control requests are answered; idle heartbeats only prove the consumer is alive. */
  function isControl(msg: Msg): boolean {
    const headers = msg.headers;
    if (headers === undefined || headers.code !== 100) return false;
    if (msg.reply !== undefined && msg.reply !== "") msg.respond();
    return true;
  }
}

function operationOf(msg: Msg): BucketEntry["operation"] {
  const operation = msg.headers?.get("KV-Operation");
  if (operation === "DEL" || operation === "PURGE") return operation;
  // A per-message-TTL expiry leaves a marker instead (ADR-43); the KV client calls it a purge.
  return msg.headers?.has("Nats-Marker-Reason") === true ? "PURGE" : "PUT";
}

async function removeConsumer(jsm: JetStreamManager, stream: string, name: string): Promise<void> {
  // Best effort: if it fails, the server drops the consumer after INACTIVE_NS.
  await jsm.consumers.delete(stream, name).catch(() => undefined);
}

export interface Delivery {
  readonly streamSeq: number;
  readonly deliverySeq: number;
  readonly timestampMs: number;
  readonly pending: number;
}

/**
 * Reads a JetStream delivery's ack subject, in either form the server uses:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>` or, with a domain and
 * account hash, `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.
 * <pending>[.<token>]`. Undefined for anything else. It runs once per entry of the initial load,
 * so it finds the dots itself instead of splitting the subject into strings.
 */
export function parseDelivery(reply: string | undefined): Delivery | undefined {
  if (reply === undefined || !reply.startsWith("$JS.ACK.")) return undefined;
  const dots = deliveryDots;
  let count = 0;
  for (let i = reply.indexOf("."); i >= 0 && count < dots.length; i = reply.indexOf(".", i + 1)) {
    dots[count++] = i;
  }
  if (reply.indexOf(".", (dots[count - 1] ?? 0) + 1) >= 0) return undefined; // 13 tokens or more
  // Tokens: 9 in the classic form, 11 or 12 with a domain; `at` is the dot before <sseq>.
  const at = count === 8 ? 4 : count === 10 || count === 11 ? 6 : -1;
  if (at < 0) return undefined;
  const streamSeq = tokenNumber(reply, count, at);
  const deliverySeq = tokenNumber(reply, count, at + 1);
  const nanos = tokenNumber(reply, count, at + 2);
  const pending = tokenNumber(reply, count, at + 3);
  if (streamSeq < 0 || deliverySeq < 0 || nanos < 0 || pending < 0) return undefined;
  return { streamSeq, deliverySeq, timestampMs: Math.floor(nanos / 1e6), pending };
}

/** Dot positions of the subject being read; parsing is synchronous, so one array is enough. */
const deliveryDots = new Int32Array(11);

/** The number in the token after dot `i` of the `count` found in `s`, or -1. */
function tokenNumber(s: string, count: number, i: number): number {
  const end = i + 1 < count ? (deliveryDots[i + 1] ?? 0) : s.length;
  return digitsBetween(s, (deliveryDots[i] ?? 0) + 1, end);
}

/** The decimal number s[start, end) (1 to 20 digits), or -1. */
function digitsBetween(s: string, start: number, end: number): number {
  if (end <= start || end - start > 20) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (!(d >= 0 && d <= 9)) return -1;
    n = n * 10 + d;
  }
  // Past 15 digits (the nanosecond timestamp) summing digits rounds differently from reading the
  // number whole, which is exact to the nearest double.
  return end - start > 15 ? Number(s.slice(start, end)) : n;
}
