// The one decision behind every SMTP-side front door: may this client relay to this recipient?
// Pure: a lease lookup, the request, the time and the configuration in; a verdict and its reason
// out. Front doors translate the verdict into their own protocol (milter: SMFIR_ACCEPT /
// SMFIR_CONTINUE / SMFIR_REPLYCODE 550 or 451; policy: OK / DUNNO / DEFER_IF_REJECT).
//
// The order of the checks, and why (DESIGN.md "Decision"; mta-protocols.md sections 2, 3, 7):
//  1. A client in a trusted network, or 2. one holding a live lease (its /128 key, then for IPv6
//     its /64 key, which the authorizer writes with RELAYLEASE_IPV6_PREFIX=64) may relay. Known
//     live leases count even when the mirror is stale.
//  3. At CONNECT nothing else is known: everyone else continues (`acceptAt: "rcpt"` also holds
//     back the accept for trusted and leased clients, so the decision is remade per recipient
//     instead of being frozen for the SMTP session).
//  4. At RCPT an SMTP AUTH identity (`{auth_authen}`, `sasl_username`) may relay.
//  5. A local recipient needs no relay permission: continue, even when the mirror is stale.
//  6. A remote recipient from a client without an address (milter family U or L, `unknown`) is
//     refused: no lease can ever match it, so staleness changes nothing.
//  7. When the mirror is stale, an unknown client may hold a lease we have not heard of: the
//     fail mode answers (tempfail by default). Never an accept: no open relay during an outage.
//  8. Otherwise: relaying denied.
//
// Recipient locality: a domain listed in `localDomains` is local, whatever the mailer ("example.org"
// matches exactly; ".example.org" matches its subdomains only, as Postfix's relay_domains does
// with parent_domain_matches_subdomains off; list both for both). A listed domain wins over a remote
// `{rcpt_mailer}` on purpose: that is how a Postfix relay_domains or backup-MX domain (mailer
// `relay` or `smtp`) stays reachable for everyone. Otherwise the MTA's own resolution is trusted:
// with `{rcpt_mailer}` the recipient is remote when the mailer is in `remoteMailers`; without it,
// remote. A recipient whose domain cannot be read safely (no `@`, a source route, `%` or `!` in
// the local part) is not local by domain. Missing information always means remote: fail closed.
import { leaseKey, networkContains, tryParseAddress } from "../../shared/address.ts";
import type { ClientAddress, Network } from "../../shared/address.ts";
import type { LeaseView } from "../../shared/lease.ts";
import type { LeaseLookup } from "./mirror.ts";

/** When in the SMTP session the question is asked. */
export type Stage = "connect" | "rcpt";

/** What an unknown client gets for a remote recipient while the mirror is stale. */
export type FailMode = "tempfail" | "reject";

/** Whether a trusted or leased client is accepted for the whole session at CONNECT. */
export type AcceptAt = "connect" | "rcpt";

export interface RelayRequest {
  /**
   * The SMTP client's address as the MTA wrote it (any form shared/address.ts reads). Absent,
   * empty or unparsable (`unknown`, milter family U or L) means "no address": never leased.
   */
  readonly clientAddress?: string | undefined;
  /**
   * Defaults to "connect": a question about the client alone, as socketmap, whoson and
   * `relaylease check` ask it. Front doors that know the recipient pass "rcpt".
   */
  readonly stage?: Stage | undefined;
  /** Envelope recipient, with or without angle brackets. */
  readonly recipient?: string | undefined;
  /** The MTA's `{rcpt_mailer}` macro: the transport (Postfix) or mailer (Sendmail) it resolved. */
  readonly rcptMailer?: string | undefined;
  /** The SMTP AUTH identity (`{auth_authen}`, policy `sasl_username`); empty means none. */
  readonly authenticated?: string | undefined;
}

export interface DecisionConfig {
  /** Clients that may always relay: the MTA's own mynetworks. */
  readonly trustedNetworks: readonly Network[];
  /** Lowercase domains: "example.org" exactly, ".example.org" for its subdomains. */
  readonly localDomains: ReadonlySet<string>;
  /** Lowercase `{rcpt_mailer}` values that mean "delivered to another host". */
  readonly remoteMailers: ReadonlySet<string>;
  readonly failMode: FailMode;
  /** The caller's view of the mirror: true when it has not heard from NATS for too long. */
  readonly stale: boolean;
  readonly acceptAt: AcceptAt;
}

/** Postfix `smtp` (default_transport) plus Sendmail's `esmtp smtp smtp8 dsmtp relay` mailers. */
export const DEFAULT_REMOTE_MAILERS: readonly string[] = [
  "smtp",
  "esmtp",
  "smtp8",
  "dsmtp",
  "relay",
];

