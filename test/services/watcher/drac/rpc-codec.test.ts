import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  AUTH_NONE,
  AUTH_SYS,
  MAX_AUTH_BYTES,
  decodeCall,
  decodeReply,
  encodeCall,
  encodeReply,
} from "../../../../services/watcher/drac/rpc-codec.ts";
import type {
  RpcCall,
  RpcCallMessage,
  RpcReply,
} from "../../../../services/watcher/drac/rpc-codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { CALL_V1, CALL_V2, REPLY, hex } from "./golden.ts";

const NONE = { flavor: AUTH_NONE, body: Buffer.alloc(0) };

function call(fields: Partial<RpcCall>): RpcCall {
  return {
    kind: "call",
    xid: 1,
    prog: 900101,
    vers: 1,
    proc: 1,
    cred: NONE,
    verf: NONE,
    args: Buffer.alloc(0),
    ...fields,
  };
}

/** AUTH_SYS body: stamp, machinename "h", uid 0, gid 0, no gids (RFC 5531 appendix A). */
const AUTH_SYS_BODY = hex(
  "00 00 00 2a  00 00 00 01 68 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00",
);

const validCalls: { name: string; bytes: Buffer; message: RpcCallMessage }[] = [
  {
    name: "drac-rpc.md 2.2: v1 call, 203.0.113.5",
    bytes: CALL_V1,
    message: call({ args: hex("cb 00 71 05") }),
  },
  {
    name: "drac-rpc.md 2.2: v2 call, 2001:db8::5 from x86",
    bytes: CALL_V2,
    message: call({ vers: 2, args: CALL_V2.subarray(40) }),
  },
  {
    name: "AUTH_SYS credential skipped by its length",
    bytes: Buffer.concat([
      hex("00 00 00 07  00 00 00 00  00 00 00 02  00 0d bc 05  00 00 00 01  00 00 00 01"),
      hex("00 00 00 01  00 00 00 18"),
      AUTH_SYS_BODY,
      hex("00 00 00 00  00 00 00 00  cb 00 71 05"),
    ]),
    message: call({
      xid: 7,
      cred: { flavor: AUTH_SYS, body: AUTH_SYS_BODY },
      args: hex("cb 00 71 05"),
    }),
  },
  {
    name: "credential of exactly 400 bytes",
    bytes: encodeCall(call({ cred: { flavor: AUTH_SYS, body: Buffer.alloc(400, 1) } })),
    message: call({ cred: { flavor: AUTH_SYS, body: Buffer.alloc(400, 1) } }),
  },
  {
    name: "credential body padded to four bytes",
    bytes: hex(`00 00 00 01  00 00 00 00  00 00 00 02  00 0d bc 05  00 00 00 01  00 00 00 00
      00 00 00 01  00 00 00 05  61 62 63 64 65 00 00 00  00 00 00 00  00 00 00 00`),
    message: call({ proc: 0, cred: { flavor: AUTH_SYS, body: Buffer.from("abcde") } }),
  },
  {
    name: "rpcvers 3: only the xid is read",
    bytes: hex("00 00 00 09  00 00 00 00  00 00 00 03  ff ff"),
    message: { kind: "rpc-mismatch", xid: 9, rpcvers: 3 },
  },
];

const invalidCalls: { name: string; bytes: Buffer; error: RegExp }[] = [
  { name: "empty", bytes: Buffer.alloc(0), error: /truncated xid/ },
  { name: "reply, not call", bytes: REPLY.addSuccess, error: /not CALL/ },
  { name: "msg_type 2", bytes: hex("00 00 00 01  00 00 00 02  00 00 00 02"), error: /msg_type 2/ },
  {
    name: "header cut before the verifier",
    bytes: CALL_V1.subarray(0, 35),
    error: /truncated verifier/,
  },
  {
    name: "credential over 400 bytes",
    bytes: encodeCall(call({ cred: { flavor: AUTH_SYS, body: Buffer.alloc(MAX_AUTH_BYTES + 1) } })),
    error: /at most 400/,
  },
  {
    name: "credential length 0xffffffff, no body",
    bytes: hex(
      "00 00 00 01  00 00 00 00  00 00 00 02  00 0d bc 05  00 00 00 01  00 00 00 01  00 00 00 01  ff ff ff ff",
    ),
    error: /at most 400/,
  },
  {
    name: "credential length within bound, body truncated",
    bytes: hex(
      "00 00 00 01  00 00 00 00  00 00 00 02  00 0d bc 05  00 00 00 01  00 00 00 01  00 00 00 01  00 00 00 10  00",
    ),
    error: /truncated credential body/,
  },
  {
    name: "verifier over 400 bytes",
    bytes: encodeCall(call({ verf: { flavor: AUTH_NONE, body: Buffer.alloc(404) } })),
    error: /verifier body: 404 bytes/,
  },
];

