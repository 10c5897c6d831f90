// The one decision behind every SMTP-side front door: may this client relay?
// Pure: a lease lookup, the request, the time and the configuration in; a verdict and its reason
// out. Front doors translate the verdict into their own protocol (policy: OK / DUNNO).
import { leaseKey, tryParseAddress } from "../../shared/address.ts";
import type { Lease } from "../../shared/lease.ts";
import type { LeaseLookup } from "./mirror.ts";

export interface RelayRequest {
  /** The SMTP client's address as the MTA sent it. */
  readonly clientAddress: string;
}

export type Decision =
  | { readonly verdict: "accept"; readonly reason: "leased"; readonly lease: Lease }
  | { readonly verdict: "continue"; readonly reason: "not-leased" | "no-address" };

export function decide(leases: LeaseLookup, request: RelayRequest, now: number): Decision {
  const address = tryParseAddress(request.clientAddress);
  if (address === undefined) return { verdict: "continue", reason: "no-address" };
  const lease = leases.lookup(leaseKey(address), now);
  if (lease === undefined) return { verdict: "continue", reason: "not-leased" };
  return { verdict: "accept", reason: "leased", lease };
}
