import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { parseAddress } from "../../../../shared/address.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { parseAllowList } from "../../../../services/watcher/drac/allow-list.ts";
import { dracProgram } from "../../../../services/watcher/drac/drac-program.ts";
import { portmapProgram } from "../../../../services/watcher/drac/portmap.ts";
import { encodeRecord } from "../../../../services/watcher/drac/record-marking.ts";
import { AUTH_SHORT, AUTH_SYS, encodeCall } from "../../../../services/watcher/drac/rpc-codec.ts";
import { RpcStreamSession, dispatch } from "../../../../services/watcher/drac/session.ts";
import type { CallContext } from "../../../../services/watcher/drac/session.ts";
import { CALL_V1, CALL_V2, REPLY, hex } from "./golden.ts";

const { list } = parseAllowList("255.255.255.255 127.0.0.2\n");
const programs = [dracProgram(() => list), portmapProgram(() => [])];
const from = (caller: string, transport: "udp" | "tcp" = "udp"): CallContext => ({
  caller: parseAddress(caller),
  transport,
  localHost: "127.0.0.1",
});
const ALLOWED = from("127.0.0.2");
const OUTSIDE = from("127.0.0.3");

/** CALL_V1 with some header words replaced (word index: 3 prog, 4 vers, 5 proc, 6 cred flavor). */
function v1With(words: Record<number, number>, args = CALL_V1.subarray(40)): Buffer {
  const b = Buffer.from(CALL_V1.subarray(0, 40));
  for (const [i, v] of Object.entries(words)) b.writeUInt32BE(v, Number(i) * 4);
  return Buffer.concat([b, args]);
}

const cases: {
  name: string;
  call: Buffer;
  ctx?: CallContext;
  reply: Buffer;
  event: string;
  login?: string;
}[] = [
  {
    name: "v1 add, allowed caller",
    call: CALL_V1,
    reply: REPLY.addSuccess,
    event: "added",
    login: "203.0.113.5",
  },
  {
    name: "v2 add, allowed caller",
    call: CALL_V2,
    reply: REPLY.addSuccess,
    event: "added",
    login: "2001:db8::5",
  },
  {
    name: "v1 add, caller outside the list: ADD_PERM",
    call: CALL_V1,
    ctx: OUTSIDE,
    reply: REPLY.addPerm,
    event: "denied",
  },
  {
    name: "v2 add, caller outside the list: ADD_PERM",
    call: CALL_V2,
    ctx: OUTSIDE,
    reply: REPLY.addPerm,
    event: "denied",
  },
  {
    name: "NULLPROC",
    call: v1With({ 5: 0 }, Buffer.alloc(0)),
    reply: REPLY.nullproc,
    event: "null",
  },
  {
    name: "NULLPROC from outside the list too",
    call: v1With({ 5: 0 }, Buffer.alloc(0)),
    ctx: OUTSIDE,
    reply: REPLY.nullproc,
    event: "null",
  },
  {
    name: "version 3: PROG_MISMATCH 1..2",
    call: v1With({ 4: 3 }),
    reply: REPLY.progMismatch,
    event: "prog-mismatch",
  },
  {
    name: "version 0: PROG_MISMATCH 1..2",
    call: v1With({ 4: 0 }),
    reply: REPLY.progMismatch,
    event: "prog-mismatch",
  },
  {
    name: "procedure 2: PROC_UNAVAIL",
    call: v1With({ 5: 2 }),
    reply: REPLY.procUnavail,
    event: "proc-unavail",
  },
  {
    name: "truncated v1 argument: GARBAGE_ARGS",
    call: CALL_V1.subarray(0, 43),
    reply: REPLY.garbageArgs,
    event: "garbage-args",
  },
  {
    name: "v2 call with a v1 argument: GARBAGE_ARGS",
    call: v1With({ 4: 2 }),
    reply: REPLY.garbageArgs,
    event: "garbage-args",
  },
  {
    name: "garbage args from outside the list: still GARBAGE_ARGS",
    call: CALL_V1.subarray(0, 41),
    ctx: OUTSIDE,
    reply: REPLY.garbageArgs,
    event: "garbage-args",
  },
  {
    name: "another program: PROG_UNAVAIL",
    call: v1With({ 3: 100003 }),
    reply: REPLY.progUnavail,
    event: "prog-unavail",
  },
  {
    name: "rpcvers 3: RPC_MISMATCH 2..2",
    call: v1With({ 2: 3 }),
    reply: REPLY.rpcMismatch,
    event: "rpc-mismatch",
  },
  {
    name: "AUTH_SHORT credential: AUTH_REJECTEDCRED",
    call: v1With({ 6: AUTH_SHORT }),
    reply: REPLY.authRejected,
    event: "auth-rejected",
  },
  {
    name: "AUTH_SYS credential is accepted unread",
    call: encodeCall({
      xid: 1,
      prog: 900101,
      vers: 1,
      proc: 1,
      cred: { flavor: AUTH_SYS, body: Buffer.alloc(24, 0xaa) },
      verf: { flavor: 0, body: Buffer.alloc(0) },
      args: hex("cb 00 71 05"),
    }),
    reply: REPLY.addSuccess,
    event: "added",
    login: "203.0.113.5",
  },
];

