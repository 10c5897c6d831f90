// What a bucket entry holds: a lease, or a revocation tombstone. A tombstone stays for one
// maximum TTL under the key it revoked (an address key or a user key), so that an event for a
// login before the revocation, delivered late or replayed, cannot grant again; a login after it
// replaces it.
import { leaseFromJson, type Lease, type LeaseView } from "./lease.ts";
import {
  SchemaError,
  TRACEPARENT,
  USER_NAME,
  type JsonObject,
  optionalString,
  parseJsonObject,
  requiredTime,
} from "./schema.ts";

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
  const o = bucketObject(value);
  if (isLease(o)) return { kind: "lease", lease: leaseFromJson(o) };
  return {
    kind: "revoked",
    revokedAt: requiredTime(o, "revokedAt"),
    by: optionalString(o, "by", USER_NAME),
    user: optionalString(o, "user", USER_NAME),
  };
}

/**
 * What the milter's mirror keeps of a bucket value: a lease's view, or undefined for a revocation.
 * Only the fields a decision reads are checked: the mirror decodes the whole bucket at start (a
 * million values), and the authorizer checked the rest when it wrote them.
 * @throws SchemaError naming the bad field.
 */
export function decodeLeaseView(value: Uint8Array): LeaseView | undefined {
  const o = bucketObject(value);
  if (!isLease(o)) return undefined;
  const view: { expiresAt: number; user?: string; trace?: string } = {
    expiresAt: requiredTime(o, "expiresAt"),
  };
  const user = optionalString(o, "user", USER_NAME);
  if (user !== undefined) view.user = user;
  const trace = optionalString(o, "trace", TRACEPARENT);
  if (trace !== undefined) view.trace = trace;
  return view;
}

function bucketObject(value: Uint8Array): JsonObject {
  // Decoded in place: a copy first is waste at a million values.
  const text = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("utf8");
  return parseJsonObject(text, "bucket value");
}

/** A lease has no `kind`; anything else must be a revocation. */
function isLease(o: JsonObject): boolean {
  if (o["kind"] === undefined) return true;
  if (o["kind"] !== "revoked") throw new SchemaError(`field "kind" has an invalid value`);
  return false;
}
