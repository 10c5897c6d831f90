/**
 * The prefix of a log line: `[timestamp SP] [host SP] tag: message`, where tag is
 * `program`, `program[pid]`, or (Dovecot's own log_path) the process name itself
 * (`imap-login`, `imap(alice)<16473><RkamOl1hNJh/AAAB>`). Pure, no regular expressions, no
 * allocation: the scanner fills a caller's Header with indexes into the line.
 *
 * Accepted shapes (login-sources.md §4-§5), each optionally preceded by a timestamp
 * (timestamp.ts) and one space:
 * - `host tag: message`   syslog written to a file (rsyslog, syslog-ng), RFC 3164 relayed
 * - `tag: message`        Dovecot's log_path, a local /dev/log datagram, a line without a host
 * - `[popper] message`    qpopper's own log file (only right after a timestamp)
 * The first token is the tag if it ends in `:`, otherwise it is the host and the second token
 * must be the tag. A Solaris message id after the tag (`[ID 748625 mail.info] `) is skipped.
 * A tag is at most MAX_TAG_CHARS long; a host token at most MAX_HOST_CHARS.
 */
import { scanClassic, scanRfc3339, TS_CLASSIC, TS_RFC3339 } from "./timestamp.ts";

export interface Header {
  /** 0 (none), TS_CLASSIC or TS_RFC3339. */
  tsKind: number;
  tsStart: number;
  tsEnd: number;
  /** hostStart === hostEnd when the line has no host. */
  hostStart: number;
  hostEnd: number;
  /** The program name: the tag without `[pid]` and `:`. */
  progStart: number;
  progEnd: number;
  /** pidStart === pidEnd when the tag has no `[pid]`. */
  pidStart: number;
  pidEnd: number;
  msgStart: number;
}

export function newHeader(): Header {
  return {
    tsKind: 0,
    tsStart: 0,
    tsEnd: 0,
    hostStart: 0,
    hostEnd: 0,
    progStart: 0,
    progEnd: 0,
    pidStart: 0,
    pidEnd: 0,
    msgStart: 0,
  };
}

/** RFC 3164 4.1.3 allows 32; Dovecot's `imap(user)<pid><session>` tags are longer. */
export const MAX_TAG_CHARS = 200;
/** RFC 1035 names are at most 255 characters. */
export const MAX_HOST_CHARS = 255;
/** The first token is a host or a tag with its `:`. */
const MAX_FIRST_TOKEN_CHARS = Math.max(MAX_HOST_CHARS, MAX_TAG_CHARS + 1);
/** A Solaris `[ID n facility.level] ` prefix is short; look no further for its end. */
const MAX_MSGID_CHARS = 48;

const SP = 0x20;
const COLON = 0x3a;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

/**
 * Fills h with the timestamp at s[p] if there is one (followed by a space before `end`, where
 * the line ends); returns where the rest starts. Classic timestamps start with a capital
 * letter, RFC 3339 ones with a digit.
 */
export function scanTimestamp(s: string, p: number, h: Header, end = s.length): number {
  const c = s.charCodeAt(p);
  let ts = -1;
  if (c >= 0x41 && c <= 0x5a) {
    ts = scanClassic(s, p);
    h.tsKind = ts < 0 ? 0 : TS_CLASSIC;
  } else if (c >= 0x30 && c <= 0x39) {
    ts = scanRfc3339(s, p);
    h.tsKind = ts < 0 ? 0 : TS_RFC3339;
  } else {
    h.tsKind = 0;
  }
  // The scanners do not know where the line ends: the timestamp and its space must lie before it.
  if (ts < 0 || ts >= end || s.charCodeAt(ts) !== SP) {
    h.tsKind = 0;
    return p;
  }
  h.tsStart = p;
  h.tsEnd = ts;
  return ts + 1;
}

/**
 * The line s[start, end) (the whole string by default; a caller holding many lines in one
 * string passes one's bounds): timestamp, host, tag. False if it has no recognisable tag.
 */
export function scanHeader(
  s: string,
  h: Header,
  start = 0,
  end = s.length,
  wanted?: TagFilter,
): boolean {
  return scanTag(s, scanTimestamp(s, start, h, end), h, end, wanted);
}

/**
 * Whether a tag starting at s[i] may be of interest, judged from its first characters before its
 * end is looked for: a caller that wants few programs skips most lines' tags unread.
 */
export type TagFilter = (s: string, i: number) => boolean;

/**
 * From s[p] (just after any timestamp) to the line's end: `[host SP] tag: ` or, after a
 * timestamp, `[name] `. Fills host, program, pid and msgStart; false if there is no tag, or if
 * `wanted` turns down the tag after a host (the tag is then not read to its end).
 */
export function scanTag(
  s: string,
  p: number,
  h: Header,
  end = s.length,
  wanted?: TagFilter,
): boolean {
  h.hostStart = h.hostEnd = p;
  let sp = spaceAt(s, p, Math.min(end, p + MAX_FIRST_TOKEN_CHARS + 1));
  if (sp < 0 || sp === p) return false;
  if (s.charCodeAt(sp - 1) !== COLON) {
    if (h.tsKind !== 0 && s.charCodeAt(p) === LBRACKET && s.charCodeAt(sp - 1) === RBRACKET) {
      return setTag(s, h, p + 1, sp - 1, sp + 1, end); // qpopper's own log: `[popper] `
    }
    if (sp - p > MAX_HOST_CHARS) return false;
    h.hostEnd = sp;
    p = sp + 1;
    if (wanted !== undefined && !wanted(s, p)) return false;
    sp = spaceAt(s, p, Math.min(end, p + MAX_TAG_CHARS + 2));
    if (sp < 0 || sp === p || s.charCodeAt(sp - 1) !== COLON) return false;
  }
  return setTag(s, h, p, sp - 1, sp + 1, end);
}

/** Index of the first space in s[p, limit), or -1. */
function spaceAt(s: string, p: number, limit: number): number {
  const i = s.indexOf(" ", p);
  return i < limit ? i : -1;
}

/** The tag is s[start, end) (no `:`); the message is s[msg, lineEnd). */
function setTag(
  s: string,
  h: Header,
  start: number,
  end: number,
  msg: number,
  lineEnd: number,
): boolean {
  if (end <= start || end - start > MAX_TAG_CHARS) return false;
  h.progStart = start;
  h.progEnd = h.pidStart = h.pidEnd = end;
  if (s.charCodeAt(end - 1) === RBRACKET) {
    const lb = s.lastIndexOf("[", end - 2);
    if (lb > start) {
      h.progEnd = lb;
      h.pidStart = lb + 1;
      h.pidEnd = end - 1;
    }
  }
  h.msgStart = skipSolarisId(s, msg, lineEnd);
  return true;
}

function skipSolarisId(s: string, p: number, end: number): number {
  if (!s.startsWith("[ID ", p)) return p;
  const close = s.indexOf("] ", p);
  return close > 0 && close - p <= MAX_MSGID_CHARS && close + 2 <= end ? close + 2 : p;
}
