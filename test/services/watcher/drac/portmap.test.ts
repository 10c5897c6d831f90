import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  PMAPPROC_CALLIT,
  PMAPPROC_DUMP,
  PMAPPROC_GETPORT,
  PMAPPROC_SET,
  PMAP_PROG,
  PMAP_VERS,
  RPCBPROC_DUMP,
  RPCBPROC_GETADDR,
  RPCBPROC_GETVERSADDR,
  RPCBVERS,
  RPCBVERS4,
  decodeMapping,
  decodePmapList,
  decodePort,
  decodeRpcb,
  decodeRpcbList,
  decodeString,
  encodeMapping,
  encodeRpcb,
  encodeUniversalAddress,
  parseUniversalAddress,
  portmapProgram,
} from "../../../../services/watcher/drac/portmap.ts";
import type { Registration } from "../../../../services/watcher/drac/portmap.ts";
import { AUTH_NONE, decodeReply, encodeCall } from "../../../../services/watcher/drac/rpc-codec.ts";
import { dispatch } from "../../../../services/watcher/drac/session.ts";
import type { CallContext } from "../../../../services/watcher/drac/session.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { GETPORT_CALL, hex } from "./golden.ts";

const DRAC = 900101;
const PORT = 32771; // 128.3
const fixed: Registration[] = [1, 2].flatMap((vers) =>
  (["udp", "tcp"] as const).map((netid) => ({
    prog: DRAC,
    vers,
    netid,
    host: "127.0.0.1",
    port: PORT,
  })),
);
const wildcard: Registration[] = [1, 2].flatMap((vers) =>
  (["udp", "tcp", "udp6", "tcp6"] as const).map((netid) => ({
    prog: DRAC,
    vers,
    netid,
    host: undefined,
    port: PORT,
  })),
);
const UDP: CallContext = { caller: undefined, transport: "udp", localHost: undefined };
const TCP: CallContext = { caller: undefined, transport: "tcp", localHost: "10.1.2.3" };

function ask(table: Registration[], vers: number, proc: number, args: Buffer, ctx = UDP) {
  const call = encodeCall({
    xid: 1,
    prog: PMAP_PROG,
    vers,
    proc,
    cred: { flavor: AUTH_NONE, body: Buffer.alloc(0) },
    verf: { flavor: AUTH_NONE, body: Buffer.alloc(0) },
    args,
  });
  const { reply, outcome } = dispatch(call, [portmapProgram(() => table)], ctx);
  return { reply: decodeReply(reply), bytes: reply, event: outcome.event };
}

function getport(table: Registration[], prog: number, vers: number, prot: number): number {
  const { reply } = ask(
    table,
    PMAP_VERS,
    PMAPPROC_GETPORT,
    encodeMapping({ prog, vers, prot, port: 0 }),
  );
  assert.equal(reply.kind, "success");
  return decodePort(reply.result);
}

function getaddr(
  table: Registration[],
  prog: number,
  vers: number,
  netid: string,
  options: { rpcbVers?: number; proc?: number; ctx?: CallContext } = {},
): string {
  const { reply } = ask(
    table,
    options.rpcbVers ?? RPCBVERS4,
    options.proc ?? RPCBPROC_GETADDR,
    encodeRpcb({ prog, vers, netid, addr: "", owner: "" }),
    options.ctx,
  );
  assert.equal(reply.kind, "success");
  return decodeString(reply.result);
}

