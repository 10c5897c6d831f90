/**
 * Syslog message codec: one datagram in, its parts out, or a ProtocolError. Pure.
 *
 * Accepts, after a PRI `<0>`..`<191>` (RFC 5424 6.2.1; no leading zeros):
 * - RFC 5424 (version `1`): `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, each
 *   header field a run of printable US-ASCII or `-` (NILVALUE) within the RFC's lengths
 *   (6.2.4-6.2.7), TIMESTAMP an RFC 3339 date-time with a zone or `-`, SD `-` or a sequence of
 *   `[id param="value" ...]` elements (values may escape `"`, `\` and `]` with `\`, 6.3.3). A UTF-8
 *   BOM before MSG is dropped.
 * - RFC 3164 (anything else): `[TIMESTAMP SP] [HOSTNAME SP] TAG: CONTENT` read like a log line
 *   (header.ts): a classic `Mmm dd hh:mm:ss` or an RFC 3339 timestamp, an optional host, a tag
 *   `program` or `program[pid]`. Local syslog(3) messages (from /dev/log) carry no host; relayed
 *   ones do. What does not fit is all message (RFC 3164 4.3.3): never an error after the PRI.
 * A trailing LF, CR LF or NUL (many senders append one) is dropped. Bytes are read as UTF-8
 * (invalid sequences become U+FFFD).
 * Limit: MAX_SYSLOG_BYTES per datagram (RFC 5424 6.1 asks receivers to take 2048 and allows
 * more; a log line over 8 KiB is not a login anyway). Larger is a ProtocolError.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { newHeader, scanTag, scanTimestamp } from "./header.ts";
import { hasZone, parseRfc3339, parseTimestamp, scanRfc3339 } from "./timestamp.ts";
import type { TimestampKind } from "./timestamp.ts";

export const MAX_SYSLOG_BYTES = 8192;

export interface SyslogMessage {
  format: "rfc3164" | "rfc5424";
  /** RFC 5424 6.2.1 facility 0..23 and severity 0..7. */
  facility: number;
  severity: number;
  /** Epoch ms, when the header had a usable timestamp. */
  timestamp?: number;
  host?: string;
  /** RFC 3164 TAG without `[pid]`, or RFC 5424 APP-NAME. */
  appName?: string;
  procId?: string;
  /** RFC 5424 only. */
  msgId?: string;
  message: string;
}

const SP = 0x20;
const NIL = "-";
/** RFC 5424 6.1 field lengths. */
const MAX_HOSTNAME = 255;
const MAX_APP_NAME = 48;
const MAX_PROCID = 128;
const MAX_MSGID = 32;
const MAX_SD_NAME = 32;

function fail(why: string): never {
  throw new ProtocolError(`syslog: ${why}`);
}

/** @throws ProtocolError for a datagram without a valid PRI, too long, or a bad RFC 5424 header. */
export function decodeSyslog(datagram: Uint8Array, now: number): SyslogMessage {
  if (datagram.length === 0) fail("empty datagram");
  if (datagram.length > MAX_SYSLOG_BYTES) fail(`datagram over ${MAX_SYSLOG_BYTES} bytes`);
  const s = trimEnd(Buffer.from(datagram.buffer, datagram.byteOffset, datagram.length).toString());
  const { pri, end } = readPri(s);
  const facility = pri >> 3;
  const severity = pri & 7;
  if (s.charCodeAt(end) === 0x31 && s.charCodeAt(end + 1) === SP) {
    return { format: "rfc5424", facility, severity, ...decode5424(s, end + 2) };
  }
  return { format: "rfc3164", facility, severity, ...decode3164(s, end, now) };
}

function trimEnd(s: string): string {
  let end = s.length;
  while (end > 0) {
    const c = s.charCodeAt(end - 1);
    if (c !== 0x0a && c !== 0x0d && c !== 0) break;
    end--;
  }
  return end === s.length ? s : s.slice(0, end);
}

function readPri(s: string): { pri: number; end: number } {
  if (s.charCodeAt(0) !== 0x3c) fail("no <PRI>");
  let pri = 0;
  let p = 1;
  for (; p <= 4; p++) {
    const d = s.charCodeAt(p) - 0x30;
    if (!(d >= 0 && d <= 9)) break;
    pri = pri * 10 + d;
  }
  if (p === 1 || p > 4 || s.charCodeAt(p) !== 0x3e) fail("bad <PRI>");
  if ((p > 2 && s.charCodeAt(1) === 0x30) || pri > 191) fail("bad <PRI>");
  return { pri, end: p + 1 };
}

type Parts = Omit<SyslogMessage, "format" | "facility" | "severity">;

