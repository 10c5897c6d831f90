/**
 * Log line login parser: one line of a mail log in, a login or logout record out, or undefined
 * for everything else (login-sources.md §4-§5, §4.7). Pure; it never throws on any string.
 *
 * It sits on the hot path (every line of a busy mail log), so it rejects the ~95% of lines that
 * are not logins cheaply and with no regular expression at all: it scans the line's prefix
 * (timestamp, host, tag; header.ts), compares the program name in place with the few known
 * names of its length, and only for a known POP/IMAP program tests the message's fixed prefix
 * (`imap-login: `, `LOGIN, `, `login: `, ...) before reading fields with indexOf. A Postfix line
 * costs the prefix scan and a table miss; nothing is allocated for it. The line's timestamp is
 * parsed only for lines that produced a record.
 *
 * Programs recognised (tag without `[pid]`), and the parser each selects:
 *   dovecot                                     Dovecot via syslog (dovecot.ts)
 *   imap-login, pop3-login, imap(...), pop3(...) Dovecot's own log_path (dovecot.ts)
 *   ipop3d ipop3sd imapd imapsd                 UW (classic-servers.ts)
 *   [courier]{imap,pop3}{d,d-ssl,login}, couriertcpd   Courier
 *   [cyrus/]{imap,pop3}[d|s]                    Cyrus
 *   popper qpopper in.qpopper                   qpopper
 * `imapd` and `pop3d` are shared names: each family's message prefix decides.
 * Limits: a line longer than MAX_LINE_CHARS is not looked at (the follower already drops
 * longer ones); a user name longer than 256 characters or holding a control character is left
 * out of the record, which is still produced.
 *
 * Trust: a log line says only what its writer wrote. Anyone who can write to the log (any local
 * user through syslog(3) or logger(1)) can forge a login; prefer the auth-policy source where it
 * is available, and keep the log's writers to the mail server.
 */
import { parseCourier, parseCyrus, parseQpopper, parseUw } from "./classic-servers.ts";
import { parseDovecotLogin, parseDovecotMailTag, parseDovecotSyslog } from "./dovecot.ts";
import { newHeader, scanHeader, type TagFilter } from "./header.ts";
import type { LogRecord, LoginService } from "./record.ts";
import { parseTimestamp, type TimestampKind } from "./timestamp.ts";

export type { LogRecord, LoginRecord, LogoutRecord, LoginServer, LoginService } from "./record.ts";

/** Longer lines are not parsed: no login line comes near this. */
export const MAX_LINE_CHARS = 8192;

const DOVECOT = 1;
const DOVECOT_LOGIN = 2;
const UW = 4;
const COURIER = 8;
const CYRUS = 16;
const QPOPPER = 32;

interface Program {
  readonly name: string;
  readonly families: number;
  readonly service: LoginService | undefined;
}

/** Known programs by name length: a lookup compares a few names in place, slicing nothing. */
function programTable(): Program[][] {
  const byName = new Map<string, Program>();
  const add = (name: string, families: number, service?: LoginService) => {
    const had = byName.get(name);
    byName.set(name, { name, families: (had?.families ?? 0) | families, service });
  };
  add("dovecot", DOVECOT);
  add("imap-login", DOVECOT_LOGIN, "imap");
  add("pop3-login", DOVECOT_LOGIN, "pop3");
  for (const name of ["ipop3d", "ipop3sd"]) add(name, UW, "pop3");
  for (const name of ["imapd", "imapsd"]) add(name, UW, "imap");
  for (const service of ["imap", "pop3"] as const) {
    for (const suffix of ["d", "d-ssl", "login"]) {
      add(`${service}${suffix}`, COURIER, service);
      add(`courier${service}${suffix}`, COURIER, service);
    }
    for (const suffix of ["", "d", "s"]) {
      add(`${service}${suffix}`, CYRUS, service);
      add(`cyrus/${service}${suffix}`, CYRUS, service);
    }
  }
  add("couriertcpd", COURIER);
  for (const name of ["popper", "qpopper", "in.qpopper"]) add(name, QPOPPER, "pop3");
  const table: Program[][] = [];
  for (const program of byName.values()) (table[program.name.length] ??= []).push(program);
  return table;
}