describe("PMAP v2 GETPORT", () => {
  it("drac-rpc.md 2.5 golden call: 56 bytes in, a 28-byte reply with the port", () => {
    const { reply } = dispatch(GETPORT_CALL, [portmapProgram(() => fixed)], UDP);
    assert.deepEqual(
      reply,
      hex(
        "00 00 00 01  00 00 00 01  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00  00 00 80 03",
      ),
    );
  });
  const table: [string, number, number, number, number][] = [
    ["DRAC v1 UDP", DRAC, 1, IPPROTO_UDP, PORT],
    ["DRAC v2 TCP", DRAC, 2, IPPROTO_TCP, PORT],
    ["DRAC v3: some version's port, so the client hears PROG_MISMATCH", DRAC, 3, IPPROTO_UDP, PORT],
    ["another program: 0", 100003, 3, IPPROTO_UDP, 0],
    ["unknown protocol: 0", DRAC, 1, 132, 0],
  ];
  for (const [name, prog, vers, prot, port] of table) {
    it(name, () => {
      assert.equal(getport(fixed, prog, vers, prot), port);
    });
  }
  it("a wildcard DRAC listener still has its port", () => {
    assert.equal(getport(wildcard, DRAC, 1, IPPROTO_UDP), PORT);
  });
  it("short arguments: GARBAGE_ARGS", () => {
    assert.equal(
      ask(fixed, PMAP_VERS, PMAPPROC_GETPORT, Buffer.alloc(12)).reply.kind,
      "garbage-args",
    );
  });
});

describe("rpcbind v3/v4 GETADDR", () => {
  const table: [
    string,
    Registration[],
    number,
    string,
    { rpcbVers?: number; proc?: number; ctx?: CallContext },
    string,
  ][] = [
    ["v4 udp", fixed, 1, "udp", {}, "127.0.0.1.128.3"],
    ["v3 tcp", fixed, 2, "tcp", { rpcbVers: RPCBVERS }, "127.0.0.1.128.3"],
    ["udp6 not registered: empty", fixed, 1, "udp6", {}, ""],
    [
      "version 7 of a registered program: some version's address",
      fixed,
      7,
      "udp",
      {},
      "127.0.0.1.128.3",
    ],
    [
      "GETVERSADDR matches the version exactly",
      fixed,
      7,
      "udp",
      { proc: RPCBPROC_GETVERSADDR },
      "",
    ],
    ["GETVERSADDR v2", fixed, 2, "udp", { proc: RPCBPROC_GETVERSADDR }, "127.0.0.1.128.3"],
    ["wildcard, local address unknown: loopback", wildcard, 1, "udp", {}, "127.0.0.1.128.3"],
    [
      "wildcard, asked over TCP: the local address",
      wildcard,
      1,
      "tcp",
      { ctx: TCP },
      "10.1.2.3.128.3",
    ],
    ["wildcard udp6: IPv6 loopback", wildcard, 2, "udp6", {}, "::1.128.3"],
  ];
  for (const [name, regs, vers, netid, options, uaddr] of table) {
    it(name, () => {
      assert.equal(getaddr(regs, DRAC, vers, netid, options), uaddr);
    });
  }
  it("another program: empty", () => {
    assert.equal(getaddr(fixed, 100003, 3, "udp"), "");
  });
  it("GETVERSADDR in v3: PROC_UNAVAIL", () => {
    const args = encodeRpcb({ prog: DRAC, vers: 1, netid: "udp", addr: "", owner: "" });
    assert.equal(ask(fixed, RPCBVERS, RPCBPROC_GETVERSADDR, args).reply.kind, "proc-unavail");
  });
  it("an over-long netid: GARBAGE_ARGS", () => {
    const args = encodeRpcb({ prog: DRAC, vers: 1, netid: "u".repeat(300), addr: "", owner: "" });
    assert.equal(ask(fixed, RPCBVERS4, RPCBPROC_GETADDR, args).reply.kind, "garbage-args");
  });
});

