// The DRAC source over real UDP and TCP sockets on loopback, driven by our own client
// (test/support/drac-client.ts). Callers are told apart by source address: 127.0.0.2 is in the
// allow list, 127.0.0.3 is not.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { parseAllowList } from "../../../../services/watcher/drac/allow-list.ts";
import {
  ADD_PERM,
  ADD_SUCCESS,
  DRACPROC_ADD,
  DRACPROG,
  NULLPROC,
} from "../../../../services/watcher/drac/drac-codec.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../../../../services/watcher/drac/portmap.ts";
import { encodeRecord } from "../../../../services/watcher/drac/record-marking.ts";
import { startDracServer } from "../../../../services/watcher/drac/server.ts";
import type {
  DracServer,
  DracServerOptions,
  LoginSink,
} from "../../../../services/watcher/drac/server.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { waitFor } from "../../../support/wait.ts";
import {
  RpcClient,
  dracAdd,
  dracAddWith,
  pmapGetPort,
  rpcbGetAddr,
} from "../../../support/drac-client.ts";
import type { RpcTransport } from "../../../support/drac-client.ts";
import { CALL_V1, hex } from "./golden.ts";

type Login = Parameters<LoginSink["login"]>[0];

const ALLOWED = "127.0.0.2";
const OUTSIDE = "127.0.0.3";
const silent = pino({ level: "silent" });

async function start(
  options: Partial<DracServerOptions> = {},
): Promise<{ server: DracServer; logins: Login[] }> {
  const logins: Login[] = [];
  const server = await startDracServer({
    listen: "127.0.0.1:0",
    portmapListen: "127.0.0.1:0",
    allowList: parseAllowList(`255.255.255.255 ${ALLOWED}\n`).list,
    sink: { login: (report) => logins.push(report) },
    log: silent,
    ...options,
  });
  return { server, logins };
}