const PROGRAMS = programTable();

function lookupProgram(s: string, start: number, end: number): Program | undefined {
  const candidates = PROGRAMS[end - start];
  if (candidates === undefined) return undefined;
  const c = s.charCodeAt(start);
  for (const program of candidates) {
    if (program.name.charCodeAt(0) === c && s.startsWith(program.name, start)) return program;
  }
  return undefined;
}

/** A tag's first three characters as one number. */
function prefixCode(s: string, i: number): number {
  return (s.charCodeAt(i) << 16) | (s.charCodeAt(i + 1) << 8) | s.charCodeAt(i + 2);
}

// The first three characters of every known program (and so of Dovecot's `imap(...)` and
// `pop3(...)` mail-process tags): a Postfix line's tag is turned down on them, unread.
const TAG_PREFIXES = new Set(PROGRAMS.flat().map((program) => prefixCode(program.name, 0)));
const knownPrefix: TagFilter = (s, i) => TAG_PREFIXES.has(prefixCode(s, i));

// Scratch for the line prefix; parsing is synchronous, so one is enough.
const header = newHeader();

/**
 * Parses one log line: `text` (without its LF), or text[start, end) when `text` holds many lines
 * (a LineBatch; only a line that names a known program is sliced out of it). `now` (epoch ms)
 * places a classic timestamp, which has no year, in the right year; a follower passes a clock
 * instead, read only for a line that yields a record (Date.now per line cost a sixth of the
 * parse rate, bench/log-parse.ts). Returns undefined for
 * anything that is not a login or logout of a recognised POP/IMAP server, including every shape
 * in login-sources.md §4.7.
 */
export function parseLogLine(
  text: string,
  now: number | (() => number),
  start = 0,
  end = text.length,
): LogRecord | undefined {
  if (end - start > MAX_LINE_CHARS) return undefined;
  if (!scanHeader(text, header, start, end, knownPrefix)) return undefined;
  const { progStart, progEnd } = header;
  const known = lookupProgram(text, progStart, progEnd);
  // Dovecot's log_path names the mail process itself: `imap(alice)<pid><session>`.
  if (known === undefined && text.charCodeAt(progStart + 4) !== 0x28) return undefined;
  const line = start === 0 && end === text.length ? text : text.slice(start, end);
  const p = header.msgStart - start;
  const record =
    known === undefined
      ? parseDovecotMailTag(text.slice(progStart, progEnd), line, p)
      : parseKnown(known, line, p);
  if (record !== undefined && header.tsKind !== 0) {
    const kind = header.tsKind as TimestampKind;
    const at = parseTimestamp(
      text,
      kind,
      header.tsStart,
      header.tsEnd,
      typeof now === "number" ? now : now(),
    );
    if (at !== undefined) record.at = at;
  }
  return record;
}

/**
 * Parses a message whose program is already known, as a syslog datagram gives them: `program`
 * is the tag without `[pid]` (RFC 3164) or the APP-NAME (RFC 5424). No `at`: the caller has
 * the header's timestamp.
 */
export function parseLogMessage(program: string, message: string): LogRecord | undefined {
  if (message.length > MAX_LINE_CHARS) return undefined;
  const known = lookupProgram(program, 0, program.length);
  if (known !== undefined) return parseKnown(known, message, 0);
  return program.charCodeAt(4) === 0x28 ? parseDovecotMailTag(program, message, 0) : undefined;
}

/** The message is msg[p...], written by a known program. */
function parseKnown(known: Program, msg: string, p: number): LogRecord | undefined {
  const { families, service } = known;
  if (families & DOVECOT) return parseDovecotSyslog(msg, p);
  if (families & DOVECOT_LOGIN) {
    return service === undefined ? undefined : parseDovecotLogin(msg, p, service);
  }
  if (families & QPOPPER) return parseQpopper(msg, p);
  let record: LogRecord | undefined;
  if (families & UW && service !== undefined) record = parseUw(msg, p, service);
  if (record === undefined && families & COURIER) record = parseCourier(msg, p, service);
  if (record === undefined && families & CYRUS && service !== undefined) {
    record = parseCyrus(msg, p, service);
  }
  return record;
}
