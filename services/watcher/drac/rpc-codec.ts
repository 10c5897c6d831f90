/**
 * ONC RPC version 2 messages (RFC 5531 section 9, "The RPC Message Protocol"). Pure: a CALL's
 * bytes in, its header and argument bytes out, or a ProtocolError; a reply in, bytes out. One
 * message is one UDP datagram or one TCP record (record-marking.ts); nothing here frames.
 *
 * Accepts any credential and verifier flavor whose body is within MAX_AUTH_BYTES (RFC 5531 8.2:
 * "opaque body<400>"); which flavors a program takes is the dispatcher's decision (rpc-dispatch.ts).
 * A CALL whose rpcvers is not 2 is decoded only as far as its xid, because the rest of its layout
 * is unknown: the dispatcher answers it MSG_DENIED / RPC_MISMATCH.
 *
 * Replies always carry an AUTH_NONE verifier: no program here authenticates its callers.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

// RFC 5531 9: msg_type, reply_stat, accept_stat, reject_stat.
export const RPC_VERSION = 2;
export const CALL = 0;
export const REPLY = 1;
export const MSG_ACCEPTED = 0;
export const MSG_DENIED = 1;
export const SUCCESS = 0;
export const PROG_UNAVAIL = 1;
export const PROG_MISMATCH = 2;
export const PROC_UNAVAIL = 3;
export const GARBAGE_ARGS = 4;
export const SYSTEM_ERR = 5;
export const RPC_MISMATCH = 0;
export const AUTH_ERROR = 1;

// RFC 5531 8.2 and 9 (auth_flavor, auth_stat).
export const AUTH_NONE = 0;
export const AUTH_SYS = 1;
export const AUTH_SHORT = 2;
export const AUTH_DH = 3;
export const RPCSEC_GSS = 6;
export const AUTH_OK = 0;
export const AUTH_BADCRED = 1;
export const AUTH_REJECTEDCRED = 2;
export const AUTH_BADVERF = 3;
export const AUTH_REJECTEDVERF = 4;
export const AUTH_TOOWEAK = 5;
/** RFC 5531 8.2: an opaque_auth body is at most 400 bytes; more is not a valid message. */
export const MAX_AUTH_BYTES = 400;

export interface OpaqueAuth {
  readonly flavor: number;
  readonly body: Buffer;
}

export interface RpcCall {
  readonly kind: "call";
  readonly xid: number;
  readonly prog: number;
  readonly vers: number;
  readonly proc: number;
  readonly cred: OpaqueAuth;
  readonly verf: OpaqueAuth;
  /** The procedure's XDR arguments, undecoded: the program decodes them. */
  readonly args: Buffer;
}

/** A CALL for another version of the RPC protocol itself; only its xid can be trusted. */
export interface RpcVersionMismatch {
  readonly kind: "rpc-mismatch";
  readonly xid: number;
  readonly rpcvers: number;
}

export type RpcCallMessage = RpcCall | RpcVersionMismatch;

/** A reply, named by what it says; `xid` echoes the call's. */
export type RpcReply =
  | { readonly kind: "success"; readonly xid: number; readonly result: Buffer }
  | { readonly kind: "prog-unavail"; readonly xid: number }
  | {
      readonly kind: "prog-mismatch";
      readonly xid: number;
      readonly low: number;
      readonly high: number;
    }
  | { readonly kind: "proc-unavail"; readonly xid: number }
  | { readonly kind: "garbage-args"; readonly xid: number }
  | { readonly kind: "system-err"; readonly xid: number }
  | {
      readonly kind: "rpc-mismatch";
      readonly xid: number;
      readonly low: number;
      readonly high: number;
    }
  | { readonly kind: "auth-error"; readonly xid: number; readonly stat: number };

const NO_BYTES = Buffer.alloc(0);
const AUTH_NONE_VERF: OpaqueAuth = { flavor: AUTH_NONE, body: NO_BYTES };

function readAuth(r: XdrReader, what: string): OpaqueAuth {
  const flavor = r.uint(`${what} flavor`);
  return { flavor, body: r.opaque(MAX_AUTH_BYTES, `${what} body`) };
}

/**
 * Decodes one CALL message.
 * @throws ProtocolError if it is truncated, not a CALL, or has an authenticator over 400 bytes;
 * a server drops such a datagram (as libtirpc's svc_dg does) or closes such a connection.
 */
