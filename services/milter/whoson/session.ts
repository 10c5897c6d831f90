/**
 * whoson answers, and one TCP connection as a state machine over bytes, without sockets.
 *
 * Answers (shared/reference/login-sources.md section 8; wso_query(3) return codes as Exim's
 * lookups/whoson.c reads them):
 * - `QUERY <address>` with a lease: `+<user>` (wso_query 0; Exim: lookup succeeds, `$value` is
 *   the user, empty when the lease has none). The user is cleaned of control characters and cut
 *   to MAX_USER_BYTES; libwhoson cuts it again to the caller's buffer (Exim: 79 bytes).
 * - without a lease, or a key that is not an address (none given, `unknown`, a host name):
 *   `-Not Logged in` (wso_query +1; Exim: lookup fails, so the client is not relayed).
 * - an address the stale mirror cannot vouch for, or a failed lookup: `*<reason>` (wso_query -1;
 *   Exim: DEFER, "WHOSON: failed to complete: <reason>", a temporary error, never a relay).
 * - `LOGIN` and `LOGOUT`: `*` refusal. Leases come only from POP/IMAP logins through the
 *   authorizer; a whoson client must not grant or revoke one (wso_login returns -1).
 * - `QUIT`: `+QUIT OK`, then the connection ends (gowhoson's reply).
 * - anything else: `*Unknown command`.
 *
 * A TCP connection carries many requests; each gets exactly one reply, in request order. A
 * ProtocolError (broken framing) fails the session and the
 * caller must close the connection; a QUIT ends it after its reply.
 */
import type { ClientAddress } from "../../../shared/address.ts";
import { tryParseAddress } from "../../../shared/address.ts";
import {
  DEFAULT_WHOSON_LIMITS,
  WHOSON_ERROR,
  WHOSON_NEGATIVE,
  WHOSON_POSITIVE,
  decodeWhosonRequests,
  encodeWhosonReply,
} from "./codec.ts";
import type { WhosonLimits, WhosonReply, WhosonRequest } from "./codec.ts";

/**
 * What the lease mirror knows of one address. The same shape as the socketmap front door's
 * (services/milter/socketmap/session.ts), so one function serves both.
 */
import type { LeaseAnswer } from "../lease-answer.ts";
export type { LeaseAnswer };

/**
 * Answers for one client address; injected so the role wires the decision in. Synchronous: it
 * reads an in-memory mirror.
 */
export type WhosonLookup = (address: ClientAddress) => LeaseAnswer;

/** Why a reply was given: the label of a counter or a debug line. */
export type WhosonReason =
  | "leased"
  | "not-leased"
  | "not-an-address"
  | "stale"
  | "lookup-failed"
  | "refused"
  | "quit"
  | "unknown-command";

export interface WhosonOutcome {
  readonly request: WhosonRequest;
  readonly reply: WhosonReply;
  readonly reason: WhosonReason;
  /** What the lookup threw, for `lookup-failed`. */
  readonly error?: unknown;
}

export interface WhosonSessionOptions {
  lookup: WhosonLookup;
  limits?: WhosonLimits | undefined;
  /** Told of every reply, in order; for counters and logs. Must not throw. */
  observe?: ((outcome: WhosonOutcome) => void) | undefined;
}

/** Reply texts. NOT_LOGGED_IN is gowhoson's; the `*` texts end up in Exim's log. */
export const NOT_LOGGED_IN = "Not Logged in";
export const ERROR_STALE = "Lease information unavailable (mirror stale)";
export const ERROR_LOOKUP_FAILED = "Lease lookup failed";
export const ERROR_READ_ONLY = "Refused: relay leases come from POP/IMAP logins only";
export const ERROR_UNKNOWN_COMMAND = "Unknown command";
export const QUIT_OK = "QUIT OK";

/**
 * A user name is at most 256 characters (shared/schema.ts USER_NAME), so 1024 UTF-8 bytes cut
 * nothing valid; the cap only bounds a reply if `lookup` hands over something longer.
 */
export const MAX_USER_BYTES = 1024;

const NOTHING = Buffer.alloc(0);

