import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { leaseKey, parseAddress } from "../../../../shared/address.ts";
import type { Lease } from "../../../../shared/lease.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { DEFAULT_DECISION_CONFIG, decide } from "../../../../services/milter/decide.ts";
import type { RelayRequest } from "../../../../services/milter/decide.ts";
import { decodeReplies, encodeCommand } from "../../../../services/milter/milter-protocol/codec.ts";
import type { MilterCommand } from "../../../../services/milter/milter-protocol/codec.ts";
import { startMilterServer } from "../../../../services/milter/milter-protocol/server.ts";
import type {
  MilterServer,
  MilterServerOptions,
} from "../../../../services/milter/milter-protocol/server.ts";
import { MilterClient, replyVerdict } from "../../../support/milter-client.ts";
import { waitFor } from "../../../support/wait.ts";

const LEASED = "203.0.113.5";
const UNLEASED = "198.51.100.7";
const REJECT_TEXT = "Relaying denied: check your mail first";

const lease: Lease = {
  ip: LEASED,
  service: "imap",
  source: "test",
  watcher: "w",
  loginAt: 0,
  expiresAt: Number.MAX_SAFE_INTEGER,
  event: "e",
};
const leases = {
  lookup: (key: string) => (key === leaseKey(parseAddress(LEASED)) ? lease : undefined),
};
const config = { ...DEFAULT_DECISION_CONFIG, localDomains: new Set(["example.org"]) };

interface Started {
  server: MilterServer;
  logs: { level: number; msg: string }[];
}

async function start(options: Partial<MilterServerOptions> = {}): Promise<Started> {
  const logs: Started["logs"] = [];
  const stream = { write: (line: string) => logs.push(JSON.parse(line) as Started["logs"][0]) };
  const server = await startMilterServer({
    listen: "127.0.0.1:0",
    decide: (r: RelayRequest) => decide(leases, r, Date.now(), config),
    acceptAt: "connect",
    rejectText: REJECT_TEXT,
    log: pino({ level: "debug" }, stream),
    ...options,
  });
  return { server, logs };
}

/** A client past OPTNEG and CONNECT, as Postfix starts an SMTP session. */
async function session(address: string, client: string) {
  const c = await MilterClient.connect(address);
  await c.negotiate();
  const reply = await c.connectStep({ family: "4", address: client });
  return { c, connectVerdict: replyVerdict(reply) };
}

function connectRaw(address: string): Promise<net.Socket> {
  const socket = net.connect(parseListenAddress(address));
  socket.on("error", () => undefined);
  return once(socket, "connect").then(() => socket);
}

describe("milter server on TCP", () => {
  let started: Started;
  before(async () => (started = await start()));
  after(() => started.server.close());

  it("negotiates as the reference says: v6, SETSYMLIST, 0x376", async () => {
    const c = await MilterClient.connect(started.server.address);
    try {
      assert.deepEqual(await c.negotiate(), {
        version: 6,
        actions: 0x100,
        protocol: 0x376,
        symlists: [{ stage: 3, macros: "{rcpt_mailer} {auth_authen}" }],
      });
      assert.equal(c.skips("helo"), true);
      assert.equal(c.skips("mail"), true);
      assert.equal(c.skips("rcpt"), false);
    } finally {
      await c.close();
    }
  });

  it("turns TCP keep-alive on for each connection, as libmilter does", async () => {
    const socket = await connectRaw(started.server.address);
    try {
      const server = parseListenAddress(started.server.address);
      assert.ok("port" in server);
      // The server's end of this connection in /proc/net/tcp: local port the server's, remote
      // port ours. Its timer is 2 (keepalive) once SO_KEEPALIVE is on, else 0 while idle.
      const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, "0");
      const timerOfServerEnd = () => {
        const rows = readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1);
        const row = rows
          .map((line) => line.trim().split(/\s+/))
          .find(
            (f) =>
              f[1]?.endsWith(`:${hex(server.port)}`) === true &&
              f[2]?.endsWith(`:${hex(socket.localPort ?? 0)}`) === true,
          );
        return row?.[5]?.split(":")[0];
      };
      await waitFor(
        () => timerOfServerEnd() !== undefined,
        5000,
        "the server's end of the connection",
      );
      assert.equal(timerOfServerEnd(), "02", "the keepalive timer runs on the server's end");
    } finally {
      socket.destroy();
    }
  });

  it("accepts a leased client at CONNECT", async () => {
    const { c, connectVerdict } = await session(started.server.address, LEASED);
    assert.equal(connectVerdict, "accept");
    await c.close(); // Postfix closes without QUIT after an accept at CONNECT
  });

  it("rejects an unleased client's relay with 550 5.7.1, lets local mail through", async () => {
    const { c, connectVerdict } = await session(started.server.address, UNLEASED);
    try {
      assert.equal(connectVerdict, "continue");
      assert.equal(await c.helo("client.example"), undefined, "HELO skipped");
      assert.equal(await c.mail("a@example.org"), undefined, "MAIL skipped");
      const remote = await c.rcpt("b@remote.example", { "{rcpt_mailer}": "esmtp" });
      assert.deepEqual(remote, { type: "replycode", text: `550 5.7.1 ${REJECT_TEXT}` });
      const local = await c.rcpt("c@example.org", { "{rcpt_mailer}": "local" });
      assert.deepEqual(local, { type: "continue" });
      assert.deepEqual(await c.eom(), { type: "continue" });
      // A second message on the same connection, now authenticated.
      await c.abort();
      await c.mail("a@example.org", { "{auth_authen}": "alice" });
      const authed = await c.rcpt("b@remote.example", { "{rcpt_mailer}": "esmtp" });
      assert.deepEqual(authed, { type: "accept" });
      await c.abort();
      await c.abort();
      await c.quit(); // resolves once the server has closed the connection
    } finally {
      c.destroy();
    }
  });

  it("takes frames one byte per write", async () => {
    const raw = await connectRaw(started.server.address);
    let got = Buffer.alloc(0);
    raw.on("data", (chunk: Buffer) => (got = Buffer.concat([got, chunk])));
    const wire = Buffer.concat(
      [
        { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
        { type: "macro", stage: "C", macros: [["j", "mx"]] },
        { type: "connect", hostname: "h", family: "4", port: 1, address: UNLEASED },
      ].map((c) => encodeCommand(c as MilterCommand)),
    );
    for (const b of wire) {
      raw.write(Buffer.of(b));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await waitFor(() => decodeReplies(got).replies.length === 2, 2000, "two replies");
    assert.deepEqual(
      decodeReplies(got).replies.map((r) => r.type),
      ["optneg", "continue"],
    );
    raw.destroy();
  });

  it("closes only the connection that sends garbage, with a warning", async () => {
    const { c } = await session(started.server.address, UNLEASED);
    const before = started.server.stats.protocolErrors;
    const raw = await connectRaw(started.server.address);
    raw.write("GET / HTTP/1.0\r\n\r\n");
    await once(raw, "close");
    assert.equal(started.server.stats.protocolErrors, before + 1);
    const warning = started.logs.find((l) => l.msg === "milter protocol error; closing connection");
    assert.equal(warning?.level, 40);
    // The other session is unaffected.
    const reply = await c.rcpt("b@remote.example", { "{rcpt_mailer}": "esmtp" });
    assert.equal(replyVerdict(reply), "reject");
    await c.quit();
  });

  it("closes a connection sending length 0 or an unknown command", async () => {
    for (const junk of [Buffer.from("00000000", "hex"), Buffer.from("000000015a", "hex")]) {
      const raw = await connectRaw(started.server.address);
      raw.write(junk);
      await once(raw, "close");
    }
  });

  it("counts connections and decisions", async () => {
    const { c } = await session(started.server.address, UNLEASED);
    await waitFor(() => started.server.stats.connections >= 1, 1000, "connection counted");
    const before = started.server.stats.requests;
    await c.rcpt("b@remote.example");
    assert.equal(started.server.stats.requests, before + 1);
    await c.quit();
    await waitFor(() => started.server.stats.connections === 0, 1000, "connection gone");
  });
});

