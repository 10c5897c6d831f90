// Lease policy (DESIGN.md "Guarding the lease"): which addresses may never hold a lease, how
// long a lease lasts per service, and the distinct-users guard for shared addresses.
// Pure functions over configuration; the authorizer and `relaylease grant` apply them.
import {
  networkContains,
  parseNetworkList,
  type ClientAddress,
  type Ipv6LeasePrefix,
  type Network,
} from "../../shared/address.ts";

export interface NeverLease {
  readonly network: Network;
  /** The reason logged and counted when it refuses: loopback, multicast, cgnat, configured … */
  readonly reason: string;
}

export interface LeasePolicy {
  readonly defaultTtlMs: number;
  readonly serviceTtlMs: ReadonlyMap<string, number>;
  readonly neverLease: readonly NeverLease[];
  readonly ipv6Prefix: Ipv6LeasePrefix;
  /** 0 turns the guard off. */
  readonly maxUsersPerIp: number;
  readonly usersWindowMs: number;
  /** Over the limit: refuse (true) or only flag (false). */
  readonly refuseSharedAddress: boolean;
}

/** Addresses that can never be one client (RFC 6890 special-purpose ranges and CGNAT). */
export const DEFAULT_NEVER_LEASE: readonly NeverLease[] = [
  ["0.0.0.0/8", "unspecified"],
  ["::/128", "unspecified"],
  ["127.0.0.0/8", "loopback"],
  ["::1/128", "loopback"],
  ["169.254.0.0/16", "link-local"],
  ["fe80::/10", "link-local"],
  ["224.0.0.0/4", "multicast"],
  ["ff00::/8", "multicast"],
  ["255.255.255.255/32", "broadcast"],
  ["100.64.0.0/10", "cgnat"],
].map(([net, reason]) => ({
  network: parseNetworkList(net ?? "")[0] as Network,
  reason: reason ?? "",
}));

/** RELAYLEASE_NEVER_LEASE replaces the default list; each entry refuses as "configured". */
export function configuredNeverLease(list: readonly Network[]): NeverLease[] {
  return list.map((network) => ({ network, reason: "configured" }));
}

/** The reason an address may never hold a lease, or undefined if it may. */
export function neverLeaseReason(policy: LeasePolicy, addr: ClientAddress): string | undefined {
  for (const n of policy.neverLease) if (networkContains(n.network, addr)) return n.reason;
  return undefined;
}

export function ttlFor(policy: LeasePolicy, service: string): number {
  return policy.serviceTtlMs.get(service) ?? policy.defaultTtlMs;
}

/** The longest TTL the policy can grant: the bucket's max_age. */
export function maxTtl(defaultTtlMs: number, serviceTtlMs: ReadonlyMap<string, number>): number {
  return Math.max(defaultTtlMs, ...serviceTtlMs.values());
}