/** The reply for one request, and why. Never throws: a failed lookup is a `*` reply. */
export function answerWhoson(request: WhosonRequest, lookup: WhosonLookup): WhosonOutcome {
  const reply = (status: WhosonReply["status"], text: string, reason: WhosonReason) => ({
    request,
    reply: { status, text },
    reason,
  });
  switch (request.verb) {
    case "QUERY":
      break;
    case "LOGIN":
    case "LOGOUT":
      return reply(WHOSON_ERROR, ERROR_READ_ONLY, "refused");
    case "QUIT":
      return reply(WHOSON_POSITIVE, QUIT_OK, "quit");
    default:
      return reply(WHOSON_ERROR, ERROR_UNKNOWN_COMMAND, "unknown-command");
  }
  // Like gowhoson, words after the address are ignored.
  const address = tryParseAddress(request.args[0] ?? "");
  if (address === undefined) return reply(WHOSON_NEGATIVE, NOT_LOGGED_IN, "not-an-address");
  try {
    const answer = lookup(address);
    switch (answer.kind) {
      case "leased":
        return reply(WHOSON_POSITIVE, cleanUser(answer.user ?? ""), "leased");
      case "not-leased":
        return reply(WHOSON_NEGATIVE, NOT_LOGGED_IN, "not-leased");
      case "stale":
        return reply(WHOSON_ERROR, ERROR_STALE, "stale");
    }
  } catch (error) {
    return { ...reply(WHOSON_ERROR, ERROR_LOOKUP_FAILED, "lookup-failed"), error };
  }
}

/**
 * The user as one safe line: control characters become `?` (as Postfix's printable() does), lone
 * surrogates U+FFFD, and it is cut at MAX_USER_BYTES on a character boundary.
 */
export function cleanUser(user: string): string {
  let clean = user.toWellFormed().replace(/\p{Cc}/gu, "?");
  if (Buffer.byteLength(clean, "utf8") <= MAX_USER_BYTES) return clean;
  const bytes = Buffer.from(clean, "utf8").subarray(0, MAX_USER_BYTES + 1);
  // Step back from the cut to the start of a character (a byte that is not 10xxxxxx).
  let end = MAX_USER_BYTES;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  clean = bytes.toString("utf8", 0, end);
  return clean;
}

export class WhosonSession {
  readonly #options: WhosonSessionOptions;
  readonly #limits: WhosonLimits;
  #buffer: Buffer = NOTHING;
  #failed = false;
  #closed = false;

  constructor(options: WhosonSessionOptions) {
    this.#options = options;
    this.#limits = options.limits ?? DEFAULT_WHOSON_LIMITS;
  }

  /** Bytes of an unfinished request held back for the next chunk. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** True once a receive() has thrown; the caller must close the connection. */
  get failed(): boolean {
    return this.#failed;
  }

  /** True once a QUIT was answered: write its reply, then end the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Takes the next bytes from the peer; returns the replies for every request they complete
   * (empty if none); nothing after a QUIT is read. Throws a ProtocolError on broken framing;
   * later calls then return nothing.
   */
  receive(chunk: Buffer): Buffer {
    if (this.#failed || this.#closed) return NOTHING;
    try {
      const replies: Buffer[] = [];
      for (const request of this.#decode(chunk)) {
        const outcome = answerWhoson(request, this.#options.lookup);
        this.#options.observe?.(outcome);
        replies.push(encodeWhosonReply(outcome.reply));
        if (outcome.reason === "quit") {
          this.#closed = true;
          this.#buffer = NOTHING;
          break;
        }
      }
      return Buffer.concat(replies);
    } catch (err) {
      // A ProtocolError from the peer, or our own bug (an unencodable reply): nothing safe to
      // say after either, so the connection must close.
      this.#failed = true;
      this.#buffer = NOTHING;
      throw err;
    }
  }

  #decode(chunk: Buffer): WhosonRequest[] {
    const buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const { requests, consumed } = decodeWhosonRequests(buf, this.#limits);
    // Copy the unfinished tail so it does not pin the whole chunk it came in.
    this.#buffer = consumed === buf.length ? NOTHING : Buffer.from(buf.subarray(consumed));
    return requests;
  }
}
