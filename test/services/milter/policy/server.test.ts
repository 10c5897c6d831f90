import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startPolicyServer } from "../../../../services/milter/policy/server.ts";
import type {
  PolicyServer,
  PolicyServerOptions,
} from "../../../../services/milter/policy/server.ts";
import {
  encodePolicyRequest,
  type PolicyRequest,
} from "../../../../services/milter/policy/codec.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../../../support/policy-client.ts";

const LEASED = "203.0.113.5";

/** Stands in for the decision: OK for the leased address, DUNNO for any other. */
function answer(request: PolicyRequest): string {
  return request.get("client_address") === LEASED ? "OK" : "DUNNO";
}

interface Started {
  server: PolicyServer;
  logs: { level: number; msg: string }[];
}

async function start(options: Partial<PolicyServerOptions> = {}): Promise<Started> {
  const logs: Started["logs"] = [];
  const stream = { write: (line: string) => logs.push(JSON.parse(line) as Started["logs"][0]) };
  const server = await startPolicyServer({
    listen: "127.0.0.1:0",
    answer,
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

const leased = { ...POSTFIX_RCPT_REQUEST, client_address: LEASED };

describe("policy server on TCP", () => {
  let started: Started;
  before(async () => (started = await start()));
  after(() => started.server.close());

  it("answers a Postfix RCPT request by its client_address", async () => {
    const client = await PolicyClient.connect(started.server.address);
    try {
      assert.equal(await client.query(leased), "OK");
      assert.equal(await client.query(POSTFIX_RCPT_REQUEST), "DUNNO", "127.0.0.3 has no lease");
    } finally {
      await client.close();
    }
  });

  it("answers pipelined requests in one write, in order", async () => {
    const socket = await connectRaw(started.server.address);
    const request = (address: string) =>
      Object.entries({ ...POSTFIX_RCPT_REQUEST, client_address: address })
        .map(([k, v]) => `${k}=${v}\n`)
        .join("");
    socket.end(`${request(LEASED)}\n${request("198.51.100.7")}\n${request(LEASED)}\n`);
    assert.equal(
      await readUntilClosed(socket),
      "action=OK\n\naction=DUNNO\n\naction=OK\n\n",
      "half-closed by the peer, the server still replies, then closes",
    );
  });

  it("closes a connection that sends garbage; another keeps working", async () => {
    const good = await PolicyClient.connect(started.server.address);
    const bad = await connectRaw(started.server.address);
    const errorsBefore = started.server.stats.protocolErrors;
    bad.write("GET / HTTP/1.1\r\nHost: relaylease\r\n\r\n");
    assert.equal(await readUntilClosed(bad), "", "no reply to garbage");
    assert.equal(started.server.stats.protocolErrors, errorsBefore + 1);
    const warning = started.logs.find((l) => l.msg.includes("protocol error"));
    assert.equal(warning?.level, 40, "logged as a warning");
    assert.equal(await good.query(leased), "OK");
    await good.close();
  });

  it("closes a connection whose line outgrows the limit before any newline", async () => {
    const socket = await connectRaw(started.server.address);
    socket.write(`client_address=${"1".repeat(10_000)}`);
    assert.equal(await readUntilClosed(socket), "");
  });

  it("counts requests and connections", async () => {
    const { stats } = started.server;
    const before = { requests: stats.requests, accepted: stats.accepted };
    const client = await PolicyClient.connect(started.server.address);
    await client.query(leased);
    await client.close();
    assert.equal(stats.requests, before.requests + 1);
    assert.equal(stats.accepted, before.accepted + 1);
  });
});

describe("policy server: answers", () => {
  it("answers pipelined requests in order, in one write", async () => {
    const { server } = await start({ answer: (request) => `DUNNO ${request.get("i") ?? ""}` });
    const socket = await connectRaw(server.address);
    socket.write(Buffer.concat([0, 1, 2, 3].map((i) => encodePolicyRequest({ i: String(i) }))));
    socket.end();
    assert.equal(
      await readUntilClosed(socket),
      "action=DUNNO 0\n\naction=DUNNO 1\n\naction=DUNNO 2\n\naction=DUNNO 3\n\n",
    );
    await server.close();
  });

  it("closes the connection when answer throws, and logs an error", async () => {
    const { server, logs } = await start({
      answer: () => {
        throw new Error("mirror exploded");
      },
    });
    const client = await PolicyClient.connect(server.address);
    await assert.rejects(client.query(leased), /closed/);
    assert.equal(server.stats.answerErrors, 1);
    assert.ok(logs.some((l) => l.level === 50 && l.msg.includes("answer failed")));
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

  it("keeps a connection that asks more often than idleTimeoutMs, each request restarting it", async () => {
    const { server } = await start({ idleTimeoutMs: 100 });
    const client = await PolicyClient.connect(server.address);
    const leased = { ...POSTFIX_RCPT_REQUEST, client_address: LEASED };
    for (let i = 0; i < 8; i++) {
      assert.equal(await client.query(leased), "OK"); // 8 x 40 ms: past 100 ms in all
      await sleep(40);
    }
    await sleep(200);
    await assert.rejects(client.query(leased), /closed/);
    await server.close();
  });
});

describe("policy server: open connections", () => {
  // The server keeps its open connections in an array each knows its place in; closing some out
  // of order must leave the others known to the idle sweep and to close().
  async function openSome(server: PolicyServer, count: number) {
    const sockets = await Promise.all(
      Array.from({ length: count }, () => connectRaw(server.address)),
    );
    await waitFor(`${count} connections`, () => server.stats.connections === count);
    return sockets;
  }

  it("sweeps every connection left after others closed out of order", async () => {
    const { server } = await start({ idleTimeoutMs: 300 });
    const sockets = await openSome(server, 5);
    for (const i of [3, 0, 1]) sockets[i]?.destroy();
    await waitFor("two left", () => server.stats.connections === 2);
    const left = [2, 4].map((i) => readUntilClosed(sockets[i] as net.Socket));
    assert.deepEqual(await Promise.all(left), ["", ""]);
    await waitFor("none left", () => server.stats.connections === 0);
    await server.close();
  });

  it("close() ends every connection left after others closed out of order", async () => {
    const { server } = await start();
    const sockets = await openSome(server, 5);
    for (const i of [4, 1]) sockets[i]?.destroy();
    await waitFor("three left", () => server.stats.connections === 3);
    const left = [0, 2, 3].map((i) => readUntilClosed(sockets[i] as net.Socket));
    await server.close();
    assert.deepEqual(await Promise.all(left), ["", "", ""]);
  });
});

describe("policy server: connection limit", () => {
  it("closes connections beyond maxConnections at once and counts them", async () => {
    const { server, logs } = await start({ maxConnections: 2 });
    const a = await PolicyClient.connect(server.address);
    const b = await PolicyClient.connect(server.address);
    await waitFor("two connections", () => server.stats.connections === 2);
    for (let i = 0; i < 3; i++) {
      assert.equal(await readUntilClosed(await connectRaw(server.address)), "");
    }
    assert.equal(server.stats.rejected, 3);
    const warnings = logs.filter((l) => l.msg.includes("connection limit"));
    assert.equal(warnings.length, 1, "one warning per episode");
    assert.equal(await a.query(leased), "OK", "open connections keep working");
    await b.close();
    await waitFor("a free slot", () => server.stats.connections === 1);
    const c = await PolicyClient.connect(server.address);
    assert.equal(await c.query(leased), "OK");
    await Promise.all([a.close(), c.close()]);
    await server.close();
  });
});

describe("policy server: close()", () => {
  it("ends idle connections and stops listening", async () => {
    const { server } = await start();
    const socket = await connectRaw(server.address);
    const closed = readUntilClosed(socket);
    await server.close();
    assert.equal(await closed, "");
    await assert.rejects(connectRaw(server.address), /ECONNREFUSED/);
    await server.close(); // a second close is harmless
  });

  it("destroys a connection whose replies are not flushed after closeTimeoutMs", async () => {
    // A peer that pipelines without reading: replies pile up until the kernel buffers are full.
    const { server } = await start({
      answer: () => `DUNNO ${"x".repeat(4000)}`,
      closeTimeoutMs: 100,
    });
    const socket = await connectRaw(server.address);
    socket.pause();
    const request = encodePolicyRequest(leased);
    for (let i = 0; i < 4000; i++) socket.write(request);
    await waitFor("a write that waits for the peer", () => server.stats.requests > 100);
    await sleep(200);
    const started = Date.now();
    await server.close();
    assert.ok(Date.now() - started < 1000, "close() waited for a peer that does not read");
    socket.destroy();
  });
});

describe("policy server on a unix socket", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "relaylease-policy-"))));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("answers over the socket and removes it on close", async () => {
    const path = join(dir, "policy.sock");
    const { server } = await start({ listen: path });
    assert.equal(server.address, path);
    // Open to all users (the MTA is another user); the directory limits who reaches it.
    assert.equal(statSync(path).mode & 0o666, 0o666);
    const client = await PolicyClient.connect(path);
    assert.equal(await client.query(leased), "OK");
    await client.close();
    await server.close();
    assert.equal(existsSync(path), false);
  });

  it("replaces a stale socket left by a killed process", async () => {
    const path = join(dir, "stale.sock");
    await leaveStaleSocket(path);
    const { server } = await start({ listen: path });
    const client = await PolicyClient.connect(path);
    assert.equal(await client.query(leased), "OK");
    await client.close();
    await server.close();
  });

  it("refuses a path that is not a socket, and leaves it alone", async () => {
    const path = join(dir, "file");
    writeFileSync(path, "keep me");
    await assert.rejects(start({ listen: path }), /not a unix socket/);
    assert.ok(existsSync(path));
  });

  it("refuses a socket another server is listening on", async () => {
    const path = join(dir, "live.sock");
    const { server } = await start({ listen: path });
    await assert.rejects(start({ listen: path }), /in use/);
    await server.close();
  });
});