describe("DRAC server", () => {
  let server: DracServer;
  let logins: Login[];
  before(async () => {
    ({ server, logins } = await start());
  });
  after(() => server.close());

  for (const transport of ["udp", "tcp"] as RpcTransport[]) {
    describe(transport, () => {
      const opts = { transport, localAddress: ALLOWED };

      it("v1 add: ADD_SUCCESS, then the login reaches the sink", async () => {
        const before = logins.length;
        assert.equal(await dracAdd(server.address, "203.0.113.5", opts), ADD_SUCCESS);
        await waitFor(() => logins.length > before, 2000, "the login");
        assert.deepEqual(logins.at(-1), { ip: "203.0.113.5", service: "unknown", source: "drac" });
      });

      it("v2 add, x86 and unsigned-char forms, and IPv4-mapped", async () => {
        const before = logins.length;
        assert.equal(await dracAdd(server.address, "2001:db8:ff80::5", opts), ADD_SUCCESS);
        assert.equal(
          await dracAdd(server.address, "2001:db8:ff80::6", { ...opts, signedChar: false }),
          ADD_SUCCESS,
        );
        assert.equal(
          await dracAdd(server.address, "198.51.100.9", { ...opts, version: 2 }),
          ADD_SUCCESS,
        );
        await waitFor(() => logins.length >= before + 3, 2000, "three logins");
        assert.deepEqual(
          logins.slice(before).map((l) => l.ip),
          ["2001:db8:ff80::5", "2001:db8:ff80::6", "198.51.100.9"],
        );
      });

      it("a caller outside the allow list gets ADD_PERM and reports nothing", async () => {
        const before = logins.length;
        assert.equal(
          await dracAdd(server.address, "203.0.113.7", { transport, localAddress: OUTSIDE }),
          ADD_PERM,
        );
        assert.equal(
          await dracAdd(server.address, "2001:db8::7", { transport, localAddress: OUTSIDE }),
          ADD_PERM,
        );
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(logins.length, before);
      });

      it("wrong version, wrong procedure, garbage args, NULLPROC", async () => {
        const client = await RpcClient.open(server.address, opts);
        try {
          const v1 = hex("cb 00 71 05");
          const mismatch = await client.call({
            prog: DRACPROG,
            vers: 3,
            proc: DRACPROC_ADD,
            args: v1,
          });
          assert.deepEqual(mismatch, { kind: "prog-mismatch", xid: mismatch.xid, low: 1, high: 2 });
          assert.equal(
            (await client.call({ prog: DRACPROG, vers: 1, proc: 7, args: v1 })).kind,
            "proc-unavail",
          );
          assert.equal(
            (await client.call({ prog: DRACPROG, vers: 1, proc: DRACPROC_ADD, args: hex("cb 00") }))
              .kind,
            "garbage-args",
          );
          assert.equal(
            (await client.call({ prog: DRACPROG, vers: 2, proc: DRACPROC_ADD, args: v1 })).kind,
            "garbage-args",
          );
          const nul = await client.call({ prog: DRACPROG, vers: 1, proc: NULLPROC });
          assert.equal(nul.kind, "success");
          assert.equal(nul.result.length, 0);
          assert.equal(
            (await client.call({ prog: 100003, vers: 3, proc: 0 })).kind,
            "prog-unavail",
          );
          assert.equal(
            (await client.call({ prog: DRACPROG, vers: 1, proc: 0, rpcvers: 3 })).kind,
            "rpc-mismatch",
          );
        } finally {
          client.close();
        }
      });

      it("repeated calls over one client are repeated logins", async () => {
        const client = await RpcClient.open(server.address, opts);
        const before = logins.length;
        try {
          const stats = await Promise.all([1, 2, 3].map(() => dracAddWith(client, "192.0.2.44")));
          assert.deepEqual(stats, [0, 0, 0]);
        } finally {
          client.close();
        }
        await waitFor(() => logins.length === before + 3, 2000, "three logins");
      });
    });
  }

  it("the portmapper answers GETPORT and GETADDR with the DRAC port", async () => {
    const pm = server.portmapAddress ?? "";
    const port = server.port;
    assert.equal(await pmapGetPort(pm, DRACPROG, 1, IPPROTO_UDP), port);
    assert.equal(await pmapGetPort(pm, DRACPROG, 2, IPPROTO_TCP, "tcp"), port);
    assert.equal(await pmapGetPort(pm, 100003, 3), 0);
    assert.equal(
      await rpcbGetAddr(pm, DRACPROG, 1, "udp"),
      `127.0.0.1.${port >> 8}.${port & 0xff}`,
    );
    assert.equal(
      await rpcbGetAddr(pm, DRACPROG, 2, "tcp", 3, "tcp"),
      `127.0.0.1.${port >> 8}.${port & 0xff}`,
    );
    assert.equal(await rpcbGetAddr(pm, DRACPROG, 1, "udp6"), "");
    assert.ok((server.stats.portmap?.events.getport ?? 0) >= 3);
  });

  it("counts what it did", () => {
    const { stats } = server;
    assert.ok(stats.logins > 0);
    assert.ok(stats.denied >= 4);
    assert.ok((stats.drac.events["prog-mismatch"] ?? 0) >= 2);
    assert.ok(stats.drac.udpMessages > 0 && stats.drac.tcpMessages > 0);
  });
});

