import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startSocketmapServer } from "../../../../services/milter/socketmap/server.ts";
import type {
  SocketmapServer,
  SocketmapServerOptions,
} from "../../../../services/milter/socketmap/server.ts";
import type { SocketmapLookup } from "../../../../services/milter/socketmap/session.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { SocketmapClient } from "../../../support/socketmap-client.ts";

const LEASED = "203.0.113.5";
const STALE = "198.51.100.66";
const EXPIRES_AT = Date.UTC(2026, 0, 1); // 1767225600 s
const OK = { status: "OK", value: "1767225600" } as const;
const NOTFOUND = { status: "NOTFOUND" } as const;

/** Stands in for the decision: a lease for LEASED (any spelling), stale for STALE. */
const lookup: SocketmapLookup = ({ text }) => {
  if (text === LEASED || text === "2001:db8::1") {
    return { kind: "leased", expiresAt: EXPIRES_AT, user: "alice" };
  }
  return text === STALE ? { kind: "stale" } : { kind: "not-leased" };
};

interface Started {
  server: SocketmapServer;
  logs: { level: number; msg: string }[];
}

async function start(options: Partial<SocketmapServerOptions> = {}): Promise<Started> {
  const logs: Started["logs"] = [];
  const stream = { write: (line: string) => logs.push(JSON.parse(line) as Started["logs"][0]) };
  const server = await startSocketmapServer({
    listen: "127.0.0.1:0",
    lookup,
    log: pino({ level: "debug" }, stream),
    ...options,
  });
  return { server, logs };
}

function connectRaw(address: string): Promise<net.Socket> {
  const socket = net.connect(parseListenAddress(address));
  return once(socket, "connect").then(() => socket);
}