describe("dispatch", () => {
  for (const c of cases) {
    it(c.name, () => {
      const { reply, outcome } = dispatch(c.call, programs, c.ctx ?? ALLOWED);
      assert.deepEqual(reply, c.reply);
      assert.equal(outcome.event, c.event);
      assert.equal(outcome.login?.address.text, c.login);
    });
  }
  it("a REPLY, or a truncated header, is a ProtocolError (no reply is possible)", () => {
    assert.throws(() => dispatch(REPLY.addSuccess, programs, ALLOWED), ProtocolError);
    assert.throws(() => dispatch(CALL_V1.subarray(0, 30), programs, ALLOWED), ProtocolError);
  });
  it("a caller the socket could not name is outside every list", () => {
    const { reply } = dispatch(CALL_V1, programs, { ...ALLOWED, caller: undefined });
    assert.deepEqual(reply, REPLY.addPerm);
  });
  it("arbitrary bytes: a reply or a ProtocolError, nothing else", () => {
    fc.assert(
      fc.property(fc.nat({ max: 44 }), fc.uint8Array({ maxLength: 100 }), (cut, tail) => {
        try {
          dispatch(Buffer.concat([CALL_V1.subarray(0, cut), tail]), programs, ALLOWED);
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 3000 },
    );
  });
  it("any well-formed CALL gets a reply", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(900101, 100000, 1),
        fc.nat({ max: 5 }),
        fc.nat({ max: 12 }),
        fc.constantFrom(0, 1, 2, 3, 6),
        fc.uint8Array({ maxLength: 120 }),
        (prog, vers, proc, flavor, args) => {
          const call = encodeCall({
            xid: 5,
            prog,
            vers,
            proc,
            cred: { flavor, body: Buffer.alloc(0) },
            verf: { flavor: 0, body: Buffer.alloc(0) },
            args: Buffer.from(args),
          });
          assert.equal(dispatch(call, programs, ALLOWED).reply.readUInt32BE(0), 5);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("RpcStreamSession", () => {
  const wire = Buffer.concat([
    encodeRecord(CALL_V1),
    encodeRecord(CALL_V2, 20),
    encodeRecord(v1With({ 4: 9 })),
  ]);
  const expected = Buffer.concat([
    encodeRecord(REPLY.addSuccess),
    encodeRecord(REPLY.addSuccess),
    encodeRecord(REPLY.progMismatch),
  ]);

  it("answers pipelined calls in order, whole or byte by byte", () => {
    const whole = new RpcStreamSession(programs, from("127.0.0.2", "tcp")).receive(wire);
    assert.deepEqual(whole.reply, expected);
    assert.deepEqual(
      whole.outcomes.map((o) => o.event),
      ["added", "added", "prog-mismatch"],
    );
    const session = new RpcStreamSession(programs, from("127.0.0.2", "tcp"));
    const parts = [...wire].map((b) => session.receive(Buffer.from([b])).reply);
    assert.deepEqual(Buffer.concat(parts), expected);
    assert.equal(session.buffered, 0);
  });

  it("fails for good on a bad record", () => {
    const session = new RpcStreamSession(programs, ALLOWED);
    assert.throws(() => session.receive(hex("ff ff ff ff")), ProtocolError);
    assert.equal(session.failed, true);
    assert.equal(session.receive(encodeRecord(CALL_V1)).reply.length, 0);
  });

  it("a record that is not a CALL fails the session", () => {
    const session = new RpcStreamSession(programs, ALLOWED);
    assert.throws(() => session.receive(encodeRecord(REPLY.addSuccess)), ProtocolError);
  });
});
