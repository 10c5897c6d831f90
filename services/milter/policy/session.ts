/**
 * One Postfix policy connection as a state machine over bytes, without sockets: bytes from
 * smtpd in, reply bytes out. Postfix keeps a connection for many requests (one per RCPT, for
 * every message of an SMTP session), and a client may pipeline several requests in one write;
 * each gets exactly one reply, in request order.
 *
 * The state is the unfinished request in `#buffer` and whether the session has failed. After a
 * failure (a peer's ProtocolError, or `answer` throwing) the connection must be closed: a peer
 * that breaks framing, or a request we could not answer, leaves nothing safe to say
 * (SMTPD_POLICY_README: "log a warning and disconnect"; Postfix then retries and applies its
 * default action).
 */
import { DEFAULT_POLICY_LIMITS, decodePolicyRequests, encodePolicyReply } from "./codec.ts";
import type { PolicyLimits, PolicyRequest } from "./codec.ts";

/**
 * Turns one request into an access(5) action: "OK", "DUNNO", "DEFER_IF_PERMIT 4.7.1 ...". It
 * should answer its own failures with the fail mode; a throw closes the connection. Synchronous:
 * the decision reads an in-memory mirror, and a request costs Postfix a wait on every RCPT.
 */
export type PolicyAnswer = (request: PolicyRequest) => string;

const NOTHING = Buffer.alloc(0);

export class PolicySession {
  readonly #answer: PolicyAnswer;
  readonly #limits: PolicyLimits;
  #buffer: Buffer = NOTHING;
  #failed = false;

  constructor(answer: PolicyAnswer, limits: PolicyLimits = DEFAULT_POLICY_LIMITS) {
    this.#answer = answer;
    this.#limits = limits;
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
   * (empty if none). Throws a ProtocolError on bad input, or whatever `answer` threw; later
   * calls then return nothing.
   */
  receive(chunk: Buffer): Buffer {
    if (this.#failed) return NOTHING;
    try {
      const requests = this.#decode(chunk);
      if (requests.length === 1)
        return encodePolicyReply(this.#answer(requests[0] as PolicyRequest));
      return Buffer.concat(requests.map((request) => encodePolicyReply(this.#answer(request))));
    } catch (err) {
      this.#failed = true;
      this.#buffer = NOTHING;
      throw err;
    }
  }

  #decode(chunk: Buffer): PolicyRequest[] {
    const buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const { requests, consumed } = decodePolicyRequests(buf, this.#limits);
    // Copy the unfinished tail so it does not pin the whole chunk it came in.
    this.#buffer = consumed === buf.length ? NOTHING : Buffer.from(buf.subarray(consumed));
    return requests;
  }
}
