// What a bucket entry holds: a lease, or a revocation tombstone. A tombstone stays for one
// maximum TTL under the key it revoked (an address key or a user key), so that an event for a
// login before the revocation, delivered late or replayed, cannot grant again; a login after it
// replaces it.
import { leaseFromJson, type Lease } from "./lease.ts";
import { SchemaError, USER_NAME, optionalString, parseJsonObject, requiredTime } from "./schema.ts";

export interface Revocation {
  readonly kind: "revoked";
  readonly revokedAt: number;
  /** Who revoked (an operator name or "cli"). */
  readonly by?: string | undefined;
  /** The user whose leases were revoked, for a user key. */
  readonly user?: string | undefined;
}

export type BucketValue = { readonly kind: "lease"; readonly lease: Lease } | Revocation;

export function encodeRevocation(r: Omit<Revocation, "kind">): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      kind: "revoked",
      revokedAt: new Date(r.revokedAt).toISOString(),
      by: r.by,
      user: r.user,
    }),
  );
}

/** Throws SchemaError naming the bad field. */
export function decodeBucketValue(value: Uint8Array): BucketValue {
  // Decoded in place: the mirror decodes the whole bucket at start, and a copy first is waste.
  const text = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("utf8");
  const o = parseJsonObject(text, "bucket value");
  if (o["kind"] === undefined) return { kind: "lease", lease: leaseFromJson(o) };
  if (o["kind"] !== "revoked") throw new SchemaError(`field "kind" has an invalid value`);
  return {
    kind: "revoked",
    revokedAt: requiredTime(o, "revokedAt"),
    by: optionalString(o, "by", USER_NAME),
    user: optionalString(o, "user", USER_NAME),
  };
}
