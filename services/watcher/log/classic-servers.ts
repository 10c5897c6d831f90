/**
 * The other POP/IMAP servers whose log lines the classic log-tailing daemons (pop-before-smtp)
 * recognised: UW imapd/ipop3d, Courier, Cyrus and qpopper (login-sources.md §4.2-§4.5). Each
 * parser gets the message after the tag (the dispatcher in parse.ts has already checked the
 * program name) and answers a record or undefined. Pure, no regular expressions: prefix tests
 * and indexOf only, so the work is linear in the line's length. Addresses may be IPv4, IPv6 or
 * `::ffff:` mapped (which becomes IPv4); anything tryParseAddress refuses refuses the line.
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

const SP = 0x20;
const LBRACKET = 0x5b;

function startsWithAny(s: string, p: number, words: readonly string[]): string | undefined {
  for (const word of words) if (s.startsWith(word, p)) return word;
  return undefined;
}

/** `[ip]` at s[lb] ending the line or followed by a space: the canonical address, or undefined. */
function bracketedAddress(s: string, lb: number): string | undefined {
  if (s.charCodeAt(lb) !== LBRACKET) return undefined;
  const rb = s.indexOf("]", lb);
  if (rb < 0 || (rb + 1 < s.length && s.charCodeAt(rb + 1) !== SP)) return undefined;
  return address(s, lb + 1, rb);
}

const UW_LOGINS = ["Login user=", "Authenticated user=", "Auth user=", "APOP user="];
const UW_LOGOUTS = ["Logout user=", "Autologout user="];
const UW_ENDS = ["Killed", "Command stream end of file"];

/**
 * UW imapd/ipop3d (`imapd[123]:`, `ipop3d[123]:`; `imapsd`, `ipop3sd`):
 *   `Login user=alice host=client.example.com [203.0.113.5] nmsgs=3/3`
 *   `Authenticated user=alice host=[203.0.113.5] mech=PLAIN`   (also `Auth`, `APOP`)
 * optionally after `Admin ` or a `[...]` group. Logouts: `Logout`, `Autologout`, `Killed (...)`,
 * `Command stream end of file...`, each with `user=... host=... [ip]`. The user runs up to the
 * last ` host=` (UW writes it unescaped); `Login failed user=` and the like do not match.
 */
export function parseUw(s: string, p: number, service: LoginService): LogRecord | undefined {
  if (s.charCodeAt(p) === LBRACKET) {
    const rb = s.indexOf("]", p);
    if (rb < 0) return undefined;
    p = s.charCodeAt(rb + 1) === SP ? rb + 2 : rb + 1;
  }
  if (s.startsWith("Admin ", p)) p += 6;
  let userStart: number;
  let verb = startsWithAny(s, p, UW_LOGINS);
  const isLogin = verb !== undefined;
  verb ??= startsWithAny(s, p, UW_LOGOUTS);
  if (verb !== undefined) {
    userStart = p + verb.length;
  } else if (startsWithAny(s, p, UW_ENDS) !== undefined) {
    userStart = s.indexOf(" user=", p) + 6;
    if (userStart < 6) return undefined;
  } else {
    return undefined;
  }
  const host = s.lastIndexOf(" host=");
  if (host < userStart) return undefined;
  let lb = host + 6;
  if (s.charCodeAt(lb) !== LBRACKET) {
    lb = s.indexOf(" ", lb) + 1; // `name [ip]`
    if (lb === 0) return undefined;
  }
  const ip = bracketedAddress(s, lb);
  if (ip === undefined) return undefined;
  const user = userName(s, userStart, host);
  return isLogin ? login(ip, user, service, "uw-imap") : logout(ip, user, service);
}

const COURIER_LOGOUTS = ["LOGOUT, user=", "TIMEOUT, user=", "DISCONNECTED, user="];

/**
 * Courier (`imapd:`, `pop3d-ssl:`, `imaplogin:`, `couriertcpd:` ...; courierlogger logs no pid):
 *   `LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[51234], protocol=IMAP` (`, stls=1` may
 *   follow). The service comes from `protocol=` (IMAP or POP3), else from the program name.
 * Logouts: `LOGOUT`, `TIMEOUT`, `DISCONNECTED` with `user=..., ip=[...]`. `LOGIN FAILED, ...`
 * does not match. The user runs up to the last `, ip=[`.
 */
export function parseCourier(
  s: string,
  p: number,
  programService: LoginService | undefined,
): LogRecord | undefined {
  let userStart = p + 12;
  const isLogin = s.startsWith("LOGIN, user=", p);
  if (!isLogin) {
    const verb = startsWithAny(s, p, COURIER_LOGOUTS);
    if (verb === undefined) return undefined;
    userStart = p + verb.length;
  }
  const at = s.lastIndexOf(", ip=[");
  if (at < userStart) return undefined;
  const rb = s.indexOf("]", at + 6);
  if (rb < 0) return undefined;
  const ip = address(s, at + 6, rb);
  if (ip === undefined) return undefined;
  const user = userName(s, userStart, at);
  const service = courierProtocol(s, rb) ?? programService;
  if (!isLogin) return logout(ip, user, service);
  return service === undefined ? undefined : login(ip, user, service, "courier");
}

