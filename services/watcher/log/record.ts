/**
 * What the log login source produces: one typed record per interesting line, from a log file
 * (follow.ts) or a syslog datagram (syslog.ts). Logins start leases; logouts end the sessions
 * that keep leases alive (sessions.ts), never start one.
 */
import { tryParseAddress } from "../../../shared/address.ts";

export type LoginService = "pop3" | "imap";
export type LoginServer = "dovecot" | "courier" | "cyrus" | "uw-imap" | "qpopper";

export interface LoginRecord {
  kind: "login";
  /** Canonical address text (shared/address.ts): IPv4-mapped IPv6 is IPv4. */
  ip: string;
  user?: string;
  service: LoginService;
  server: LoginServer;
  /** The server's session id, when its lines carry one (Dovecot, Cyrus SESSIONID). */
  session?: string;
  /** Epoch ms from the line's own timestamp, if it has one. */
  at?: number;
}

export interface LogoutRecord {
  kind: "logout";
  ip?: string;
  user?: string;
  service?: string;
  session?: string;
  at?: number;
}

export type LogRecord = LoginRecord | LogoutRecord;

/** The user name field of a login event (shared/schema.ts USER_NAME): 1-256, no controls. */
const MAX_USER_CHARS = 256;
/** Dovecot's are 16 or 32 characters, Cyrus's about 40; anything longer is not an id. */
const MAX_SESSION_CHARS = 128;

/** s[start, end) if 1..max characters without a control character, else undefined. */
function field(s: string, start: number, end: number, max: number): string | undefined {
  if (end <= start || end - start > max) return undefined;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return undefined;
  }
  return own(s.slice(start, end));
}

/**
 * A copy of `s` that holds no reference to the string it was sliced from. V8 makes a slice of 13
 * characters or more a view of its parent, here a whole 64 KiB chunk of the log (lines.ts); a
 * session tracker holding a record's user or session for hours would keep every such chunk
 * alive. Concatenating, then slicing, makes V8 flatten the pair into a new string of its own.
 */
function own(s: string): string {
  return ` ${s}`.slice(1);
}

/** s[start, end) as a user name, or undefined if empty, too long or holding a control char. */
export function userName(s: string, start: number, end: number): string | undefined {
  return field(s, start, end, MAX_USER_CHARS);
}

/** s[start, end) as a session id, or undefined if empty, too long or holding a control char. */
export function sessionId(s: string, start: number, end: number): string | undefined {
  return field(s, start, end, MAX_SESSION_CHARS);
}

/** Canonical text of the address s[start, end), or undefined. */
export function address(s: string, start: number, end: number): string | undefined {
  if (end <= start) return undefined;
  return tryParseAddress(s.slice(start, end))?.text;
}

/** A login record without undefined-valued keys (records compare and serialise cleanly). */
export function login(
  ip: string,
  user: string | undefined,
  service: LoginService,
  server: LoginServer,
  session?: string,
): LoginRecord {
  const r: LoginRecord = { kind: "login", ip, service, server };
  if (user !== undefined) r.user = user;
  if (session !== undefined) r.session = session;
  return r;
}

/** A logout record without undefined-valued keys. */
export function logout(
  ip: string | undefined,
  user: string | undefined,
  service: string | undefined,
  session?: string,
): LogoutRecord {
  const r: LogoutRecord = { kind: "logout" };
  if (ip !== undefined) r.ip = ip;
  if (user !== undefined) r.user = user;
  if (service !== undefined) r.service = service;
  if (session !== undefined) r.session = session;
  return r;
}
