// Writes a lease so that a later write never shortens it (DESIGN.md "Events and leases"):
// read the key's last entry, keep it if it already lasts at least as long, otherwise publish the
// new value to the key's subject expecting the revision we read (0 for a new key), with the
// lease's own TTL as `Nats-TTL`. A concurrent writer makes the expectation fail (10071); we read
// again and retry, so the longest `expiresAt` wins whatever the order of events.
// Creating and renewing are the same publish: `kv.create()` is a publish expecting revision 0,
// and `kv.put()` cannot carry a TTL at all.
import type { JetStreamClient } from "@nats-io/jetstream";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { kvSubject } from "../../shared/contract.ts";
import { decodeLease, encodeLease, type Lease } from "../../shared/lease.ts";

/** Per-message TTL must be whole seconds, at least 1 (ADR-43). */
export function natsTtl(ms: number): string {
  return `${Math.max(1, Math.ceil(ms / 1000))}s`;
}

export type WriteOutcome = "created" | "extended" | "kept";

const WRONG_LAST_SEQUENCE = 10071;
/** Enough for heavy contention on one key; past it the event is redelivered later. */
const MAX_CAS_ATTEMPTS = 8;

export class LeaseWriter {
  readonly #js: JetStreamClient;
  readonly #kv: KV;
  readonly #bucket: string;
  readonly #perMessageTtl: boolean;

  constructor(js: JetStreamClient, kv: KV, bucket: string, perMessageTtl: boolean) {
    this.#js = js;
    this.#kv = kv;
    this.#bucket = bucket;
    this.#perMessageTtl = perMessageTtl;
  }

  async write(key: string, lease: Lease, now: number): Promise<WriteOutcome> {
    for (let attempt = 1; ; attempt++) {
      const entry = await this.#kv.get(key);
      const current = entry?.operation === "PUT" ? safeDecode(entry.value) : undefined;
      if (current !== undefined && current.expiresAt >= lease.expiresAt) return "kept";
      try {
        await this.#js.publish(kvSubject(this.#bucket, key), encodeLease(lease), {
          expect: { lastSubjectSequence: entry?.revision ?? 0 },
          ...(this.#perMessageTtl ? { ttl: natsTtl(lease.expiresAt - now) } : {}),
        });
        return current === undefined ? "created" : "extended";
      } catch (err) {
        const conflict = err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE;
        if (!conflict || attempt >= MAX_CAS_ATTEMPTS) throw err;
      }
    }
  }
}

/** A value we cannot read is treated as absent: the new lease replaces it. */
function safeDecode(value: Uint8Array): Lease | undefined {
  try {
    return decodeLease(value);
  } catch {
    return undefined;
  }
}
