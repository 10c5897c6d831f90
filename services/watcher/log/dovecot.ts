/**
 * Dovecot log lines (login-sources.md §4.1, §4.7). Pure, no regular expressions: every step is a
 * prefix test or an indexOf, so the work per line is linear in its length.
 *
 * Logins, from the login process (`imap-login`, `pop3-login`; other `*-login` services such as
 * submission and managesieve are not POP/IMAP and are ignored):
 *   `imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=12345,
 *    TLS, session=<RkamOl1hNJh/AAAB>`            (syslog, program `dovecot`)
 *   `imap-login: Info: Login: user=<alice>, ...`  (Dovecot's own log_path, tag `imap-login`)
 *   `imap-login: Login: alice [1.2.3.4]`          (Dovecot 1.0)
 * The message must start with `Login: ` (after an optional `Info: `): this is what keeps out
 * `Disconnected: Aborted login (auth failed, ...): user=<bob>, method=..., rip=...` and
 * `proxy(alice): Started proxying to ...`. After it come comma-separated elements in any order
 * (login_log_format_elements is configurable): `key=value`, `key=<value>` (the value may hold
 * commas; it ends at a `>` followed by `,` or the end), or a bare word (`TLS`, `secured`).
 * Used: `rip` (required; IPv4, bare IPv6, `::ffff:` mapped), `user`, `session`. A line naming
 * `user`, `rip` or `session` twice is refused: with a username that holds `>, rip=` (possible
 * only if auth_username_chars was widened) a forged element could otherwise win.
 *
 * Session ends, from the mail process (mail_log_prefix `%s(%u)<%{pid}><%{session}>: `, or
 * `%s(%u): ` before 2.3):
 *   `imap(alice)<12345><RkamOl1hNJh/AAAB>: Disconnected: Logged out in=12 out=345`  (syslog)
 *   `imap(alice)<12345><RkamOl1hNJh/AAAB>: Info: Disconnected: ...`           (log_path)
 * A message starting `Disconnected`, `Logged out`, `Connection closed`, `Server shutting down`
 * or `Killed with signal` is a logout with user, service and session (no address: the mail
 * process does not log it).
 */
import {
  address,
  login,
  logout,
  sessionId,
  userName,
  type LogRecord,
  type LoginService,
} from "./record.ts";

const COMMA = 0x2c;
const SP = 0x20;
const LT = 0x3c;
const EQ = 0x3d;

/** Program `dovecot` (syslog): the message at s[p] names the process first. */
export function parseDovecotSyslog(s: string, p: number): LogRecord | undefined {
  const c = s.charCodeAt(p);
  if (c !== 0x69 && c !== 0x70) return undefined; // neither `imap...` nor `pop3...`
  if (s.startsWith("imap-login: ", p)) return parseDovecotLogin(s, p + 12, "imap");
  if (s.startsWith("pop3-login: ", p)) return parseDovecotLogin(s, p + 12, "pop3");
  const service = mailService(s, p);
  if (service === undefined) return undefined;
  const q = mailPrefix(s, p + 5, s.length);
  if (q < 0 || s.charCodeAt(q) !== 0x3a || s.charCodeAt(q + 1) !== SP) return undefined;
  return sessionEnd(s, q + 2, service);
}

/** Tag `imap(alice)<pid><session>` (Dovecot's log_path); the message is at s[p]. */
export function parseDovecotMailTag(tag: string, s: string, p: number): LogRecord | undefined {
  const service = mailService(tag, 0);
  if (service === undefined || mailPrefix(tag, 5, tag.length) !== tag.length) return undefined;
  return sessionEnd(s, p, service, tag);
}

/** `Login: ...` at s[p] (after `imap-login: ` or as the message of tag `imap-login`). */
export function parseDovecotLogin(
  s: string,
  p: number,
  service: LoginService,
): LogRecord | undefined {
  if (s.startsWith("Info: ", p)) p += 6;
  if (!s.startsWith("Login: ", p)) return undefined;
  p += 7;
  return s.indexOf("=", p) < 0 ? oldLogin(s, p, service) : elementsLogin(s, p, service);
}

function mailService(s: string, p: number): LoginService | undefined {
  if (s.startsWith("imap(", p)) return "imap";
  if (s.startsWith("pop3(", p)) return "pop3";
  return undefined;
}

// The parts of the last mail-process prefix read; parsing is synchronous, so sharing is safe.
const prefix = { userStart: 0, userEnd: 0, sessionStart: 0, sessionEnd: 0 };

/**
 * `alice)<pid><session>` from s[p] (just after `imap(`): fills `prefix`, returns the index after
 * it, or -1. One `<...>` group is a pid when it is all digits, else a session id.
 */
