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

export function requiredTime(o: JsonObject, field: string): number {
  const v = o[field];
  const text = typeof v === "string" && ISO_TIME.test(v) ? v : "";
  const ms = text === "" ? NaN : Date.parse(text);
  // Date.parse rolls impossible times over (February 30 -> March 1, 24:00 -> the next day).
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 19) !== text.slice(0, 19)) {
    throw new SchemaError(`field "${field}" must be an RFC 3339 UTC time`);
  }
  return ms;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/** A user name as POP/IMAP servers log it: printable, no control characters, bounded. */
export const USER_NAME = /^[^\p{Cc}]{1,256}$/u;
/** A W3C traceparent (version-traceid-spanid-flags). */
export const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
/** A service or source label: lowercase word. */
export const LABEL = /^[a-z][a-z0-9_-]{0,31}$/;