function courierProtocol(s: string, from: number): LoginService | undefined {
  const at = s.indexOf(", protocol=", from);
  if (at < 0) return undefined;
  const v = at + 11;
  const end = s.indexOf(",", v);
  const len = (end < 0 ? s.length : end) - v;
  if (len === 4 && s.startsWith("IMAP", v)) return "imap";
  if (len === 4 && s.startsWith("POP3", v)) return "pop3";
  return undefined;
}

/**
 * Cyrus (`imap[4242]:`, `pop3d[..]:`, `cyrus/imap[..]:`, ...):
 *   `login: client.example.com [::ffff:203.0.113.5] alice plaintext User logged in`
 *   (Cyrus 2.3+ appends ` SESSIONID=<...>`). The host may be missing (`login: [1.2.3.4] ...`);
 *   a user and a mechanism must follow the address. `badlogin:` does not match.
 */
export function parseCyrus(s: string, p: number, service: LoginService): LogRecord | undefined {
  if (!s.startsWith("login: ", p)) return undefined;
  let lb = p + 7;
  if (s.charCodeAt(lb) !== LBRACKET) {
    lb = s.indexOf(" ", lb) + 1;
    if (lb === 0) return undefined;
    while (s.charCodeAt(lb) === SP) lb++;
    if (s.charCodeAt(lb) !== LBRACKET) return undefined;
  }
  const rb = s.indexOf("] ", lb);
  if (rb < 0) return undefined;
  const ip = address(s, lb + 1, rb);
  const userStart = rb + 2;
  const userEnd = s.indexOf(" ", userStart);
  if (ip === undefined || userEnd <= userStart) return undefined;
  const mech = s.charCodeAt(userEnd + 1);
  if (Number.isNaN(mech) || mech === SP) return undefined;
  let session: string | undefined;
  const sid = s.indexOf(" SESSIONID=<", userEnd);
  if (sid >= 0) {
    const gt = s.indexOf(">", sid + 12);
    if (gt > 0) session = sessionId(s, sid + 12, gt);
  }
  return login(ip, userName(s, userStart, userEnd), service, "cyrus", session);
}

/**
 * qpopper (`popper[123]:`, `qpopper[..]:`, `in.qpopper[..]:`, own log `[popper]`):
 *   `(v4.0.5) POP login by user "alice" at (client.example.com) 203.0.113.5`
 *   `Stats: alice 0 0 0 0 [host ]203.0.113.5`   (older; logged at the end of the session)
 * The quoted user runs up to the last `" at (`.
 */
export function parseQpopper(s: string, p: number): LogRecord | undefined {
  if (s.startsWith("Stats: ", p)) return qpopperStats(s, p + 7);
  if (s.charCodeAt(p) !== 0x28) return undefined;
  const close = s.indexOf(") ", p);
  if (close < 0 || !s.startsWith('POP login by user "', close + 2)) return undefined;
  const userStart = close + 21;
  const at = s.lastIndexOf('" at (');
  if (at < userStart) return undefined;
  const hostEnd = s.indexOf(") ", at + 6);
  if (hostEnd < 0) return undefined;
  const ipStart = hostEnd + 2;
  const sp = s.indexOf(" ", ipStart);
  const ip = address(s, ipStart, sp < 0 ? s.length : sp);
  return ip === undefined ? undefined : login(ip, userName(s, userStart, at), "pop3", "qpopper");
}

// Token boundaries of a Stats line: user, four counters, optional host, address.
const bounds = new Int32Array(14);

function qpopperStats(s: string, p: number): LogRecord | undefined {
  let n = 0;
  for (let start = p; ; n++) {
    if (n === 7) return undefined; // more tokens than the form has
    const sp = s.indexOf(" ", start);
    const end = sp < 0 ? s.length : sp;
    if (end === start) return undefined;
    bounds[2 * n] = start;
    bounds[2 * n + 1] = end;
    if (sp < 0) break;
    start = sp + 1;
  }
  n++;
  if (n < 6) return undefined;
  for (let t = 1; t <= 4; t++) {
    if (!isNumber(s, bounds[2 * t] ?? 0, bounds[2 * t + 1] ?? 0)) return undefined;
  }
  const ip = address(s, bounds[2 * n - 2] ?? 0, bounds[2 * n - 1] ?? 0);
  if (ip === undefined) return undefined;
  return login(ip, userName(s, bounds[0] ?? 0, bounds[1] ?? 0), "pop3", "qpopper");
}

function isNumber(s: string, start: number, end: number): boolean {
  if (end <= start || end - start > 15) return false;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}