function decode3164(s: string, p: number, now: number): Parts {
  const h = newHeader();
  const rest = scanTimestamp(s, p, h);
  const parts: Parts = { message: s.slice(rest) };
  if (h.tsKind !== 0) {
    const kind = h.tsKind as TimestampKind;
    const at = parseTimestamp(s, kind, h.tsStart, h.tsEnd, now);
    if (at !== undefined) parts.timestamp = at;
  }
  if (!scanTag(s, rest, h)) return parts;
  if (h.hostEnd > h.hostStart) parts.host = s.slice(h.hostStart, h.hostEnd);
  parts.appName = s.slice(h.progStart, h.progEnd);
  if (h.pidEnd > h.pidStart) parts.procId = s.slice(h.pidStart, h.pidEnd);
  parts.message = s.slice(h.msgStart);
  return parts;
}

/** One header field at s[p] up to the next space: its end index, or fail. */
function field(s: string, p: number, max: number, name: string): number {
  const sp = s.indexOf(" ", p);
  if (sp < 0) fail(`RFC 5424 header ends before ${name}`);
  if (sp === p || sp - p > max) fail(`RFC 5424 ${name} empty or over ${max} characters`);
  for (let i = p; i < sp; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) fail(`RFC 5424 ${name} not printable US-ASCII`);
  }
  return sp;
}

function decode5424(s: string, p: number): Parts {
  const parts: Parts = { message: "" };
  let end = field(s, p, 64, "TIMESTAMP");
  if (s.slice(p, end) !== NIL) {
    if (scanRfc3339(s, p) !== end || s.charCodeAt(p + 10) !== 0x54 || !hasZone(s, p, end)) {
      fail("RFC 5424 TIMESTAMP is not an RFC 3339 date-time with a zone");
    }
    const at = parseRfc3339(s, p, end);
    if (at === undefined) fail("RFC 5424 TIMESTAMP out of range");
    parts.timestamp = at;
  }
  const fields = [
    ["host", MAX_HOSTNAME, "HOSTNAME"],
    ["appName", MAX_APP_NAME, "APP-NAME"],
    ["procId", MAX_PROCID, "PROCID"],
    ["msgId", MAX_MSGID, "MSGID"],
  ] as const;
  for (const [key, max, name] of fields) {
    p = end + 1;
    end = field(s, p, max, name);
    const value = s.slice(p, end);
    if (value !== NIL) parts[key] = value;
  }
  p = skipStructuredData(s, end + 1);
  if (p < s.length) {
    if (s.charCodeAt(p) !== SP) fail("RFC 5424 STRUCTURED-DATA not followed by a space");
    p++;
    if (s.charCodeAt(p) === 0xfeff) p++; // the BOM RFC 5424 6.4 puts before UTF-8 text
    parts.message = s.slice(p);
  }
  return parts;
}

/** STRUCTURED-DATA at s[p] (RFC 5424 6.3): the index after it, or fail. */
function skipStructuredData(s: string, p: number): number {
  if (s.charCodeAt(p) === 0x2d) return p + 1;
  if (s.charCodeAt(p) !== 0x5b) fail("RFC 5424 STRUCTURED-DATA is neither - nor [");
  while (s.charCodeAt(p) === 0x5b) {
    p = sdName(s, p + 1, "SD-ID");
    while (s.charCodeAt(p) === SP) {
      p = sdName(s, p + 1, "PARAM-NAME");
      if (s.charCodeAt(p) !== 0x3d || s.charCodeAt(p + 1) !== 0x22)
        fail('RFC 5424 PARAM without ="');
      p = sdValue(s, p + 2);
    }
    if (s.charCodeAt(p) !== 0x5d) fail("RFC 5424 SD-ELEMENT not closed by ]");
    p++;
  }
  return p;
}

/** SD-NAME (printable US-ASCII except `=`, SP, `]`, `"`; 1-32) at s[p]: the index after it. */
function sdName(s: string, p: number, what: string): number {
  const start = p;
  for (; p - start <= MAX_SD_NAME; p++) {
    const c = s.charCodeAt(p);
    if (!(c >= 0x21 && c <= 0x7e) || c === 0x3d || c === 0x5d || c === 0x22) break;
  }
  if (p === start || p - start > MAX_SD_NAME) fail(`RFC 5424 ${what} empty or too long`);
  return p;
}

/** PARAM-VALUE after its opening quote: the index after the closing quote. */
function sdValue(s: string, p: number): number {
  for (; p < s.length; p++) {
    const c = s.charCodeAt(p);
    if (c === 0x5c) p++;
    else if (c === 0x22) return p + 1;
  }
  return fail("RFC 5424 PARAM-VALUE not closed");
}
