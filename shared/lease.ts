// The lease value stored in the bucket under the address's key (DESIGN.md "Events and leases").
// KV entries carry no headers, so the trace context of the grant rides in the value (`trace`), and
// relay decisions link their spans to it.
import { tryParseAddress } from "./address.ts";
import type { LoginEvent } from "./login-event.ts";
import {
  LABEL,
  SchemaError,
  TRACEPARENT,
  type JsonObject,
  USER_NAME,
  optionalString,
  parseJsonObject,
  requiredString,
  requiredTime,
} from "./schema.ts";

export interface Lease {
  readonly ip: string;
  readonly user?: string | undefined;
  readonly service: string;
  readonly source: string;
  readonly watcher: string;
  /** Epoch milliseconds. */
  readonly loginAt: number;
  readonly expiresAt: number;
  /** The login event that granted (or last extended) this lease. */
  readonly event: string;
  /** W3C traceparent of the authorizer span that wrote it. */
  readonly trace?: string | undefined;
  /**
   * Distinct users seen logging in from this address lately, with their last login (epoch ms):
   * kept in the value so every authorizer replica judges a shared address alike. Present only
   * while the distinct-users guard is on, and bounded by its limit.
   */
  readonly recent?: readonly RecentUser[] | undefined;
}

export type RecentUser = readonly [user: string, at: number];

/**
 * What a relay decision needs of a lease: until when, for whom, and the trace that granted it.
 * The milter's mirror keeps only this (a million leases must fit in a sidecar's memory).
 */
export type LeaseView = Pick<Lease, "expiresAt" | "user" | "trace">;

export function leaseFromEvent(e: LoginEvent, ttlMs: number, trace: string | undefined): Lease {
  return {
    ip: e.ip,
    user: e.user,
    service: e.service,
    source: e.source,
    watcher: e.watcher,
    loginAt: e.loginAt,
    expiresAt: e.loginAt + ttlMs,
    event: e.id,
    trace,
  };
}

export function encodeLease(l: Lease): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      ip: l.ip,
      user: l.user,
      service: l.service,
      source: l.source,
      watcher: l.watcher,
      loginAt: new Date(l.loginAt).toISOString(),
      expiresAt: new Date(l.expiresAt).toISOString(),
      event: l.event,
      trace: l.trace,
      recent: l.recent?.map(([user, at]) => [user, new Date(at).toISOString()]),
    }),
  );
}

export function decodeLease(body: Uint8Array): Lease {
  return leaseFromJson(parseJsonObject(Buffer.from(body).toString("utf8"), "lease"));
}

export function leaseFromJson(o: JsonObject): Lease {
  const ip = tryParseAddress(requiredString(o, "ip", /^.{1,64}$/));
  if (ip === undefined) throw new SchemaError(`field "ip" is not an IP address`);
  return {
    ip: ip.text,
    user: optionalString(o, "user", USER_NAME),
    service: requiredString(o, "service", LABEL),
    source: requiredString(o, "source", LABEL),
    watcher: requiredString(o, "watcher", /^[-\w]{1,64}$/),
    loginAt: requiredTime(o, "loginAt"),
    expiresAt: requiredTime(o, "expiresAt"),
    event: requiredString(o, "event", /^[-\w]{1,64}$/),
    trace: optionalString(o, "trace", TRACEPARENT),
    ...recentOf(recentUsers(o["recent"])),
  };
}

/** Only a lease that carries recent users has the field at all. */
function recentOf(recent: RecentUser[] | undefined): { recent?: RecentUser[] } {
  return recent === undefined ? {} : { recent };
}

/** At most this many recent users are read back: the guard never needs more than its limit + 1. */
const MAX_RECENT = 256;

function recentUsers(v: unknown): RecentUser[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > MAX_RECENT) {
    throw new SchemaError(`field "recent" must be a list of at most ${MAX_RECENT} [user, time]`);
  }
  return v.map((item: unknown) => {
    if (!Array.isArray(item) || item.length !== 2) {
      throw new SchemaError(`field "recent" must hold [user, time] pairs`);
    }
    const pair = { user: item[0] as unknown, at: item[1] as unknown };
    return [requiredString(pair, "user", USER_NAME), requiredTime(pair, "at")] as const;
  });
}
