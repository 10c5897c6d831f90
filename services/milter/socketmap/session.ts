/**
 * One socketmap connection as a state machine over bytes, without sockets: netstrings from
 * Sendmail or Postfix in, reply netstrings out. Both MTAs send one request and wait for its
 * reply, but a peer may pipeline; each request gets exactly one reply, in request order.
 *
 * Answers (DESIGN.md "Decision", socketmap; shared/reference/mta-protocols.md sections 5 and 6):
 * - a key that is an address (any form tryParseAddress takes: Sendmail's lowercased
 *   `ipv6:2001:db8:0:0:0:0:0:1`, Postfix's `2001:db8::1`, brackets) with a lease:
 *   `OK <expiry in epoch seconds>`, DRAC's own value. Postfix access maps read an all-numeric
 *   value as OK; the classic DRAC sendmail.cf rule needs any non-empty value that is not `?`.
 * - an address without a lease, and any key that is not an address (Postfix looks the client
 *   host name up before the address; `unknown`, `localhost`, Sendmail's `0`): `NOTFOUND `.
 * - an address the stale mirror cannot vouch for: `TEMP <reason>`, never for a key that is not
 *   an address (Postfix would defer every client with a host name).
 * - the lookup failing: `TEMP <reason>`; both MTAs then fail closed, temporarily.
 * - a well framed request that is not `<mapname> <key>`, or a map name not in `mapNames`:
 *   `PERM <reason>`. Postfix logs it as a configuration error and defers; Sendmail treats the map
 *   as unavailable. The framing still holds, so the connection goes on.
 *
 * The state is the unfinished netstring in `#buffer` and whether the session has failed. A
 * framing error (ProtocolError) fails the session: nothing after it can be trusted to be a
 * request boundary, so the caller must close the connection.
 */
import type { ClientAddress } from "../../../shared/address.ts";
import { tryParseAddress } from "../../../shared/address.ts";
import {
  DEFAULT_SOCKETMAP_LIMITS,
  decodeSocketmapRequests,
  encodeSocketmapReply,
} from "./codec.ts";
import type { SocketmapLimits, SocketmapReply, SocketmapRequest } from "./codec.ts";

import type { LeaseAnswer } from "../lease-answer.ts";
export type { LeaseAnswer };

/**
 * Answers for one client address; injected so the role wires the decision in. Synchronous: it
 * reads an in-memory mirror, and the MTA waits on every lookup.
 */
export type SocketmapLookup = (address: ClientAddress) => LeaseAnswer;

/** Why a reply was given: the label of a counter or a debug line. */
export type SocketmapReason =
  | "leased"
  | "not-leased"
  | "not-an-address"
  | "stale"
  | "lookup-failed"
  | "unknown-map"
  | "malformed";

export interface SocketmapOutcome {
  readonly request: SocketmapRequest;
  readonly reply: SocketmapReply;
  readonly reason: SocketmapReason;
  /** What the lookup threw, for `lookup-failed`. */
  readonly error?: unknown;
}

export interface SocketmapSessionOptions {
  lookup: SocketmapLookup;
  /** Map names served; a request for another gets PERM. Undefined: any name is served. */
  mapNames?: readonly string[] | undefined;
  limits?: SocketmapLimits | undefined;
  /** Told of every reply, in order; for counters and logs. Must not throw. */
  observe?: ((outcome: SocketmapOutcome) => void) | undefined;
}

/** Reply texts; Postfix logs them after "socketmap server temporary error:". */
export const TEMP_STALE = "lease mirror stale, address not known";
export const TEMP_LOOKUP_FAILED = "lease lookup failed";

const NOTHING = Buffer.alloc(0);

/** The reply for one request, and why. Never throws: a failed lookup is a TEMP reply. */
export function answerSocketmap(
  request: SocketmapRequest,
  options: Pick<SocketmapSessionOptions, "lookup" | "mapNames">,
): SocketmapOutcome {
  if (request.kind === "malformed") {
    return { request, reply: { status: "PERM", reason: request.reason }, reason: "malformed" };
  }
  if (options.mapNames !== undefined && !options.mapNames.includes(request.mapName)) {
    const reason = `unknown map name ${JSON.stringify(request.mapName)}`;
    return { request, reply: { status: "PERM", reason }, reason: "unknown-map" };
  }
  const address = tryParseAddress(request.key);
  if (address === undefined) {
    return { request, reply: { status: "NOTFOUND" }, reason: "not-an-address" };
  }
  try {
    const answer = options.lookup(address);
    return { request, ...replyFor(answer) };
  } catch (error) {
    const reply = { status: "TEMP", reason: TEMP_LOOKUP_FAILED } as const;
    return { request, reply, reason: "lookup-failed", error };
  }
}

function replyFor(answer: LeaseAnswer): Pick<SocketmapOutcome, "reply" | "reason"> {
  switch (answer.kind) {
    case "leased":
      return { reply: { status: "OK", value: epochSeconds(answer.expiresAt) }, reason: "leased" };
    case "not-leased":
      return { reply: { status: "NOTFOUND" }, reason: "not-leased" };
    case "stale":
      return { reply: { status: "TEMP", reason: TEMP_STALE }, reason: "stale" };
  }
}

/**
 * Whole seconds, all digits (Postfix's all-numeric OK). A lease that expires before 1970 or at no
 * representable time is our own bug; throwing turns it into a TEMP reply, not a bogus grant.
 */
function epochSeconds(expiresAtMs: number): string {
  const seconds = Math.floor(expiresAtMs / 1000);
  if (!Number.isSafeInteger(seconds) || seconds <= 0) {
    throw new RangeError(`lease expiresAt ${expiresAtMs} is not a time after 1970`);
  }
  return String(seconds);
}

export class SocketmapSession {
  readonly #options: SocketmapSessionOptions;
  readonly #limits: SocketmapLimits;
  #buffer: Buffer = NOTHING;
  #failed = false;

  constructor(options: SocketmapSessionOptions) {
    this.#options = options;
    this.#limits = options.limits ?? DEFAULT_SOCKETMAP_LIMITS;
  }

  /** Bytes of an unfinished request held back for the next chunk. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** True once a receive() has thrown; the caller must close the connection. */
  get failed(): boolean {
    return this.#failed;
  }

  /**
   * Takes the next bytes from the peer; returns the replies for every request they complete
   * (empty if none). Throws a ProtocolError on broken framing; later calls then return nothing.
   */
  receive(chunk: Buffer): Buffer {
    if (this.#failed) return NOTHING;
    try {
      const replies: Buffer[] = [];
      for (const request of this.#decode(chunk)) {
        const outcome = answerSocketmap(request, this.#options);
        this.#options.observe?.(outcome);
        replies.push(encodeSocketmapReply(outcome.reply));
      }
      return replies.length === 1 ? (replies[0] as Buffer) : Buffer.concat(replies);
    } catch (err) {
      // A ProtocolError from the peer, or our own bug (an unencodable reply): nothing safe to
      // say after either, so the connection must close.
      this.#failed = true;
      this.#buffer = NOTHING;
      throw err;
    }
  }

  #decode(chunk: Buffer): SocketmapRequest[] {
    const buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const { requests, consumed } = decodeSocketmapRequests(buf, this.#limits);
    // Copy the unfinished tail so it does not pin the whole chunk it came in.
    this.#buffer = consumed === buf.length ? NOTHING : Buffer.from(buf.subarray(consumed));
    return requests;
  }
}