describe("milter server limits", () => {
  it("refuses connections beyond maxConnections and recovers", async () => {
    const { server, logs } = await start({ maxConnections: 2 });
    try {
      const a = await session(server.address, UNLEASED);
      const b = await session(server.address, UNLEASED);
      const third = await MilterClient.connect(server.address);
      await third.closed;
      assert.equal(server.stats.rejected, 1);
      assert.ok(logs.some((l) => l.msg === "milter connection limit reached"));
      await a.c.quit();
      await waitFor(() => server.stats.connections === 1, 1000, "a slot to free up");
      const d = await session(server.address, LEASED);
      assert.equal(d.connectVerdict, "accept");
      await Promise.all([b.c.close(), d.c.close()]);
    } finally {
      await server.close();
    }
  });

  it("drops a peer that does not negotiate in time", async () => {
    const { server } = await start({ negotiateTimeoutMs: 100 });
    try {
      const raw = await connectRaw(server.address);
      const t0 = Date.now();
      await once(raw, "close");
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await server.close();
    }
  });

  it("drops a peer that leaves a frame unfinished", async () => {
    const { server } = await start({ frameTimeoutMs: 100 });
    try {
      const c = await MilterClient.connect(server.address);
      await c.negotiate();
      c.writeRaw(Buffer.from("0000001052", "hex")); // a RCPT of 15 bytes that never come
      await c.closed;
    } finally {
      await server.close();
    }
  });

  it("answers 451 4.7.1 when the decision throws, and keeps serving", async () => {
    const { server, logs } = await start({
      decide: (r) => {
        if (r.stage === "rcpt") throw new Error("bug");
        return { verdict: "continue", reason: "not-leased" };
      },
    });
    try {
      const { c } = await session(server.address, UNLEASED);
      const reply = await c.rcpt("b@remote.example");
      assert.equal(replyVerdict(reply), "tempfail");
      assert.equal(server.stats.answerErrors, 1);
      assert.ok(logs.some((l) => l.level === 50));
      assert.equal(replyVerdict(await c.eom()), "continue");
      await c.quit();
    } finally {
      await server.close();
    }
  });

  it("close() ends open connections and stops listening", async () => {
    const { server } = await start();
    const { c } = await session(server.address, UNLEASED);
    await server.close();
    await c.closed;
    await assert.rejects(MilterClient.connect(server.address), /ECONNREFUSED/);
    await server.close(); // twice is fine
  });
});

describe("milter server on a unix socket", () => {
  const dir = mkdtempSync(join(tmpdir(), "relaylease-milter-"));
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves a session", async () => {
    const { server } = await start({ listen: join(dir, "milter.sock") });
    try {
      assert.equal(server.address, join(dir, "milter.sock"));
      const { c, connectVerdict } = await session(server.address, LEASED);
      assert.equal(connectVerdict, "accept");
      await c.close();
    } finally {
      await server.close();
    }
  });
});