describe("DRAC server: bad peers and limits", () => {
  it("drops a datagram that is not a call, and keeps serving", async () => {
    const { server } = await start();
    try {
      const where = parseListenAddress(server.address);
      const socket = dgram.createSocket("udp4");
      const port = "port" in where ? where.port : 0;
      socket.send(hex("00 00 00 01 00 00 00 01"), port, "127.0.0.1");
      socket.send(Buffer.alloc(9000), port, "127.0.0.1");
      await waitFor(() => server.stats.drac.protocolErrors === 2, 2000, "two protocol errors");
      socket.close();
      assert.equal(
        await dracAdd(server.address, "203.0.113.5", { localAddress: ALLOWED }),
        ADD_SUCCESS,
      );
    } finally {
      await server.close();
    }
  });

  it("closes a TCP connection announcing a huge fragment, after 4 bytes", async () => {
    const { server } = await start();
    try {
      const socket = net.connect(tcpWhere(server));
      await once(socket, "connect");
      socket.write(hex("ff ff ff ff"));
      await once(socket, "close");
      assert.equal(server.stats.drac.protocolErrors, 1);
    } finally {
      await server.close();
    }
  });

  it("answers pipelined and fragmented TCP calls in order", async () => {
    const { server, logins } = await start();
    try {
      const socket = net.connect({ ...tcpWhere(server), localAddress: ALLOWED });
      await once(socket, "connect");
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      const wire = Buffer.concat([encodeRecord(CALL_V1, 7), encodeRecord(CALL_V1)]);
      for (const b of wire) socket.write(Buffer.from([b]));
      await waitFor(() => Buffer.concat(chunks).length === 64, 2000, "two replies");
      assert.equal(logins.length, 2);
      socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("refuses TCP connections beyond maxConnections", async () => {
    const { server } = await start({ maxConnections: 1 });
    try {
      const first = net.connect(tcpWhere(server));
      await once(first, "connect");
      await waitFor(() => server.stats.drac.connections === 1, 2000, "first connection");
      const second = net.connect(tcpWhere(server));
      second.on("error", () => undefined);
      await once(second, "close");
      assert.equal(server.stats.drac.rejected, 1);
      first.destroy();
    } finally {
      await server.close();
    }
  });

  it("closes idle connections and trickled records", async () => {
    const { server } = await start({ idleTimeoutMs: 100, recordTimeoutMs: 100 });
    try {
      const idle = net.connect(tcpWhere(server));
      await once(idle, "close");
      const trickle = net.connect(tcpWhere(server));
      await once(trickle, "connect");
      const timer = setInterval(() => trickle.write(hex("00")), 30);
      trickle.write(hex("80 00 00 2c"));
      await once(trickle, "close");
      clearInterval(timer);
      assert.equal(server.stats.drac.timeouts, 2);
    } finally {
      await server.close();
    }
  });

  it("a throwing sink changes nothing for the caller", async () => {
    const { server } = await start({
      sink: {
        login: () => {
          throw new Error("publisher down");
        },
      },
    });
    try {
      assert.equal(
        await dracAdd(server.address, "203.0.113.5", { localAddress: ALLOWED }),
        ADD_SUCCESS,
      );
      assert.equal(
        await dracAdd(server.address, "203.0.113.5", { transport: "tcp", localAddress: ALLOWED }),
        ADD_SUCCESS,
      );
      await waitFor(() => server.stats.sinkErrors === 2, 2000, "two sink errors");
    } finally {
      await server.close();
    }
  });

  it("the allow list may be a function, read on every call", async () => {
    let text = `255.255.255.255 ${OUTSIDE}\n`;
    const { server } = await start({ allowList: () => parseAllowList(text).list });
    try {
      assert.equal(
        await dracAdd(server.address, "203.0.113.5", { localAddress: ALLOWED }),
        ADD_PERM,
      );
      text = `255.255.255.255 ${ALLOWED}\n`;
      assert.equal(
        await dracAdd(server.address, "203.0.113.5", { localAddress: ALLOWED }),
        ADD_SUCCESS,
      );
    } finally {
      await server.close();
    }
  });

  it("refuses a unix socket path and a busy port", async () => {
    await assert.rejects(start({ listen: "/tmp/drac.sock" }), /ONC RPC needs host:port/);
    const { server } = await start();
    try {
      await assert.rejects(start({ listen: server.address }), /EADDRINUSE/);
      await assert.rejects(start({ portmapListen: server.address }), /EADDRINUSE/);
    } finally {
      await server.close();
    }
  });

  it("IPv6 listener: registered for udp6/tcp6, v2 over IPv6", async () => {
    const { server, logins } = await start({
      listen: "[::1]:0",
      portmapListen: "[::1]:0",
      allowList: parseAllowList("::1\n").list,
    });
    try {
      assert.deepEqual([...new Set(server.registrations.map((r) => r.netid))], ["udp6", "tcp6"]);
      assert.equal(await dracAdd(server.address, "2001:db8::9"), ADD_SUCCESS);
      const port = server.port;
      assert.equal(
        await rpcbGetAddr(server.portmapAddress ?? "", DRACPROG, 2, "udp6"),
        `::1.${port >> 8}.${port & 0xff}`,
      );
      await waitFor(() => logins.length === 1, 2000, "the login");
    } finally {
      await server.close();
    }
  });
});

function tcpWhere(server: DracServer): { host: string; port: number } {
  return { host: "127.0.0.1", port: server.port };
}
