// The watcher's settings: the single source of truth for its env vars, flags and docs.
import type { Setting } from "../../shared/config.ts";
import { booleanSetting, integerSetting } from "../../shared/config.ts";
import { WATCHER_ID } from "../../shared/contract.ts";
import { parseListenAddress } from "../../shared/listen-address.ts";
import {
  leaseTtlSetting,
  natsSettings,
  processSettings,
  serviceTtlsSetting,
} from "../../shared/settings.ts";
import { parsePolicyCredentials } from "./dovecot-policy/credentials.ts";
import { SYSLOG_LISTEN_FORM, parseSyslogListen } from "./log/syslog.ts";

function optional(
  env: string,
  doc: string,
  form: string,
  check: (raw: string) => void = () => undefined,
): Setting<string | undefined> {
  return {
    env,
    doc,
    form,
    default: undefined,
    parse: (raw) => {
      check(raw);
      return raw;
    },
  };
}

const LISTEN_FORM = "host:port ([::1]:port for IPv6), or a unix socket path";
const listenCheck = (raw: string): void => {
  parseListenAddress(raw);
};

export const watcherSettings = {
  ...natsSettings,
  ...processSettings,
  watcherId: {
    env: "RELAYLEASE_WATCHER_ID",
    doc: "This watcher's id: the last token of the subject it publishes on (default: the host name).",
    default: undefined,
    form: "letters, digits, '-' and '_' (at most 64)",
    parse: (raw: string): string | undefined => {
      if (!WATCHER_ID.test(raw)) throw new Error("not a single subject token");
      return raw;
    },
  } satisfies Setting<string | undefined>,
  outboxDir: {
    env: "RELAYLEASE_OUTBOX_DIR",
    doc: "Directory of the durable outbox where logins wait until NATS has them (a volume that outlives the container), and of the log position file.",
    default: "/var/lib/relaylease/outbox",
    form: "a directory path",
    parse: (raw: string): string => raw,
  } satisfies Setting<string>,
  outboxMaxEvents: integerSetting(
    "RELAYLEASE_OUTBOX_MAX_EVENTS",
    "Logins that may wait in the outbox; past it new logins are refused (HTTP 503), logged and counted, and nothing stored is dropped.",
    "1000000",
    1,
    100_000_000,
  ),
  leaseTtl: leaseTtlSetting,
  serviceTtls: serviceTtlsSetting,
  httpListen: optional(
    "RELAYLEASE_HTTP_LISTEN",
    "Where the HTTP login API (POST /v1/logins) listens; unset, none.",
    LISTEN_FORM,
    listenCheck,
  ),
  httpToken: optional(
    "RELAYLEASE_HTTP_TOKEN",
    "Bearer token the HTTP login API requires (Authorization: Bearer <token>); unset, none.",
    "a token of 16 or more printable characters",
    (raw) => {
      if (!/^[\x21-\x7e]{16,}$/.test(raw)) throw new Error("too short or not printable");
    },
  ),
  dovecotPolicyListen: optional(
    "RELAYLEASE_DOVECOT_POLICY_LISTEN",
    "Where the Dovecot auth-policy source listens (Dovecot's auth_policy_server_url); unset, none.",
    LISTEN_FORM,
    listenCheck,
  ),
  dovecotPolicyApiHeader: optional(
    "RELAYLEASE_DOVECOT_POLICY_API_HEADER",
    "The header Dovecot sends (its auth_policy_server_api_header), which requests must carry.",
    '"Header-Name: value", or a bare value sent as X-API-Key',
    (raw) => {
      parsePolicyCredentials(raw, undefined);
    },
  ),
  dovecotPolicyBasicAuth: optional(
    "RELAYLEASE_DOVECOT_POLICY_BASIC_AUTH",
    "user:password of the Basic auth in Dovecot's policy URL, which requests must carry.",
    '"user:password"',
    (raw) => {
      parsePolicyCredentials(undefined, raw);
    },
  ),
  dovecotLog: optional(
    "RELAYLEASE_DOVECOT_LOG",
    "A mail log file to follow for logins (Dovecot, Courier, Cyrus, UW-IMAP, qpopper lines), across rotation; unset, none.",
    "a file path",
  ),
  syslogListen: optional(
    "RELAYLEASE_SYSLOG_LISTEN",
    "Where to receive syslog datagrams (RFC 3164 or 5424) with login lines; unset, none.",
    SYSLOG_LISTEN_FORM,
    (raw) => {
      parseSyslogListen(raw);
    },
  ),
  dracListen: optional(
    "RELAYLEASE_DRAC_LISTEN",
    "Where the DRAC ONC-RPC source listens, UDP and TCP (POP/IMAP servers patched with dracauth()); unset, none.",
    "host:port",
    listenCheck,
  ),
  dracAllow: {
    env: "RELAYLEASE_DRAC_ALLOW",
    doc: "The dracd.allow file: which callers may report logins (netmask netaddr lines, CIDR, IPv6). Missing: loopback only.",
    default: "/etc/mail/dracd.allow",
    form: "a file path",
    parse: (raw: string): string => raw,
  } satisfies Setting<string>,
  dracRpcbind: booleanSetting(
    "RELAYLEASE_DRAC_RPCBIND",
    "Register the DRAC program with the host's running rpcbind (instead of, or besides, RELAYLEASE_PORTMAP_LISTEN).",
    "false",
  ),
  portmapListen: optional(
    "RELAYLEASE_PORTMAP_LISTEN",
    "Where to answer portmapper (and rpcbind) lookups for the DRAC program, for dracauth() clients in a pod without rpcbind (normally 127.0.0.1:111); unset, none.",
    "host:port",
    listenCheck,
  ),
};