describe("other portmapper procedures", () => {
  it("versions outside 2..4: PROG_MISMATCH", () => {
    for (const vers of [1, 5]) {
      assert.deepEqual(ask(fixed, vers, 0, Buffer.alloc(0)).reply, {
        kind: "prog-mismatch",
        xid: 1,
        low: 2,
        high: 4,
      });
    }
  });
  it("NULL in every version", () => {
    for (const vers of [2, 3, 4])
      assert.equal(ask(fixed, vers, 0, Buffer.alloc(0)).bytes.length, 24);
  });
  it("SET is refused with FALSE: we register nothing for others", () => {
    const { reply } = ask(
      fixed,
      PMAP_VERS,
      PMAPPROC_SET,
      encodeMapping({ prog: 100003, vers: 3, prot: IPPROTO_UDP, port: 2049 }),
    );
    assert.deepEqual(reply, { kind: "success", xid: 1, result: hex("00 00 00 00") });
  });
  it("CALLIT: PROC_UNAVAIL", () => {
    assert.equal(
      ask(fixed, PMAP_VERS, PMAPPROC_CALLIT, Buffer.alloc(0)).reply.kind,
      "proc-unavail",
    );
  });
  it("DUMP over TCP lists our entries; over UDP it is refused (amplification)", () => {
    const v2 = ask(fixed, PMAP_VERS, PMAPPROC_DUMP, Buffer.alloc(0), TCP).reply;
    assert.equal(v2.kind, "success");
    assert.deepEqual(
      decodePmapList(v2.result),
      fixed.map((r) => ({
        prog: DRAC,
        vers: r.vers,
        prot: r.netid === "udp" ? IPPROTO_UDP : IPPROTO_TCP,
        port: PORT,
      })),
    );
    const v4 = ask(wildcard, RPCBVERS4, RPCBPROC_DUMP, Buffer.alloc(0), TCP).reply;
    assert.equal(v4.kind, "success");
    const entries = decodeRpcbList(v4.result);
    assert.equal(entries.length, 8);
    assert.deepEqual(entries[2], {
      prog: DRAC,
      vers: 1,
      netid: "udp6",
      addr: "::1.128.3",
      owner: "relaylease",
    });
    assert.equal(ask(fixed, PMAP_VERS, PMAPPROC_DUMP, Buffer.alloc(0), UDP).event, "dump-refused");
    assert.equal(
      ask(fixed, RPCBVERS4, RPCBPROC_DUMP, Buffer.alloc(0), UDP).reply.kind,
      "proc-unavail",
    );
  });
});

describe("universal addresses", () => {
  const table: [string, number, string][] = [
    ["127.0.0.1", 32771, "127.0.0.1.128.3"],
    ["192.0.2.1", 111, "192.0.2.1.0.111"],
    ["::1", 65535, "::1.255.255"],
    ["2001:db8::5", 256, "2001:db8::5.1.0"],
  ];
  for (const [host, port, uaddr] of table) {
    it(`${host} port ${port} <-> ${uaddr}`, () => {
      assert.equal(encodeUniversalAddress(host, port), uaddr);
      assert.deepEqual(parseUniversalAddress(uaddr), { host, port });
    });
  }
  it("rejects what is not one", () => {
    for (const bad of ["", "127.0.0.1", "127.0.0.1.256.1", "host.1.2", "127.0.0.1.1", "::1.1"]) {
      assert.equal(parseUniversalAddress(bad), undefined, bad);
    }
  });
});

describe("codec properties", () => {
  it("mapping and rpcb round trips", () => {
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const str = fc.string({ maxLength: 40, unit: "binary-ascii" }).filter((s) => !s.includes("\0"));
    fc.assert(
      fc.property(
        u32,
        u32,
        u32,
        u32,
        str,
        str,
        str,
        (prog, vers, prot, port, netid, addr, owner) => {
          assert.deepEqual(
            { ...decodeMapping(encodeMapping({ prog, vers, prot, port })) },
            { prog, vers, prot, port },
          );
          assert.deepEqual(
            { ...decodeRpcb(encodeRpcb({ prog, vers, netid, addr, owner })) },
            { prog, vers, netid, addr, owner },
          );
        },
      ),
    );
  });
  it("arbitrary bytes: only ProtocolError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 96 }), (a) => {
        for (const decode of [
          decodeMapping,
          decodeRpcb,
          decodePmapList,
          decodeRpcbList,
          decodeString,
          decodePort,
        ]) {
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
});