function mailPrefix(s: string, p: number, end: number): number {
  const close = s.indexOf(")", p);
  if (close < 0 || close >= end) return -1;
  prefix.userStart = p;
  prefix.userEnd = close;
  prefix.sessionStart = prefix.sessionEnd = 0;
  let q = close + 1;
  for (let groups = 0; q < end && s.charCodeAt(q) === LT; groups++) {
    const gt = s.indexOf(">", q);
    if (gt < 0 || gt >= end || groups === 2) return -1;
    if (groups === 1 || !allDigits(s, q + 1, gt)) {
      prefix.sessionStart = q + 1;
      prefix.sessionEnd = gt;
    }
    q = gt + 1;
  }
  return q;
}

function allDigits(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return end > start;
}

const SESSION_ENDS = [
  "Disconnected",
  "Logged out",
  "Connection closed",
  "Server shutting down",
  "Killed with signal",
];

/** The mail-process message at s[p]; `prefix` describes its prefix, read from `from`. */
function sessionEnd(
  s: string,
  p: number,
  service: LoginService,
  from: string = s,
): LogRecord | undefined {
  if (s.startsWith("Info: ", p)) p += 6;
  if (!startsWithAny(s, p, SESSION_ENDS)) return undefined;
  const user = userName(from, prefix.userStart, prefix.userEnd);
  const session = sessionId(from, prefix.sessionStart, prefix.sessionEnd);
  return logout(undefined, user, service, session);
}

function startsWithAny(s: string, p: number, words: readonly string[]): boolean {
  for (const word of words) if (s.startsWith(word, p)) return true;
  return false;
}

/** Dovecot 1.0: `Login: alice [1.2.3.4]`. */
function oldLogin(s: string, p: number, service: LoginService): LogRecord | undefined {
  const end = s.length;
  const lb = s.lastIndexOf(" [");
  if (lb < p || s.charCodeAt(end - 1) !== 0x5d) return undefined;
  const ip = address(s, lb + 2, end - 1);
  return ip === undefined ? undefined : login(ip, userName(s, p, lb), service, "dovecot");
}

// The elements found by the last elementsLogin; -1 when absent.
const found = { ripStart: -1, ripEnd: -1, userStart: -1, userEnd: -1, sesStart: -1, sesEnd: -1 };

/** `key=value, key=<value>, word, ...` from s[p] to the end of the line. */
function elementsLogin(s: string, p: number, service: LoginService): LogRecord | undefined {
  found.ripStart = found.userStart = found.sesStart = -1;
  const end = s.length;
  while (p < end) {
    let next: number;
    const eq = keyEnd(s, p, end);
    if (eq < 0) {
      const comma = s.indexOf(",", p); // a bare element: `TLS`, `secured`
      next = comma < 0 ? end : comma;
    } else {
      next = element(s, p, eq, end);
      if (next < 0) return undefined;
    }
    if (next >= end) break;
    if (s.charCodeAt(next) !== COMMA) return undefined;
    p = next + 1;
    while (s.charCodeAt(p) === SP) p++;
  }
  if (found.ripStart < 0) return undefined;
  const ip = address(s, found.ripStart, found.ripEnd);
  if (ip === undefined) return undefined;
  const user = found.userStart < 0 ? undefined : userName(s, found.userStart, found.userEnd);
  const session = found.sesStart < 0 ? undefined : sessionId(s, found.sesStart, found.sesEnd);
  return login(ip, user, service, "dovecot", session);
}

/** Index of the `=` ending a key (`[a-z_]+`) at s[p], or -1 if this is not `key=`. */
function keyEnd(s: string, p: number, end: number): number {
  let q = p;
  for (; q < end; q++) {
    const c = s.charCodeAt(q);
    if (!((c >= 0x61 && c <= 0x7a) || c === 0x5f)) break;
  }
  return q > p && s.charCodeAt(q) === EQ ? q : -1;
}

/** Reads the element whose key is s[p, eq); returns the index after its value, or -1. */
function element(s: string, p: number, eq: number, end: number): number {
  let start = eq + 1;
  let stop: number;
  let next: number;
  if (s.charCodeAt(start) === LT) {
    start++;
    stop = closingBracket(s, start, end);
    if (stop < 0) return -1;
    next = stop + 1;
  } else {
    const comma = s.indexOf(",", start);
    stop = next = comma < 0 ? end : comma;
  }
  const len = eq - p;
  if (len === 3 && s.startsWith("rip", p)) {
    if (found.ripStart >= 0) return -1;
    found.ripStart = start;
    found.ripEnd = stop;
  } else if (len === 4 && s.startsWith("user", p)) {
    if (found.userStart >= 0) return -1;
    found.userStart = start;
    found.userEnd = stop;
  } else if (len === 7 && s.startsWith("session", p)) {
    if (found.sesStart >= 0) return -1;
    found.sesStart = start;
    found.sesEnd = stop;
  }
  return next;
}

/** The `>` closing a `<value>` that starts at s[start]: one followed by `,` or the end. */
function closingBracket(s: string, start: number, end: number): number {
  let gt = s.indexOf(">", start);
  while (gt >= 0 && gt + 1 < end && s.charCodeAt(gt + 1) !== COMMA) gt = s.indexOf(">", gt + 1);
  return gt < 0 || gt >= end ? -1 : gt;
}
