/**
 * RPC dispatch without sockets: one message in, its reply and what it did out. A UDP datagram
 * goes straight to dispatch(); a TCP connection feeds an RpcStreamSession, which reassembles
 * records (record-marking.ts) and dispatches each in order.
 *
 * Order of checks, as libtirpc's svc_getreq does it: rpcvers (MSG_DENIED / RPC_MISMATCH), then
 * the credential flavor (MSG_DENIED / AUTH_ERROR / AUTH_REJECTEDCRED for anything but AUTH_NONE
 * and AUTH_SYS, whose bodies are skipped unread), then the program (PROG_UNAVAIL), its version
 * range (PROG_MISMATCH), and finally the program's own procedures.
 *
 * A message that is not a decodable CALL is a ProtocolError: no reply can be addressed to it, so
 * the server drops the datagram or closes the connection.
 */
import type { ClientAddress } from "../../../shared/address.ts";
import { DEFAULT_RECORD_LIMITS, decodeRecords, encodeRecord } from "./record-marking.ts";
import type { RecordLimits } from "./record-marking.ts";
import {
  AUTH_NONE,
  AUTH_REJECTEDCRED,
  AUTH_SYS,
  RPC_VERSION,
  decodeCall,
  encodeReply,
} from "./rpc-codec.ts";
import type { RpcCall, RpcReply } from "./rpc-codec.ts";

export type Transport = "udp" | "tcp";

export interface CallContext {
  /** The caller as its socket shows it (IPv4-mapped made IPv4); undefined if unknown. */
  readonly caller: ClientAddress | undefined;
  readonly transport: Transport;
  /** The local address the call arrived on, when the socket tells it (TCP, or a bound host). */
  readonly localHost: string | undefined;
}

/** A login a program asks the server to report once the reply is on its way. */
export interface LoginEffect {
  readonly address: ClientAddress;
  readonly version: number;
}

export interface CallOutcome {
  readonly reply: RpcReply;
  /** A short name for the stats and logs: "added", "denied", "garbage-args", "getport", ... */
  readonly event: string;
  readonly login?: LoginEffect;
}

/** One RPC program: answers calls whose version is within low..high. */
export interface RpcProgram {
  readonly prog: number;
  readonly low: number;
  readonly high: number;
  /** Must not throw for anything a peer can send: bad arguments are GARBAGE_ARGS. */
  answer(call: RpcCall, ctx: CallContext): CallOutcome;
}

/**
 * Answers one whole message.
 * @throws ProtocolError if it is not a decodable CALL.
 */
export function dispatch(
  message: Buffer,
  programs: readonly RpcProgram[],
  ctx: CallContext,
): { reply: Buffer; outcome: CallOutcome } {
  const outcome = answer(message, programs, ctx);
  return { reply: encodeReply(outcome.reply), outcome };
}

function answer(message: Buffer, programs: readonly RpcProgram[], ctx: CallContext): CallOutcome {
  const call = decodeCall(message);
  const { xid } = call;
  if (call.kind === "rpc-mismatch") {
    return {
      reply: { kind: "rpc-mismatch", xid, low: RPC_VERSION, high: RPC_VERSION },
      event: "rpc-mismatch",
    };
  }
  if (call.cred.flavor !== AUTH_NONE && call.cred.flavor !== AUTH_SYS) {
    return { reply: { kind: "auth-error", xid, stat: AUTH_REJECTEDCRED }, event: "auth-rejected" };
  }
  const program = programs.find((p) => p.prog === call.prog);
  if (program === undefined) return { reply: { kind: "prog-unavail", xid }, event: "prog-unavail" };
  if (call.vers < program.low || call.vers > program.high) {
    return {
      reply: { kind: "prog-mismatch", xid, low: program.low, high: program.high },
      event: "prog-mismatch",
    };
  }
  return program.answer(call, ctx);
}

const NOTHING = Buffer.alloc(0);

/**
 * One TCP connection's RPC traffic: record-marked calls in, record-marked replies out, in call
 * order. Holds at most one unfinished record (bounded by `limits`). After a ProtocolError the
 * session is failed and the connection must be closed: framing is lost.
 */
export class RpcStreamSession {
  readonly #programs: readonly RpcProgram[];
  readonly #ctx: CallContext;
  readonly #limits: RecordLimits;
  #buffer: Buffer = NOTHING;
  #failed = false;

  constructor(
    programs: readonly RpcProgram[],
    ctx: CallContext,
    limits: RecordLimits = DEFAULT_RECORD_LIMITS,
  ) {
    this.#programs = programs;
    this.#ctx = ctx;
    this.#limits = limits;
  }

  /** Bytes of an unfinished record held for the next chunk. */
  get buffered(): number {
    return this.#buffer.length;
  }

  get failed(): boolean {
    return this.#failed;
  }

  /**
   * Takes the next bytes from the peer; returns the framed replies to every call they complete
   * and the outcomes, in order.
   * @throws ProtocolError on a record over the limits or a record that is not a CALL.
   */
  receive(chunk: Buffer): { reply: Buffer; outcomes: CallOutcome[] } {
    if (this.#failed) return { reply: NOTHING, outcomes: [] };
    try {
      const buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      const { records, consumed } = decodeRecords(buf, this.#limits);
      this.#buffer = consumed === buf.length ? NOTHING : Buffer.from(buf.subarray(consumed));
      const replies: Buffer[] = [];
      const outcomes: CallOutcome[] = [];
      for (const record of records) {
        const { reply, outcome } = dispatch(record, this.#programs, this.#ctx);
        replies.push(encodeRecord(reply));
        outcomes.push(outcome);
      }
      return { reply: replies.length === 0 ? NOTHING : Buffer.concat(replies), outcomes };
    } catch (err) {
      this.#failed = true;
      this.#buffer = NOTHING;
      throw err;
    }
  }
}
