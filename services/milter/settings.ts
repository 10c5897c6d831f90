// The milter role's settings: the single source of truth for its env vars, flags and docs.
import { parseNetworkList, type Network } from "../../shared/address.ts";
import {
  durationSetting,
  enumSetting,
  integerSetting,
  type ConfigOf,
  type Setting,
} from "../../shared/config.ts";
import { parseListenAddress } from "../../shared/listen-address.ts";
import { listenSetting, natsSettings, processSettings } from "../../shared/settings.ts";
import { DEFAULT_REMOTE_MAILERS } from "./decide.ts";
import type { AcceptAt, DecisionConfig, FailMode } from "./decide.ts";

const LIST_SEPARATOR = /[\s,]+/;

function items(raw: string): string[] {
  return raw.split(LIST_SEPARATOR).filter((item) => item !== "");
}

// A DNS name in A-label form: labels of letters, digits and inner hyphens (underscores too, as
// some sites use them), at most 253 characters; a leading dot means "its subdomains".
const DOMAIN =
  /^\.?(?:[a-z0-9_](?:[-a-z0-9_]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;

export function parseLocalDomains(raw: string): ReadonlySet<string> {
  const out = new Set<string>();
  for (const item of items(raw)) {
    let domain = item.toLowerCase();
    if (domain.length > 1 && domain.endsWith(".")) domain = domain.slice(0, -1);
    if (domain.length > 254 || !DOMAIN.test(domain)) {
      throw new Error(`${JSON.stringify(item)} is not a domain name (IDNs in xn-- form)`);
    }
    out.add(domain);
  }
  return out;
}

const MAILER = /^[a-z0-9][-a-z0-9_.]{0,63}$/;

export function parseRemoteMailers(raw: string): ReadonlySet<string> {
  const out = new Set<string>();
  for (const item of items(raw)) {
    const mailer = item.toLowerCase();
    if (!MAILER.test(mailer)) throw new Error(`${JSON.stringify(item)} is not a mailer name`);
    out.add(mailer);
  }
  // No remote mailer would make every recipient with a {rcpt_mailer} local: an open relay.
  if (out.size === 0) throw new Error("at least one mailer is needed");
  return out;
}

const REPLY_CODE_PREFIX = /^[245]\d\d[ -]/;

export function parseRejectText(raw: string): string {
  const text = raw.trim();
  if (!/^[\x20-\x7e]{1,200}$/.test(text)) {
    throw new Error("not 1 to 200 printable ASCII characters");
  }
  if (REPLY_CODE_PREFIX.test(text)) throw new Error("give the text only; 550 5.7.1 is added");
  return text;
}

function optionalListen(env: string, doc: string): Setting<string | undefined> {
  return {
    env,
    doc,
    default: undefined,
    form: "host:port ([::1]:port for IPv6), or a unix socket path",
    parse: (raw: string): string | undefined => {
      parseListenAddress(raw);
      return raw;
    },
  };
}

export const milterSettings = {
  ...natsSettings,
  ...processSettings,
  policyListen: listenSetting(
    "RELAYLEASE_POLICY_LISTEN",
    "Where the Postfix policy service listens (check_policy_service inet:host:port or unix:path).",
    "127.0.0.1:10040",
  ),
  milterListen: optionalListen(
    "RELAYLEASE_MILTER_LISTEN",
    "Where the milter (Sendmail X line S=inet:port@host, Postfix smtpd_milters inet:host:port or unix:path) listens; unset, no milter.",
  ),
  socketmapListen: optionalListen(
    "RELAYLEASE_SOCKETMAP_LISTEN",
    "Where the socketmap service listens (Postfix socketmap:inet:host:port:name, Sendmail K name socket inet:port@host); unset, none.",
  ),
  whosonListen: optionalListen(
    "RELAYLEASE_WHOSON_LISTEN",
    "Where the whoson service listens, TCP and UDP on one port (Exim's whoson lookup); unset, none.",
  ),
  whosonAllow: {
    env: "RELAYLEASE_WHOSON_ALLOW",
    doc: "Peers that may ask whoson who is behind an address; empty: any peer that can reach it.",
    default: "",
    form: "networks in CIDR form separated by commas or spaces",
    parse: (raw: string): Network[] => parseNetworkList(raw),
  } satisfies Setting<Network[]>,
  mirrorMax: integerSetting(
    "RELAYLEASE_MIRROR_MAX",
    "The most leases the mirror holds; past it, new leases are refused loudly (they do not relay).",
    "1000000",
    1,
    100_000_000,
  ),
  trustedNetworks: {
    env: "RELAYLEASE_TRUSTED_NETWORKS",
    doc: "Clients that may always relay, as the MTA's mynetworks; the milter must know them because it sees their recipients too. Empty: none, not even loopback.",
    default: "",
    form: "networks in CIDR form separated by commas or spaces (e.g. 127.0.0.0/8, [::1]/128)",
    parse: (raw: string): Network[] => parseNetworkList(raw),
  } satisfies Setting<Network[]>,
  localDomains: {
    env: "RELAYLEASE_LOCAL_DOMAINS",
    doc: "Recipient domains anyone may send to (no relay permission needed), whatever {rcpt_mailer} says; 'example.org' matches exactly, '.example.org' its subdomains. Without {rcpt_mailer} a domain not listed is remote.",
    default: "",
    form: "domain names separated by commas or spaces, a leading dot for subdomains (e.g. example.org, .example.org)",
    parse: parseLocalDomains,
  } satisfies Setting<ReadonlySet<string>>,
  remoteMailers: {
    env: "RELAYLEASE_REMOTE_MAILERS",
    doc: "{rcpt_mailer} values that mean delivery to another host: Postfix transports and Sendmail mailers. Add any transport_maps transport that relays.",
    default: DEFAULT_REMOTE_MAILERS.join(" "),
    form: "one or more mailer names separated by commas or spaces",
    parse: parseRemoteMailers,
  } satisfies Setting<ReadonlySet<string>>,
  failMode: enumSetting<FailMode>(
    "RELAYLEASE_FAIL_MODE",
    "What an unknown client gets for a remote recipient while the lease mirror is stale: tempfail (451 4.7.1, the client retries) or reject (as if it held no lease). Known leases still count.",
    "tempfail",
    ["tempfail", "reject"],
  ),
  staleAfter: durationSetting(
    "RELAYLEASE_STALE_AFTER",
    "How long the lease mirror may go without hearing from NATS before it counts as stale.",
    "60s",
    1000,
  ),
  acceptAt: enumSetting<AcceptAt>(
    "RELAYLEASE_ACCEPT_AT",
    "Milter: accept a trusted or leased client for its whole SMTP session at connect (one round trip), or decide per recipient (a lease that runs out mid-session stops counting).",
    "connect",
    ["connect", "rcpt"],
  ),
  rejectText: {
    env: "RELAYLEASE_REJECT_TEXT",
    doc: "Milter: the text of the 550 5.7.1 reply to a recipient that would be relayed without permission.",
    default: "Relaying denied: check your mail (POP3/IMAP) or log in (SMTP AUTH) first",
    form: "1 to 200 printable ASCII characters, without the reply code",
    parse: parseRejectText,
  } satisfies Setting<string>,
};

export type MilterSettings = ConfigOf<typeof milterSettings>;

/** The decision's configuration from the role's settings; `stale` comes from the mirror. */
export function decisionConfigOf(config: MilterSettings, stale: boolean): DecisionConfig {
  return {
    trustedNetworks: config.trustedNetworks,
    localDomains: config.localDomains,
    remoteMailers: config.remoteMailers,
    failMode: config.failMode,
    acceptAt: config.acceptAt,
    stale,
  };
}