export function decodeCall(buf: Buffer): RpcCallMessage {
  const r = new XdrReader(buf);
  const xid = r.uint("xid");
  const type = r.uint("msg_type");
  if (type !== CALL) throw new ProtocolError(`msg_type ${type} is not CALL`);
  const rpcvers = r.uint("rpcvers");
  if (rpcvers !== RPC_VERSION) return { kind: "rpc-mismatch", xid, rpcvers };
  const prog = r.uint("prog");
  const vers = r.uint("vers");
  const proc = r.uint("proc");
  const cred = readAuth(r, "credential");
  const verf = readAuth(r, "verifier");
  return { kind: "call", xid, prog, vers, proc, cred, verf, args: r.rest() };
}

/** Encodes a CALL (our own client and tests); `rpcvers` other than 2 only to test servers. */
export function encodeCall(call: Omit<RpcCall, "kind">, rpcvers = RPC_VERSION): Buffer {
  const w = new XdrWriter(40 + call.cred.body.length + call.verf.body.length + call.args.length);
  w.uint(call.xid).uint(CALL).uint(rpcvers).uint(call.prog).uint(call.vers).uint(call.proc);
  w.uint(call.cred.flavor).opaque(call.cred.body);
  w.uint(call.verf.flavor).opaque(call.verf.body);
  return Buffer.concat([w.toBuffer(), call.args]);
}

const ACCEPT_STAT: Readonly<Record<string, number>> = {
  success: SUCCESS,
  "prog-unavail": PROG_UNAVAIL,
  "prog-mismatch": PROG_MISMATCH,
  "proc-unavail": PROC_UNAVAIL,
  "garbage-args": GARBAGE_ARGS,
  "system-err": SYSTEM_ERR,
};

/** Encodes a reply (RFC 5531 9, rpc_msg with reply_body); sizes as in drac-rpc.md 2.3. */
export function encodeReply(reply: RpcReply): Buffer {
  const w = new XdrWriter(32).uint(reply.xid).uint(REPLY);
  switch (reply.kind) {
    case "rpc-mismatch":
      w.uint(MSG_DENIED).uint(RPC_MISMATCH).uint(reply.low).uint(reply.high);
      return w.toBuffer();
    case "auth-error":
      w.uint(MSG_DENIED).uint(AUTH_ERROR).uint(reply.stat);
      return w.toBuffer();
    default:
      break;
  }
  w.uint(MSG_ACCEPTED).uint(AUTH_NONE_VERF.flavor).opaque(AUTH_NONE_VERF.body);
  w.uint(ACCEPT_STAT[reply.kind] ?? SYSTEM_ERR);
  if (reply.kind === "prog-mismatch") w.uint(reply.low).uint(reply.high);
  if (reply.kind !== "success") return w.toBuffer();
  return Buffer.concat([w.toBuffer(), reply.result]);
}

/**
 * Decodes a reply (our own client and tests). The verifier is read and ignored.
 * @throws ProtocolError if it is truncated, not a REPLY, or holds a value RFC 5531 does not define.
 */
export function decodeReply(buf: Buffer): RpcReply {
  const r = new XdrReader(buf);
  const xid = r.uint("xid");
  const type = r.uint("msg_type");
  if (type !== REPLY) throw new ProtocolError(`msg_type ${type} is not REPLY`);
  const stat = r.uint("reply_stat");
  if (stat === MSG_DENIED) return decodeDenied(r, xid);
  if (stat !== MSG_ACCEPTED) throw new ProtocolError(`reply_stat ${stat}`);
  readAuth(r, "verifier");
  const accept = r.uint("accept_stat");
  switch (accept) {
    case SUCCESS:
      return { kind: "success", xid, result: r.rest() };
    case PROG_MISMATCH:
      return end(r, { kind: "prog-mismatch", xid, low: r.uint("low"), high: r.uint("high") });
    case PROG_UNAVAIL:
      return end(r, { kind: "prog-unavail", xid });
    case PROC_UNAVAIL:
      return end(r, { kind: "proc-unavail", xid });
    case GARBAGE_ARGS:
      return end(r, { kind: "garbage-args", xid });
    case SYSTEM_ERR:
      return end(r, { kind: "system-err", xid });
    default:
      throw new ProtocolError(`accept_stat ${accept}`);
  }
}

function decodeDenied(r: XdrReader, xid: number): RpcReply {
  const reject = r.uint("reject_stat");
  if (reject === RPC_MISMATCH) {
    return end(r, { kind: "rpc-mismatch", xid, low: r.uint("low"), high: r.uint("high") });
  }
  if (reject === AUTH_ERROR) return end(r, { kind: "auth-error", xid, stat: r.uint("auth_stat") });
  throw new ProtocolError(`reject_stat ${reject}`);
}

/** A reply without a body must end where its last field does. */
function end(r: XdrReader, reply: RpcReply): RpcReply {
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} bytes after the reply`);
  return reply;
}
