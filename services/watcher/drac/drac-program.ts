/**
 * The DRAC program's answers (rpc.dracd's behaviour, drac-rpc.md sections 2 and 4; section 7
 * lists what a compatible server must match):
 * - NULLPROC: a void reply.
 * - DRACPROC_ADD, v1 or v2: GARBAGE_ARGS if the argument does not decode; ADD_PERM if the caller
 *   is not in the allow list; otherwise ADD_SUCCESS and a login to report. The requested address
 *   is not judged here (rpc.dracd did not either): the authorizer refuses what can never be a
 *   client. Every call is a new login, so a client's periodic resend renews its lease.
 * - any other procedure: PROC_UNAVAIL. Versions outside 1..2 never get here (PROG_MISMATCH 1 2).
 * Never ADD_SYSERR: the login is handed on after the reply and cannot fail the call.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { isAllowed, type AllowList } from "./allow-list.ts";
import {
  ADD_PERM,
  ADD_SUCCESS,
  DRACPROC_ADD,
  DRACPROG,
  DRACVERS,
  DRACVERS6,
  NULLPROC,
  decodeDracAddArgs,
  encodeAddStat,
} from "./drac-codec.ts";
import type { RpcCall } from "./rpc-codec.ts";
import type { CallContext, CallOutcome, RpcProgram } from "./session.ts";

const VOID = Buffer.alloc(0);

/** `allowList()` is read on every call, so a reloaded list takes effect at once. */
export function dracProgram(allowList: () => AllowList): RpcProgram {
  return {
    prog: DRACPROG,
    low: DRACVERS,
    high: DRACVERS6,
    answer: (call, ctx) => answerDrac(call, ctx, allowList()),
  };
}

function answerDrac(call: RpcCall, ctx: CallContext, list: AllowList): CallOutcome {
  const { xid } = call;
  if (call.proc === NULLPROC)
    return { reply: { kind: "success", xid, result: VOID }, event: "null" };
  if (call.proc !== DRACPROC_ADD)
    return { reply: { kind: "proc-unavail", xid }, event: "proc-unavail" };
  let address;
  try {
    address = decodeDracAddArgs(call.vers, call.args);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    return { reply: { kind: "garbage-args", xid }, event: "garbage-args" };
  }
  if (!isAllowed(list, ctx.caller)) {
    return { reply: { kind: "success", xid, result: encodeAddStat(ADD_PERM) }, event: "denied" };
  }
  return {
    reply: { kind: "success", xid, result: encodeAddStat(ADD_SUCCESS) },
    event: "added",
    login: { address, version: call.vers },
  };
}
