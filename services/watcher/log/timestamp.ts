/**
 * Timestamps at the start of log lines and in syslog headers (login-sources.md §5). Pure; no
 * regular expressions. Scanning (where does a timestamp end?) is separate from parsing (which
 * instant is it?), so the hot path only scans, and parses only lines that turned out to matter.
 *
 * Accepted forms:
 * - classic syslog (RFC 3164 4.1.2): `Nov 28 12:34:56`, `Nov  8 12:34:56` (day space-padded, as
 *   syslog writes it), `Nov 08 12:34:56` (zero-padded, Dovecot's `%b %d %H:%M:%S`), `Nov 8
 *   12:34:56`. English month abbreviations, case as written. No year and no zone: it is read as
 *   the process's local time, in the latest year that puts it at most one day after `now` (so a
 *   `Dec 31` line read on January 1st is last year's, and a `Jan  1` line read a second before
 *   midnight on December 31st, from a clock slightly ahead, is next year's).
 * - RFC 3339 (RFC 5424 6.2.3; rsyslog's high-precision file format):
 *   `2026-11-28T12:34:56.123456+01:00`, `...Z`, 0 to 9 fraction digits (kept to the millisecond);
 *   also `2024-02-16 22:05:52` and `2024-02-16T22:05:52` without a zone (pop-before-smtp's sample
 *   patterns), read as local time. `t` and `z` may be lowercase (RFC 3339 5.6); a zone may be
 *   written `+0100` (journalctl -o short-iso), though RFC 5424 headers must use `+01:00`.
 * Out-of-range fields (month 13, `Feb 30`, hour 24) scan but do not parse: parse answers
 * undefined, never a wrapped-around date.
 */

export const TS_CLASSIC = 1;
export const TS_RFC3339 = 2;
export type TimestampKind = typeof TS_CLASSIC | typeof TS_RFC3339;

const SP = 0x20;
const COLON = 0x3a;
const DASH = 0x2d;
const DOT = 0x2e;
const PLUS = 0x2b;
const DAY_MS = 86_400_000;
const MAX_FRACTION_DIGITS = 9;

function digit(s: string, i: number): number {
  const d = s.charCodeAt(i) - 0x30; // NaN past the end, which fails both tests
  return d >= 0 && d <= 9 ? d : -1;
}

function two(s: string, i: number): number {
  const a = digit(s, i);
  const b = digit(s, i + 1);
  return a < 0 || b < 0 ? -1 : a * 10 + b;
}

function four(s: string, i: number): number {
  const a = two(s, i);
  const b = two(s, i + 2);
  return a < 0 || b < 0 ? -1 : a * 100 + b;
}

/** Month index 0..11 of the abbreviation at s[p], or -1. */
function monthAt(s: string, p: number): number {
  // A switch on the first letter, then the other two: every line of a log starts here.
  const b = s.charCodeAt(p + 1);
  const c = s.charCodeAt(p + 2);
  switch (s.charCodeAt(p)) {
    case 0x4a: // J
      if (b === 0x61) return c === 0x6e ? 0 : -1; // Jan
      if (b !== 0x75) return -1;
      return c === 0x6e ? 5 : c === 0x6c ? 6 : -1; // Jun, Jul
    case 0x46: // F
      return b === 0x65 && c === 0x62 ? 1 : -1; // Feb
    case 0x4d: // M
      if (b !== 0x61) return -1;
      return c === 0x72 ? 2 : c === 0x79 ? 4 : -1; // Mar, May
    case 0x41: // A
      if (b === 0x70) return c === 0x72 ? 3 : -1; // Apr
      return b === 0x75 && c === 0x67 ? 7 : -1; // Aug
    case 0x53: // S
      return b === 0x65 && c === 0x70 ? 8 : -1; // Sep
    case 0x4f: // O
      return b === 0x63 && c === 0x74 ? 9 : -1; // Oct
    case 0x4e: // N
      return b === 0x6f && c === 0x76 ? 10 : -1; // Nov
    case 0x44: // D
      return b === 0x65 && c === 0x63 ? 11 : -1; // Dec
    default:
      return -1;
  }
}

/** `hh:mm:ss` at s[p]: true if its shape is right (values are checked when parsing). */
function isClock(s: string, p: number): boolean {
  return (
    two(s, p) >= 0 &&
    s.charCodeAt(p + 2) === COLON &&
    two(s, p + 3) >= 0 &&
    s.charCodeAt(p + 5) === COLON &&
    two(s, p + 6) >= 0
  );
}

/** Where the day digits of a classic timestamp at s[p] start and end, or -1. */
function classicDay(s: string, p: number): number {
  let q = p + 4;
  if (s.charCodeAt(q) === SP) q++;
  if (digit(s, q) < 0) return -1;
  return digit(s, q + 1) >= 0 ? q + 2 : q + 1;
}

/** Index just past a classic timestamp starting at s[p], or -1. */
export function scanClassic(s: string, p: number): number {
  if (monthAt(s, p) < 0 || s.charCodeAt(p + 3) !== SP) return -1;
  const q = classicDay(s, p);
  if (q < 0 || s.charCodeAt(q) !== SP || !isClock(s, q + 1)) return -1;
  return q + 9;
}

