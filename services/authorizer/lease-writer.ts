// Applies a lease to the bucket with compare-and-set (DESIGN.md "Events and leases"): read the
// key's last entry (and the user's revocation, if the lease names a user), let grant.ts decide,
// and publish the new value to the key's subject expecting the revision read (0 for a new key),
// with the lease's remaining time as its own TTL (`Nats-TTL`). A concurrent writer makes the
// expectation fail (10071): read again and retry, so the outcome is the same in any order.
// Creating and renewing are the same publish: `kv.create()` is a publish expecting revision 0,
// and `kv.put()` cannot carry a TTL at all.
import type { JetStreamClient } from "@nats-io/jetstream";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import { decodeBucketValue, type BucketValue } from "../../shared/bucket-value.ts";
import { kvSubject, userKey } from "../../shared/contract.ts";
import { encodeLease, type Lease } from "../../shared/lease.ts";
import { nextLease, type Grant, type GuardPolicy } from "./grant.ts";

/** Per-message TTL is whole seconds, at least 1 (ADR-43). */
export function natsTtl(ms: number): string {
  return `${Math.max(1, Math.ceil(ms / 1000))}s`;
}

const WRONG_LAST_SEQUENCE = 10071;
/** Enough for heavy contention on one key; past it the event is redelivered later. */
const MAX_CAS_ATTEMPTS = 8;
const NO_GUARD: GuardPolicy = { maxUsersPerIp: 0, usersWindowMs: 0, refuseSharedAddress: false };

export class LeaseWriter {
  readonly #js: JetStreamClient;
  readonly #kv: KV;
  readonly #bucket: string;
  readonly #perMessageTtl: boolean;
  readonly #guard: GuardPolicy;

  constructor(
    js: JetStreamClient,
    kv: KV,
    bucket: string,
    perMessageTtl: boolean,
    guard: GuardPolicy = NO_GUARD,
  ) {
    this.#js = js;
    this.#kv = kv;
    this.#bucket = bucket;
    this.#perMessageTtl = perMessageTtl;
    this.#guard = guard;
  }

  async write(key: string, candidate: Lease, now: number): Promise<Grant> {
    for (let attempt = 1; ; attempt++) {
      const [entry, userEntry] = await Promise.all([
        this.#kv.get(key),
        candidate.user === undefined ? null : this.#kv.get(userKey(candidate.user)),
      ]);
      const userRevocation = valueOf(userEntry);
      const grant = nextLease(
        valueOf(entry),
        userRevocation?.kind === "revoked" ? userRevocation.revokedAt : undefined,
        candidate,
        this.#guard,
        now,
      );
      if (grant.action !== "write") return grant;
      try {
        await this.#js.publish(kvSubject(this.#bucket, key), encodeLease(grant.value), {
          expect: { lastSubjectSequence: entry?.revision ?? 0 },
          ...(this.#perMessageTtl ? { ttl: natsTtl(grant.value.expiresAt - now) } : {}),
        });
        return grant;
      } catch (err) {
        const conflict = err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE;
        if (!conflict || attempt >= MAX_CAS_ATTEMPTS) throw err;
      }
    }
  }
}

/** The value of a live entry; a value we cannot read counts as absent and is replaced. */
export function valueOf(entry: KvEntry | null): BucketValue | undefined {
  if (entry?.operation !== "PUT") return undefined;
  try {
    return decodeBucketValue(entry.value);
  } catch {
    return undefined;
  }
}
