import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startWhosonServer } from "../../../../services/milter/whoson/server.ts";
import type {
  WhosonServer,
  WhosonServerOptions,
} from "../../../../services/milter/whoson/server.ts";
import type { WhosonLookup } from "../../../../services/milter/whoson/session.ts";
import { parseNetworkList } from "../../../../shared/address.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { WhosonTcpClient, WhosonUdpClient } from "../../../support/whoson-client.ts";

const LEASED = "203.0.113.5";
const STALE = "198.51.100.66";
const EXPIRES_AT = Date.UTC(2026, 0, 1);
const ALICE = { status: "+", text: "alice" } as const;
const NOT_LOGGED_IN = { status: "-", text: "Not Logged in" } as const;

/** Stands in for the decision: a lease for LEASED (any spelling), stale for STALE. */
const lookup: WhosonLookup = ({ text }) => {
  if (text === LEASED || text === "2001:db8::1") {
    return { kind: "leased", expiresAt: EXPIRES_AT, user: "alice" };
  }
  return text === STALE ? { kind: "stale" } : { kind: "not-leased" };
};

interface Started {
  server: WhosonServer;
  logs: { level: number; msg: string }[];
}

async function start(options: Partial<WhosonServerOptions> = {}): Promise<Started> {
  const logs: Started["logs"] = [];
  const stream = { write: (line: string) => logs.push(JSON.parse(line) as Started["logs"][0]) };
  const server = await startWhosonServer({
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
  socket.on("data", (chunk: Buffer) => (text += chunk.toString("utf8")));
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

describe("whoson server on TCP and UDP", () => {
  let started: Started;
  before(async () => (started = await start()));
  after(() => started.server.close());

  it("serves UDP on the TCP port", () => {
    assert.equal(started.server.udpAddress, started.server.address);
  });

  it("answers several queries on one TCP connection", async () => {
    const client = await WhosonTcpClient.connect(started.server.address);
    try {
      assert.deepEqual(await client.query(LEASED), ALICE);
      assert.deepEqual(await client.query("198.51.100.7"), NOT_LOGGED_IN);
      assert.deepEqual(await client.query("2001:DB8::1"), ALICE);
      assert.deepEqual(await client.query("unknown"), NOT_LOGGED_IN);
      assert.deepEqual(await client.query(STALE), {
        status: "*",
        text: "Lease information unavailable (mirror stale)",
      });
    } finally {
      await client.close();
    }
  });

  it("answers one query per datagram", async () => {
    const client = await WhosonUdpClient.open(started.server.udpAddress ?? "");
    try {
      assert.deepEqual(await client.query(LEASED), ALICE);
      assert.deepEqual(await client.query("198.51.100.7"), NOT_LOGGED_IN);
      assert.deepEqual(await client.send("query 203.0.113.5"), ALICE, "no line ending, any case");
      assert.deepEqual(await client.send("LOGIN 192.0.2.1 mallory\r\n\r\n"), {
        status: "*",
        text: "Refused: relay leases come from POP/IMAP logins only",
      });
    } finally {
      await client.close();
    }
  });

  it("sends the exact bytes, CRLF and the empty line", async () => {
    const socket = await connectRaw(started.server.address);
    socket.end("QUERY 203.0.113.5\r\n\r\nQUERY 192.0.2.1\n\n");
    assert.equal(
      await readUntilClosed(socket),
      "+alice\r\n\r\n-Not Logged in\r\n\r\n",
      "half-closed by the peer, the server still replies, then closes",
    );
    const udp = await WhosonUdpClient.open(started.server.address);
    const raw = await udp.sendRaw("QUERY 203.0.113.5\r\n\r\n");
    assert.equal(raw?.toString(), "+alice\r\n\r\n");
    await udp.close();
  });

  it("refuses LOGIN and LOGOUT, and ends the connection after QUIT", async () => {
    const before = started.server.stats.refused;
    const socket = await connectRaw(started.server.address);
    socket.write(
      "LOGIN 192.0.2.1 mallory\r\n\r\nLOGOUT 203.0.113.5\r\n\r\nQUIT\r\n\r\nQUERY 203.0.113.5\r\n\r\n",
    );
    assert.equal(
      await readUntilClosed(socket),
      "*Refused: relay leases come from POP/IMAP logins only\r\n\r\n".repeat(2) +
        "+QUIT OK\r\n\r\n",
    );
    assert.equal(started.server.stats.refused, before + 2);
  });

  it("closes a TCP connection that sends garbage; another keeps working", async () => {
    const good = await WhosonTcpClient.connect(started.server.address);
    const bad = await connectRaw(started.server.address);
    const errorsBefore = started.server.stats.protocolErrors;
    bad.write("GET / HTTP/1.1\r\nHost: relaylease\r\n\r\n");
    assert.equal(await readUntilClosed(bad), "", "no reply to garbage");
    assert.equal(started.server.stats.protocolErrors, errorsBefore + 1);
    const warning = started.logs.find((l) => l.msg.includes("protocol error"));
    assert.equal(warning?.level, 40, "logged as a warning");
    assert.deepEqual(await good.query(LEASED), ALICE);
    await good.close();
  });

  it("closes a TCP connection whose line outgrows the limit before any newline", async () => {
    const socket = await connectRaw(started.server.address);
    socket.write(`QUERY ${"1".repeat(10_000)}`);
    assert.equal(await readUntilClosed(socket), "");
  });

  it("drops garbage datagrams without a reply; good ones still get theirs", async () => {
    const client = await WhosonUdpClient.open(started.server.udpAddress ?? "");
    const before = started.server.stats.protocolErrors;
    for (const garbage of ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\0\0\0\0", "", "x".repeat(2000)]) {
      assert.equal(await client.sendRaw(garbage, 100), undefined, JSON.stringify(garbage));
    }
    assert.equal(started.server.stats.protocolErrors, before + 4);
    assert.deepEqual(await client.query(LEASED), ALICE);
    await client.close();
  });

  it("counts requests by outcome, TCP and UDP together", async () => {
    const { stats } = started.server;
    const before = { ...stats };
    const tcp = await WhosonTcpClient.connect(started.server.address);
    const udp = await WhosonUdpClient.open(started.server.address);
    await tcp.query(LEASED);
    await udp.query("192.0.2.9");
    await udp.query(STALE);
    await tcp.request("LIST");
    await Promise.all([tcp.close(), udp.close()]);
    assert.equal(stats.requests, before.requests + 4);
    assert.equal(stats.leased, before.leased + 1);
    assert.equal(stats.notLoggedIn, before.notLoggedIn + 1);
    assert.equal(stats.stale, before.stale + 1);
    assert.equal(stats.unknownCommands, before.unknownCommands + 1);
    assert.equal(stats.datagrams, before.datagrams + 2);
    assert.equal(stats.accepted, before.accepted + 1);
  });
});

describe("whoson server: lookups", () => {
  it("answers * when the lookup throws, logs an error, and keeps going", async () => {
    let calls = 0;
    const { server, logs } = await start({
      lookup: () => {
        if (++calls <= 2) throw new Error("mirror exploded");
        return { kind: "not-leased" };
      },
    });
    const tcp = await WhosonTcpClient.connect(server.address);
    const udp = await WhosonUdpClient.open(server.address);
    const failed = { status: "*", text: "Lease lookup failed" };
    assert.deepEqual(await tcp.query(LEASED), failed);
    assert.deepEqual(await udp.query(LEASED), failed);
    assert.equal(server.stats.lookupErrors, 2);
    assert.ok(logs.some((l) => l.level === 50 && l.msg.includes("lookup failed")));
    assert.deepEqual(await tcp.query(LEASED), NOT_LOGGED_IN);
    await Promise.all([tcp.close(), udp.close()]);
    await server.close();
  });

  it("drops a TCP connection idle past idleTimeoutMs", async () => {
    const { server } = await start({ idleTimeoutMs: 50 });
    const socket = await connectRaw(server.address);
    const started = Date.now();
    assert.equal(await readUntilClosed(socket), "");
    assert.ok(Date.now() - started >= 40);
    await server.close();
  });

  it("serves TCP alone when udp is false", async () => {
    const { server } = await start({ udp: false });
    assert.equal(server.udpAddress, undefined);
    const client = await WhosonUdpClient.open(server.address, 100);
    await assert.rejects(client.query(LEASED), /no whoson reply/);
    await client.close();
    await server.close();
  });
});

describe("whoson server: allow", () => {
  it("answers peers inside the allowed networks", async () => {
    const { server } = await start({ allow: parseNetworkList("10.0.0.0/8, 127.0.0.0/8") });
    const tcp = await WhosonTcpClient.connect(server.address);
    const udp = await WhosonUdpClient.open(server.address);
    assert.deepEqual(await tcp.query(LEASED), ALICE);
    assert.deepEqual(await udp.query(LEASED), ALICE);
    await Promise.all([tcp.close(), udp.close()]);
    await server.close();
  });

  it("tells a TCP peer outside Access denied and drops its datagrams silently", async () => {
    const { server } = await start({ allow: parseNetworkList("10.0.0.0/8") });
    const socket = await connectRaw(server.address);
    assert.equal(await readUntilClosed(socket), "*Access denied\r\n\r\n");
    const udp = await WhosonUdpClient.open(server.address);
    assert.equal(await udp.sendRaw("QUERY 203.0.113.5\r\n\r\n", 100), undefined);
    assert.equal(server.stats.denied, 2);
    assert.equal(server.stats.requests, 0);
    await udp.close();
    await server.close();
  });
});

describe("whoson server: connection limit", () => {
  it("closes connections beyond maxConnections at once and counts them", async () => {
    const { server, logs } = await start({ maxConnections: 2 });
    const a = await WhosonTcpClient.connect(server.address);
    const b = await WhosonTcpClient.connect(server.address);
    await waitFor("two connections", () => server.stats.connections === 2);
    for (let i = 0; i < 3; i++) {
      assert.equal(await readUntilClosed(await connectRaw(server.address)), "");
    }
    assert.equal(server.stats.rejected, 3);
    const warnings = logs.filter((l) => l.msg.includes("connection limit"));
    assert.equal(warnings.length, 1, "one warning per episode");
    assert.deepEqual(await a.query(LEASED), ALICE, "open connections keep working");
    const udp = await WhosonUdpClient.open(server.address);
    assert.deepEqual(await udp.query(LEASED), ALICE, "UDP is not limited by connections");
    await b.close();
    await waitFor("a free slot", () => server.stats.connections === 1);
    const c = await WhosonTcpClient.connect(server.address);
    assert.deepEqual(await c.query(LEASED), ALICE);
    await Promise.all([a.close(), c.close(), udp.close()]);
    await server.close();
  });
});

describe("whoson server: close()", () => {
  it("ends idle connections and stops listening on TCP and UDP", async () => {
    const { server } = await start();
    const socket = await connectRaw(server.address);
    const closed = readUntilClosed(socket);
    await server.close();
    assert.equal(await closed, "");
    await assert.rejects(connectRaw(server.address), /ECONNREFUSED/);
    const udp = await WhosonUdpClient.open(server.address, 100);
    await assert.rejects(udp.query(LEASED), /no whoson reply|ECONNREFUSED/);
    await udp.close();
    await server.close(); // a second close is harmless
  });
});

describe("whoson server on a unix socket", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "relaylease-whoson-"))));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers over the stream socket, serves no UDP, and removes it on close", async () => {
    const path = join(dir, "whoson.sock");
    const { server } = await start({ listen: path, allow: parseNetworkList("10.0.0.0/8") });
    assert.equal(server.address, path);
    assert.equal(server.udpAddress, undefined);
    const client = await WhosonTcpClient.connect(path);
    assert.deepEqual(await client.query(LEASED), ALICE, "allow does not apply to a unix socket");
    await client.close();
    await server.close();
    assert.equal(existsSync(path), false);
  });
});