/** Index just past an RFC 3339 (or zone-less ISO) date-time starting at s[p], or -1. */
export function scanRfc3339(s: string, p: number): number {
  if (four(s, p) < 0 || s.charCodeAt(p + 4) !== DASH || two(s, p + 5) < 0) return -1;
  if (s.charCodeAt(p + 7) !== DASH || two(s, p + 8) < 0) return -1;
  const t = s.charCodeAt(p + 10);
  if ((t !== 0x54 && t !== 0x74 && t !== SP) || !isClock(s, p + 11)) return -1;
  let q = p + 19;
  if (s.charCodeAt(q) === DOT) {
    const start = ++q;
    while (digit(s, q) >= 0 && q - start < MAX_FRACTION_DIGITS) q++;
    if (q === start || digit(s, q) >= 0) return -1;
  }
  const z = s.charCodeAt(q);
  if (z === 0x5a || z === 0x7a) return q + 1;
  if (z === PLUS || z === DASH) {
    if (two(s, q + 1) < 0) return -1;
    if (s.charCodeAt(q + 3) === COLON) return two(s, q + 4) >= 0 ? q + 6 : -1;
    return two(s, q + 3) >= 0 ? q + 5 : -1; // `+0100`, as journalctl -o short-iso writes it
  }
  return q;
}

/** Whether a scanned RFC 3339 timestamp s[p, end) carries a zone (RFC 5424 requires one). */
export function hasZone(s: string, p: number, end: number): boolean {
  const last = s.charCodeAt(end - 1);
  if (last === 0x5a || last === 0x7a) return true;
  const sign = s.charCodeAt(end - 6);
  return end - 6 >= p + 19 && (sign === PLUS || sign === DASH);
}

function validClock(h: number, m: number, sec: number): boolean {
  return h < 24 && m < 60 && sec <= 60; // 60: a leap second, read as the next minute's 0
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function daysIn(y: number, mon: number): number {
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  return mon === 1 && leap ? 29 : (DAYS_IN_MONTH[mon] ?? 0);
}

// The start of the last local minute converted. Lines come in order, so most share it, and
// Date's local-time conversion is the dearest step of a line's timestamp; no zone moves its
// clock within a minute, so the seconds add on.
const minuteCache = { key: -1, start: 0 };

/** Local time, or NaN if the calendar fields do not name a real day (Feb 30). */
function localTime(y: number, mon: number, day: number, h: number, m: number, sec: number): number {
  if (day > daysIn(y, mon)) return NaN;
  const key = (((y * 12 + mon) * 32 + day) * 24 + h) * 60 + m;
  if (key !== minuteCache.key) {
    minuteCache.key = key;
    minuteCache.start = new Date(y, mon, day, h, m, 0).getTime();
  }
  return minuteCache.start + sec * 1000;
}

// The local year of a recent `now`, and until when no classic timestamp can belong to the next
// year: cached, since lines are parsed far more often than `now` crosses a year.
const yearCache = { value: 0, from: 0, until: -Infinity };

/** The local year of `now`; `yearCache.until <= now` means a line may be from next year. */
function localYear(now: number): number {
  if (now >= yearCache.from && now < yearCache.until) return yearCache.value;
  const y = new Date(now).getFullYear();
  yearCache.value = y;
  yearCache.from = new Date(y, 0, 1).getTime();
  yearCache.until = new Date(y + 1, 0, 1).getTime() - DAY_MS;
  return y;
}

/** Epoch ms of the classic timestamp at s[p] (already scanned), or undefined. */
export function parseClassic(s: string, p: number, now: number): number | undefined {
  const mon = monthAt(s, p);
  const q = classicDay(s, p);
  const day = digit(s, q - 2) >= 0 ? two(s, q - 2) : digit(s, q - 1);
  const h = two(s, q + 1);
  const m = two(s, q + 4);
  const sec = two(s, q + 7);
  if (mon < 0 || day < 1 || !validClock(h, m, sec)) return undefined;
  const y0 = localYear(now);
  for (let y = now >= yearCache.until ? y0 + 1 : y0; y >= y0 - 1; y--) {
    const t = localTime(y, mon, day, h, m, sec);
    if (t <= now + DAY_MS) return t; // NaN (no such day that year) compares false: a year down
  }
  return undefined;
}

/** Epoch ms of the RFC 3339 timestamp s[p, end) (already scanned), or undefined. */
export function parseRfc3339(s: string, p: number, end: number): number | undefined {
  const y = four(s, p);
  const mon = two(s, p + 5) - 1;
  const day = two(s, p + 8);
  const h = two(s, p + 11);
  const m = two(s, p + 14);
  const sec = two(s, p + 17);
  if (mon < 0 || mon > 11 || day < 1 || !validClock(h, m, sec)) return undefined;
  let ms = 0;
  let q = p + 19;
  if (s.charCodeAt(q) === DOT) {
    for (let scale = 100; digit(s, ++q) >= 0; scale /= 10) ms += digit(s, q) * scale;
    ms = Math.floor(ms);
  }
  if (q >= end) {
    const t = localTime(y, mon, day, h, m, sec);
    return Number.isNaN(t) ? undefined : t + ms;
  }
  const utc = Date.UTC(y, mon, day, h, m, sec, ms);
  const check = new Date(Date.UTC(y, mon, day));
  if (check.getUTCMonth() !== mon) return undefined;
  const z = s.charCodeAt(q);
  if (z !== PLUS && z !== DASH) return utc; // Z
  const oh = two(s, q + 1);
  const om = two(s, s.charCodeAt(q + 3) === COLON ? q + 4 : q + 3);
  if (oh > 23 || om > 59) return undefined;
  const offset = (oh * 60 + om) * 60_000;
  return z === PLUS ? utc - offset : utc + offset;
}

/** Epoch ms of a scanned timestamp of either kind, or undefined. */
export function parseTimestamp(
  s: string,
  kind: TimestampKind,
  p: number,
  end: number,
  now: number,
): number | undefined {
  return kind === TS_CLASSIC ? parseClassic(s, p, now) : parseRfc3339(s, p, end);
}