/** The fail-closed configuration: nothing trusted, nothing local, fresh mirror. */
export const DEFAULT_DECISION_CONFIG: DecisionConfig = Object.freeze({
  trustedNetworks: Object.freeze([]),
  localDomains: new Set<string>(),
  remoteMailers: new Set(DEFAULT_REMOTE_MAILERS),
  failMode: "tempfail",
  stale: false,
  acceptAt: "connect",
});

export type Verdict = "accept" | "continue" | "reject" | "tempfail";

export type Decision =
  | {
      readonly verdict: "accept" | "continue";
      readonly reason: "leased";
      readonly lease: LeaseView;
    }
  | { readonly verdict: "accept" | "continue"; readonly reason: "trusted" }
  | { readonly verdict: "accept"; readonly reason: "authenticated" }
  | {
      readonly verdict: "continue";
      readonly reason: "local-recipient" | "not-leased" | "no-address" | "stale";
    }
  | { readonly verdict: "reject"; readonly reason: "relay-denied" | "no-address" | "stale" }
  | { readonly verdict: "tempfail"; readonly reason: "stale" };

export type Reason = Decision["reason"];

/** Longest recipient read for its domain: RFC 5321 4.5.3.1.3 caps a path at 256 octets. */
const MAX_RECIPIENT_LENGTH = 512;

export function decide(
  leases: LeaseLookup,
  request: RelayRequest,
  now: number,
  config: DecisionConfig = DEFAULT_DECISION_CONFIG,
): Decision {
  const raw = request.clientAddress;
  const address = raw === undefined || raw === "" ? undefined : tryParseAddress(raw);
  const atConnect = request.stage !== "rcpt";
  const early = atConnect && config.acceptAt === "rcpt" ? "continue" : "accept";
  if (address !== undefined) {
    if (isTrusted(address, config.trustedNetworks)) return { verdict: early, reason: "trusted" };
    const lease = findLease(leases, address, now);
    if (lease !== undefined) return { verdict: early, reason: "leased", lease };
  }
  if (atConnect) {
    const reason = address === undefined ? "no-address" : config.stale ? "stale" : "not-leased";
    return { verdict: "continue", reason };
  }
  if (request.authenticated !== undefined && request.authenticated !== "") {
    return { verdict: "accept", reason: "authenticated" };
  }
  if (isLocalRecipient(request, config)) return { verdict: "continue", reason: "local-recipient" };
  if (address === undefined) return { verdict: "reject", reason: "no-address" };
  if (config.stale) return { verdict: config.failMode, reason: "stale" };
  return { verdict: "reject", reason: "relay-denied" };
}

function isTrusted(address: ClientAddress, networks: readonly Network[]): boolean {
  for (const net of networks) if (networkContains(net, address)) return true;
  return false;
}

function findLease(
  leases: LeaseLookup,
  address: ClientAddress,
  now: number,
): LeaseView | undefined {
  const lease = leases.lookup(leaseKey(address), now);
  if (lease !== undefined || address.family === 4) return lease;
  return leases.lookup(leaseKey(address, 64), now);
}

function isLocalRecipient(request: RelayRequest, config: DecisionConfig): boolean {
  const domain = recipientDomain(request.recipient);
  if (domain !== undefined && isLocalDomain(domain, config.localDomains)) return true;
  const mailer = request.rcptMailer;
  if (mailer === undefined || mailer === "") return false;
  return !config.remoteMailers.has(mailer.toLowerCase());
}

/** "a.b.example.org" is local if the set holds it, or ".b.example.org", or ".example.org"... */
export function isLocalDomain(domain: string, localDomains: ReadonlySet<string>): boolean {
  if (localDomains.size === 0) return false;
  if (localDomains.has(domain)) return true;
  for (let dot = domain.indexOf("."); dot >= 0; dot = domain.indexOf(".", dot + 1)) {
    if (localDomains.has(domain.slice(dot))) return true;
  }
  return false;
}

/**
 * The lowercase domain of an envelope recipient (`<a@Example.ORG.>` -> `example.org`), or
 * undefined when it cannot be read safely: empty, over MAX_RECIPIENT_LENGTH, no `@`, a source
 * route (`<@relay:a@b>`), or sender-specified routing in the local part (`a%b@c`, `b!a@c`, and a
 * quoted `"a@b"@c`), which an MTA may forward elsewhere than the domain says.
 */
export function recipientDomain(recipient: string | undefined): string | undefined {
  if (recipient === undefined || recipient.length > MAX_RECIPIENT_LENGTH) return undefined;
  let s = recipient;
  if (s.startsWith("<") && s.endsWith(">")) s = s.slice(1, -1);
  const at = s.lastIndexOf("@");
  if (at <= 0) return undefined;
  const local = s.slice(0, at);
  if (local.includes("@") || local.includes("%") || local.includes("!")) return undefined;
  let domain = s.slice(at + 1).toLowerCase();
  if (domain.endsWith(".")) domain = domain.slice(0, -1);
  return domain === "" ? undefined : domain;
}
