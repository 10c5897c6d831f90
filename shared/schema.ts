// Minimal validation helpers for JSON documents that cross a trust boundary (login events from
// watchers, leases from the bucket, bodies of HTTP requests). Every failure names the field.

export class SchemaError extends Error {
  override name = "SchemaError";
}

export type JsonObject = Readonly<Record<string, unknown>>;

export function asObject(value: unknown, what: string): JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SchemaError(`${what} must be a JSON object`);
  }
  return value as JsonObject;
}

export function parseJsonObject(text: string, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SchemaError(`${what} is not valid JSON`, { cause: err });
  }
  return asObject(value, what);
}

export function requiredString(o: JsonObject, field: string, pattern: RegExp): string {
  const v = o[field];
  if (typeof v !== "string") throw new SchemaError(`field "${field}" must be a string`);
  if (!pattern.test(v)) throw new SchemaError(`field "${field}" has an invalid value`);
  return v;
}

export function optionalString(o: JsonObject, field: string, pattern: RegExp): string | undefined {
  if (o[field] === undefined || o[field] === null) return undefined;
  return requiredString(o, field, pattern);
}

/**
 * An RFC 3339 UTC time as JSON carries it (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, what toISOString
 * writes) to epoch ms, the fraction truncated to ms. An impossible time (February 30, 24:00,
 * second 60) is refused, not rolled over as Date.parse would. Read by arithmetic: the mirror
 * decodes a million leases at start, and Date.parse with a round-trip check cost ten times more.
 */
export function requiredTime(o: JsonObject, field: string): number {
  const v = o[field];
  const ms = typeof v === "string" ? rfc3339UtcMs(v) : NaN;
  if (Number.isNaN(ms)) throw new SchemaError(`field "${field}" must be an RFC 3339 UTC time`);
  return ms;
}

const MS_PER_DAY = 86_400_000;
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` as epoch ms (fraction truncated to ms, as Date.parse does), or
 * NaN for any other text or an impossible time (February 30, 24:00, second 60).
 */
function rfc3339UtcMs(s: string): number {
  const n = s.length;
  if (n !== 20 && (n < 22 || n > 30)) return NaN;
  if (!hasSeparators(s, n)) return NaN;
  const year = digitsAt(s, 0, 4);
  const month = digitsAt(s, 5, 2);
  const day = digitsAt(s, 8, 2);
  const hour = digitsAt(s, 11, 2);
  const minute = digitsAt(s, 14, 2);
  const second = digitsAt(s, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return NaN;
  if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59) return NaN;
  const fraction = n === 20 ? 0 : fractionMs(s, n);
  if (fraction < 0) return NaN;
  const time = ((hour * 60 + minute) * 60 + second) * 1000 + fraction;
  return daysSinceEpoch(year, month, day) * MS_PER_DAY + time;
}

function hasSeparators(s: string, n: number): boolean {
  return (
    s[4] === "-" &&
    s[7] === "-" &&
    s[10] === "T" &&
    s[13] === ":" &&
    s[16] === ":" &&
    s[n - 1] === "Z" &&
    (n === 20 || s[19] === ".")
  );
}

/** The decimal number in s[at, at + count), or -1 if any of it is not an ASCII digit. */
function digitsAt(s: string, at: number, count: number): number {
  let value = 0;
  for (let i = at; i < at + count; i++) {
    const d = s.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}

/** The fraction between "." (index 19) and "Z" in whole milliseconds, or -1 if not all digits. */
function fractionMs(s: string, n: number): number {
  const count = n - 21;
  if (digitsAt(s, 20, count) < 0) return -1;
  const kept = Math.min(3, count);
  return digitsAt(s, 20, kept) * 10 ** (3 - kept);
}

function daysInMonth(year: number, month: number): number {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return month === 2 && leap ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0);
}

/** Days from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant, days_from_civil). */
function daysSinceEpoch(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const dayOfEra =
    yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}

/** A user name as POP/IMAP servers log it: printable, no control characters, bounded. */
export const USER_NAME = /^[^\p{Cc}]{1,256}$/u;
/** A W3C traceparent (version-traceid-spanid-flags). */
export const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
/** A service or source label: lowercase word. */
export const LABEL = /^[a-z][a-z0-9_-]{0,31}$/;