/** Everything the server sends until it closes the connection. */
async function readUntilClosed(socket: net.Socket): Promise<string> {
  let text = "";
  socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
  socket.on("error", () => undefined);
  await once(socket, "close");
  return text;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe("socketmap server on TCP", () => {
  let started: Started;
  before(async () => (started = await start()));
  after(() => started.server.close());

  it("answers the lookups Postfix and Sendmail make on one connection", async () => {
    const client = await SocketmapClient.connect(started.server.address);
    try {
      assert.deepEqual(await client.lookup("drac", "unknown"), NOTFOUND, "Postfix host name");
      assert.deepEqual(await client.lookup("drac", LEASED), OK, "leased: OK <epoch seconds>");
      assert.deepEqual(await client.lookup("drac", "198.51.100.7"), NOTFOUND, "no lease");
      assert.deepEqual(
        await client.lookup("drac", "ipv6:2001:db8:0:0:0:0:0:1"),
        OK,
        "Sendmail IPv6 key",
      );
      assert.deepEqual(await client.lookup("drac", STALE), {
        status: "TEMP",
        reason: "lease mirror stale, address not known",
      });
    } finally {
      await client.close();
    }
  });

  it("sends the exact bytes: OK with the expiry, NOTFOUND with its space", async () => {
    const socket = await connectRaw(started.server.address);
    socket.end("16:drac 203.0.113.5,12:drac unknown,");
    assert.equal(
      await readUntilClosed(socket),
      "13:OK 1767225600,9:NOTFOUND ,",
      "half-closed by the peer, the server still replies, then closes",
    );
  });

  it("answers PERM to a malformed request and keeps the connection", async () => {
    const client = await SocketmapClient.connect(started.server.address);
    const errorsBefore = started.server.stats.malformed;
    assert.deepEqual(await client.send(Buffer.from("4:drac,")), {
      status: "PERM",
      reason: "no space between map name and key",
    });
    assert.equal(started.server.stats.malformed, errorsBefore + 1);
    assert.deepEqual(await client.lookup("drac", LEASED), OK);
    await client.close();
  });

  it("closes a connection that sends garbage; another keeps working", async () => {
    const good = await SocketmapClient.connect(started.server.address);
    const bad = await connectRaw(started.server.address);
    const errorsBefore = started.server.stats.protocolErrors;
    bad.write("GET / HTTP/1.1\r\nHost: relaylease\r\n\r\n");
    assert.equal(await readUntilClosed(bad), "", "no reply to garbage");
    assert.equal(started.server.stats.protocolErrors, errorsBefore + 1);
    const warning = started.logs.find((l) => l.msg.includes("protocol error"));
    assert.equal(warning?.level, 40, "logged as a warning");
    assert.deepEqual(await good.lookup("drac", LEASED), OK);
    await good.close();
  });

  for (const [name, bytes] of [
    ["an oversized length, before any payload", "1025:"],
    ["a missing comma", "16:drac 203.0.113.5;"],
    ["a leading zero", "016:drac 203.0.113.5,"],
    ["a non-digit length", "x:"],
  ] as const) {
    it(`closes a connection on ${name}`, async () => {
      const socket = await connectRaw(started.server.address);
      socket.write(bytes);
      assert.equal(await readUntilClosed(socket), "");
    });
  }

  it("counts requests by outcome, and connections", async () => {
    const { stats } = started.server;
    const before = { ...stats };
    const client = await SocketmapClient.connect(started.server.address);
    await client.lookup("drac", LEASED);
    await client.lookup("drac", "localhost");
    await client.lookup("drac", "192.0.2.9");
    await client.lookup("drac", STALE);
    await client.close();
    assert.equal(stats.requests, before.requests + 4);
    assert.equal(stats.leased, before.leased + 1);
    assert.equal(stats.notFound, before.notFound + 2);
    assert.equal(stats.stale, before.stale + 1);
    assert.equal(stats.accepted, before.accepted + 1);
  });
});

describe("socketmap server: lookups", () => {
  it("answers TEMP when the lookup throws, logs an error, and keeps the connection", async () => {
    let calls = 0;
    const { server, logs } = await start({
      lookup: () => {
        if (++calls === 1) throw new Error("mirror exploded");
        return { kind: "not-leased" };
      },
    });
    const client = await SocketmapClient.connect(server.address);
    assert.deepEqual(await client.lookup("drac", LEASED), {
      status: "TEMP",
      reason: "lease lookup failed",
    });
    assert.equal(server.stats.lookupErrors, 1);
    assert.ok(logs.some((l) => l.level === 50 && l.msg.includes("lookup failed")));
    assert.deepEqual(await client.lookup("drac", LEASED), NOTFOUND);
    await client.close();
    await server.close();
  });

  it("answers pipelined lookups in order", async () => {
    const { server } = await start({
      lookup: ({ bytes }) => ({ kind: "leased", expiresAt: ((bytes[3] ?? 0) + 1) * 1000 }),
    });
    const client = await SocketmapClient.connect(server.address);
    const replies = await Promise.all(
      [0, 1, 2, 3].map((i) => client.lookup("drac", `10.0.0.${i}`)),
    );
    assert.deepEqual(
      replies.map((r) => ("value" in r ? r.value : r.status)),
      ["1", "2", "3", "4"],
    );
    await client.close();
    await server.close();
  });

  it("answers PERM for a map name not configured", async () => {
    const { server } = await start({ mapNames: ["drac"] });
    const client = await SocketmapClient.connect(server.address);
    assert.deepEqual(await client.lookup("relay", LEASED), {
      status: "PERM",
      reason: 'unknown map name "relay"',
    });
    assert.deepEqual(await client.lookup("drac", LEASED), OK);
    await client.close();
    await server.close();
  });

  it("drops a connection idle past idleTimeoutMs", async () => {
    const { server } = await start({ idleTimeoutMs: 50 });
    const socket = await connectRaw(server.address);
    const started = Date.now();
    assert.equal(await readUntilClosed(socket), "");
    assert.ok(Date.now() - started >= 40);
    await server.close();
  });
});

describe("socketmap server: connection limit", () => {
  it("closes connections beyond maxConnections at once and counts them", async () => {
    const { server, logs } = await start({ maxConnections: 2 });
    const a = await SocketmapClient.connect(server.address);
    const b = await SocketmapClient.connect(server.address);
    await waitFor("two connections", () => server.stats.connections === 2);
    for (let i = 0; i < 3; i++) {
      assert.equal(await readUntilClosed(await connectRaw(server.address)), "");
    }
    assert.equal(server.stats.rejected, 3);
    const warnings = logs.filter((l) => l.msg.includes("connection limit"));
    assert.equal(warnings.length, 1, "one warning per episode");
    assert.deepEqual(await a.lookup("drac", LEASED), OK, "open connections keep working");
    await b.close();
    await waitFor("a free slot", () => server.stats.connections === 1);
    const c = await SocketmapClient.connect(server.address);
    assert.deepEqual(await c.lookup("drac", LEASED), OK);
    await Promise.all([a.close(), c.close()]);
    await server.close();
  });
});

describe("socketmap server: close()", () => {
  it("ends idle connections and stops listening", async () => {
    const { server } = await start();
    const socket = await connectRaw(server.address);
    const closed = readUntilClosed(socket);
    await server.close();
    assert.equal(await closed, "");
    await assert.rejects(connectRaw(server.address), /ECONNREFUSED/);
    await server.close(); // a second close is harmless
  });
});

describe("socketmap server on a unix socket", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "relaylease-socketmap-"))));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers over the socket and removes it on close", async () => {
    const path = join(dir, "socketmap.sock");
    const { server } = await start({ listen: path });
    assert.equal(server.address, path);
    const client = await SocketmapClient.connect(path);
    assert.deepEqual(await client.lookup("drac", LEASED), OK);
    assert.deepEqual(await client.lookup("drac", "unknown"), NOTFOUND);
    await client.close();
    await server.close();
    assert.equal(existsSync(path), false);
  });

  it("closes a garbage connection while another keeps working", async () => {
    const path = join(dir, "garbage.sock");
    const { server } = await start({ listen: path });
    const good = await SocketmapClient.connect(path);
    const bad = await connectRaw(path);
    bad.write(Buffer.from([0x16, 0x03, 0x01, 0x00]));
    assert.equal(await readUntilClosed(bad), "");
    assert.deepEqual(await good.lookup("drac", LEASED), OK);
    await good.close();
    await server.close();
  });
});