describe("decodeCall", () => {
  for (const c of validCalls) {
    it(c.name, () => {
      assert.deepEqual(decodeCall(c.bytes), c.message);
    });
  }
  for (const c of invalidCalls) {
    it(`rejects: ${c.name}`, () => {
      assert.throws(
        () => decodeCall(c.bytes),
        (err: unknown) => err instanceof ProtocolError && c.error.test(err.message),
      );
    });
  }
  it("every truncation of a v1 call header is a ProtocolError", () => {
    for (let n = 0; n < 40; n++)
      assert.throws(() => decodeCall(CALL_V1.subarray(0, n)), ProtocolError);
  });
  it("encodeCall writes the golden v1 bytes", () => {
    assert.deepEqual(encodeCall(call({ args: hex("cb 00 71 05") })), CALL_V1);
  });
});

const replies: { name: string; reply: RpcReply; bytes: Buffer }[] = [
  {
    name: "ADD_SUCCESS (28 B)",
    reply: { kind: "success", xid: 1, result: hex("00 00 00 00") },
    bytes: REPLY.addSuccess,
  },
  {
    name: "ADD_PERM (28 B)",
    reply: { kind: "success", xid: 1, result: hex("00 00 00 01") },
    bytes: REPLY.addPerm,
  },
  {
    name: "NULLPROC (24 B)",
    reply: { kind: "success", xid: 1, result: Buffer.alloc(0) },
    bytes: REPLY.nullproc,
  },
  {
    name: "PROG_MISMATCH 1..2 (32 B)",
    reply: { kind: "prog-mismatch", xid: 1, low: 1, high: 2 },
    bytes: REPLY.progMismatch,
  },
  {
    name: "PROC_UNAVAIL (24 B)",
    reply: { kind: "proc-unavail", xid: 1 },
    bytes: REPLY.procUnavail,
  },
  {
    name: "GARBAGE_ARGS (24 B)",
    reply: { kind: "garbage-args", xid: 1 },
    bytes: REPLY.garbageArgs,
  },
  {
    name: "PROG_UNAVAIL (24 B)",
    reply: { kind: "prog-unavail", xid: 1 },
    bytes: REPLY.progUnavail,
  },
  {
    name: "RPC_MISMATCH 2..2 (24 B)",
    reply: { kind: "rpc-mismatch", xid: 1, low: 2, high: 2 },
    bytes: REPLY.rpcMismatch,
  },
  {
    name: "AUTH_REJECTEDCRED (20 B)",
    reply: { kind: "auth-error", xid: 1, stat: 2 },
    bytes: REPLY.authRejected,
  },
];

describe("encodeReply / decodeReply", () => {
  for (const c of replies) {
    it(c.name, () => {
      assert.deepEqual(encodeReply(c.reply), c.bytes);
      assert.deepEqual(decodeReply(c.bytes), c.reply);
    });
  }
  it("decodeReply rejects a call, trailing bytes and unknown stats", () => {
    assert.throws(() => decodeReply(CALL_V1), ProtocolError);
    assert.throws(() => decodeReply(Buffer.concat([REPLY.procUnavail, hex("00")])), ProtocolError);
    assert.throws(() => decodeReply(hex("00 00 00 01 00 00 00 01 00 00 00 02")), ProtocolError);
    assert.throws(
      () =>
        decodeReply(hex("00 00 00 01 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 09")),
      ProtocolError,
    );
  });
});

/** fast-check records have a null prototype by default; deepEqual would see that. */
function rec<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true });
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const auth = rec({
  flavor: u32,
  body: fc.uint8Array({ maxLength: MAX_AUTH_BYTES }).map((a) => Buffer.from(a)),
});
const arbCall = rec({
  kind: fc.constant("call" as const),
  xid: u32,
  prog: u32,
  vers: u32,
  proc: u32,
  cred: auth,
  verf: auth,
  args: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
});
const arbReply: fc.Arbitrary<RpcReply> = fc.oneof(
  rec({
    kind: fc.constant("success" as const),
    xid: u32,
    result: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  }),
  rec({
    kind: fc.constantFrom(
      "prog-unavail" as const,
      "proc-unavail" as const,
      "garbage-args" as const,
      "system-err" as const,
    ),
    xid: u32,
  }),
  rec({
    kind: fc.constantFrom("prog-mismatch" as const, "rpc-mismatch" as const),
    xid: u32,
    low: u32,
    high: u32,
  }),
  rec({ kind: fc.constant("auth-error" as const), xid: u32, stat: u32 }),
);

describe("properties", () => {
  it("decodeCall(encodeCall(x)) is x", () => {
    fc.assert(
      fc.property(arbCall, (c) => {
        assert.deepEqual(decodeCall(encodeCall(c)), c);
      }),
    );
  });
  it("decodeReply(encodeReply(x)) is x", () => {
    fc.assert(
      fc.property(arbReply, (r) => {
        assert.deepEqual(decodeReply(encodeReply(r)), r);
      }),
    );
  });
  it("arbitrary bytes: decodeCall and decodeReply throw only ProtocolError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 128 }), (a) => {
        for (const decode of [decodeCall, decodeReply]) {
          try {
            decode(Buffer.from(a));
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
  it("arbitrary bytes after a valid header prefix: only ProtocolError", () => {
    fc.assert(
      fc.property(fc.nat({ max: 40 }), fc.uint8Array({ maxLength: 64 }), (cut, tail) => {
        try {
          decodeCall(Buffer.concat([CALL_V1.subarray(0, cut), tail]));
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
