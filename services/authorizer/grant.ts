// What a login event does to the lease under its key: the pure heart of the authorizer.
// Given the key's current value (a lease, a tombstone, or nothing), a user revocation if any, and
// the lease the event would grant, it answers: write this value, keep what is there, or refuse.
// Invariants: a write never shortens a lease (the later expiry wins, whatever the order of
// events); an event for a login at or before a revocation grants nothing.
import type { BucketValue } from "../../shared/bucket-value.ts";
import type { Lease, RecentUser } from "../../shared/lease.ts";
import type { LeasePolicy } from "./policy.ts";

export type GuardPolicy = Pick<
  LeasePolicy,
  "maxUsersPerIp" | "usersWindowMs" | "refuseSharedAddress"
>;

export type Grant =
  | {
      readonly action: "write";
      readonly value: Lease;
      readonly outcome: "created" | "extended" | "recorded";
      readonly distinctUsers: number;
    }
  | { readonly action: "keep"; readonly outcome: "kept"; readonly distinctUsers: number }
  | {
      readonly action: "refuse";
      readonly outcome: "revoked" | "user-revoked" | "shared-address";
      readonly distinctUsers: number;
    };

export function nextLease(
  current: BucketValue | undefined,
  userRevokedAt: number | undefined,
  candidate: Lease,
  guard: GuardPolicy,
  now: number,
): Grant {
  if (userRevokedAt !== undefined && candidate.loginAt <= userRevokedAt) {
    return { action: "refuse", outcome: "user-revoked", distinctUsers: 0 };
  }
  if (current?.kind === "revoked" && candidate.loginAt <= current.revokedAt) {
    return { action: "refuse", outcome: "revoked", distinctUsers: 0 };
  }
  const held = current?.kind === "lease" ? current.lease : undefined;
  const recent = guard.maxUsersPerIp > 0 ? mergeRecent(held, candidate, guard, now) : undefined;
  const distinctUsers = recent?.length ?? 0;
  if (recent !== undefined && distinctUsers > guard.maxUsersPerIp && guard.refuseSharedAddress) {
    return { action: "refuse", outcome: "shared-address", distinctUsers };
  }
  if (held !== undefined && held.expiresAt >= candidate.expiresAt) {
    const user = candidate.user;
    const newUser =
      recent !== undefined && user !== undefined && !(held.recent ?? []).some(([u]) => u === user);
    if (!newUser) return { action: "keep", outcome: "kept", distinctUsers };
    return { action: "write", value: { ...held, recent }, outcome: "recorded", distinctUsers };
  }
  const outcome = held !== undefined && held.expiresAt > now ? "extended" : "created";
  return { action: "write", value: { ...candidate, recent }, outcome, distinctUsers };
}

/**
 * The distinct users of the window, the candidate's included, newest first; bounded to one more
 * than the limit, which is all the guard needs to know it was passed.
 */
function mergeRecent(
  held: Lease | undefined,
  candidate: Lease,
  guard: GuardPolicy,
  now: number,
): RecentUser[] {
  const since = now - guard.usersWindowMs;
  const byUser = new Map<string, number>();
  for (const [user, at] of held?.recent ?? []) if (at > since) byUser.set(user, at);
  if (candidate.user !== undefined && candidate.loginAt > since) {
    byUser.set(candidate.user, Math.max(candidate.loginAt, byUser.get(candidate.user) ?? 0));
  }
  return [...byUser].sort((a, b) => b[1] - a[1]).slice(0, guard.maxUsersPerIp + 1);
}
