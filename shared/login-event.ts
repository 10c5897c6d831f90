// The login event a watcher publishes and the authorizer consumes (DESIGN.md "Events and leases").
// `loginAt` is when the login happened, not when it was published: a late event grants only what
// is left of its TTL. The address is canonical (shared/address.ts) before it leaves the watcher,
// and checked again by the authorizer, which trusts nothing in the body.
import { randomUUID } from "node:crypto";
import { parseAddress, tryParseAddress } from "./address.ts";
import {
  LABEL,
  SchemaError,
  TRACEPARENT,
  USER_NAME,
  optionalString,
  parseJsonObject,
  requiredString,
  requiredTime,
} from "./schema.ts";

export interface LoginEvent {
  readonly id: string;
  /** Canonical address text. */
  readonly ip: string;
  readonly user?: string | undefined;
  /** pop3, imap, ... */
  readonly service: string;
  /** Which login source saw it: http, dovecot-log, dovecot-policy, drac, ... */
  readonly source: string;
  readonly watcher: string;
  /** Epoch milliseconds. */
  readonly loginAt: number;
  /**
   * W3C traceparent of the span in which the login was reported, kept with the event while it
   * waits in the outbox; on the wire the trace context rides in the message headers.
   */
  readonly trace?: string | undefined;
}

export const EVENT_ID = /^[-\w]{1,64}$/;
const ANY_ADDRESS = /^.{1,64}$/;

export function newEventId(): string {
  return randomUUID();
}

export function encodeLoginEvent(e: LoginEvent): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      id: e.id,
      ip: e.ip,
      user: e.user,
      service: e.service,
      source: e.source,
      watcher: e.watcher,
      loginAt: new Date(e.loginAt).toISOString(),
      trace: e.trace,
    }),
  );
}

/** Parses and validates an event body; throws SchemaError naming the bad field. */
export function decodeLoginEvent(body: Uint8Array): LoginEvent {
  if (body.length > MAX_EVENT_BYTES) throw new SchemaError("event is larger than 4 KiB");
  const o = parseJsonObject(Buffer.from(body).toString("utf8"), "event");
  const ipText = requiredString(o, "ip", ANY_ADDRESS);
  const ip = tryParseAddress(ipText);
  if (ip === undefined) throw new SchemaError(`field "ip" is not an IP address`);
  return {
    id: requiredString(o, "id", EVENT_ID),
    ip: ip.text,
    user: optionalString(o, "user", USER_NAME),
    service: requiredString(o, "service", LABEL),
    source: requiredString(o, "source", LABEL),
    watcher: requiredString(o, "watcher", /^[-\w]{1,64}$/),
    loginAt: requiredTime(o, "loginAt"),
    ...traceOf(optionalString(o, "trace", TRACEPARENT)),
  };
}

/** Only an event that carries a trace has the field at all. */
function traceOf(trace: string | undefined): { trace?: string } {
  return trace === undefined ? {} : { trace };
}

/** Our budget for one event: addresses, a user name of 256 characters and labels fit easily. */
export const MAX_EVENT_BYTES = 4096;

/** Canonical text of an address, for callers that built an event from untrusted input. */
export function canonicalIp(input: string): string {
  return parseAddress(input).text;
}