/** A socket file whose owner died without unlinking it, as after a crash or SIGKILL. */
async function leaveStaleSocket(path: string): Promise<void> {
  const script = `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`;
  const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
  await once(child, "exit");
  assert.ok(existsSync(path), "the killed process left its socket behind");
}

describe("parseListenAddress", () => {
  const good: [string, ReturnType<typeof parseListenAddress>][] = [
    ["127.0.0.1:10040", { host: "127.0.0.1", port: 10040 }],
    ["localhost:0", { host: "localhost", port: 0 }],
    ["[::1]:10040", { host: "::1", port: 10040 }],
    ["[::]:65535", { host: "::", port: 65535 }],
    ["/run/relaylease/policy.sock", { path: "/run/relaylease/policy.sock" }],
    ["./policy.sock", { path: "./policy.sock" }],
  ];
  for (const [input, expected] of good) {
    it(`parses ${input}`, () => {
      assert.deepEqual(parseListenAddress(input), expected);
    });
  }

  const bad = [
    "",
    "10040",
    "127.0.0.1",
    "127.0.0.1:",
    ":10040",
    "127.0.0.1:65536",
    "127.0.0.1:port",
    "::1:10040",
    "[::1]",
    "[127.0.0.1]:10040",
    "inet:127.0.0.1:10040",
    "unix:/run/policy.sock",
    `/${"x".repeat(107)}`,
  ];
  for (const input of bad) {
    it(`refuses ${JSON.stringify(input)}, naming it`, () => {
      assert.throws(
        () => parseListenAddress(input),
        (err: unknown) => err instanceof Error && err.message.includes(JSON.stringify(input)),
      );
    });
  }
});
