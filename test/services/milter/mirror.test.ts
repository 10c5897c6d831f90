// The lease mirror on a real nats-server: ready only after the initial load, ready at once for an
// empty bucket, and following puts, deletes and expiry.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { encodeRevocation } from "../../../shared/bucket-value.ts";
import { HEARTBEAT_KEY } from "../../../shared/contract.ts";
import { encodeLease, type Lease } from "../../../shared/lease.ts";
import { createLogger } from "../../../shared/log.ts";
import { LeaseMirror } from "../../../services/milter/mirror.ts";
import { startTestNatsServer, type TestNatsServer } from "../../support/nats-server.ts";
import { waitFor } from "../../support/wait.ts";

const log = createLogger("silent");

function lease(ip: string, expiresAt: number): Lease {
  return {
    ip,
    service: "pop3",
    source: "http",
    watcher: "w",
    loginAt: expiresAt - 1000,
    expiresAt,
    event: "e",
  };
}

describe("LeaseMirror", () => {
  let server: TestNatsServer;
  let nc: NatsConnection;

  before(async () => {
    server = await startTestNatsServer();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc.close();
    await server.cleanup();
  });

  async function bucket(name: string): Promise<KV> {
    const kv = await new Kvm(jetstream(nc)).create(name, {
      history: 1,
      markerTTL: 1000,
      ttl: 600_000,
    });
    return kv;
  }

  it("is ready at once on an empty bucket", async () => {
    await bucket("empty");
    const mirror = new LeaseMirror(nc, "empty", log);
    assert.equal(mirror.ready(), false);
    await mirror.start();
    assert.equal(mirror.ready(), true);
    assert.equal(mirror.size, 0);
    await mirror.stop();
  });

  it("holds every lease of a loaded bucket before it reports ready", async () => {
    const kv = await bucket("loaded");
    const far = Date.now() + 600_000;
    for (let i = 0; i < 500; i++)
      await kv.put(
        `v4.10.0.${i >> 8}.${i & 255}`,
        encodeLease(lease(`10.0.${i >> 8}.${i & 255}`, far)),
      );
    await kv.delete("v4.10.0.0.7");
    const mirror = new LeaseMirror(nc, "loaded", log);
    await mirror.start();
    assert.equal(mirror.ready(), true);
    assert.equal(mirror.size, 499);
    assert.ok(mirror.lookup("v4.10.0.1.243", Date.now()));
    assert.equal(mirror.lookup("v4.10.0.0.7", Date.now()), undefined);
    await mirror.stop();
  });

  it("loads each lease as its decision view, dropping values whose decision fields are bad", async () => {
    const kv = await bucket("views");
    const far = Date.now() + 600_000;
    const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const withField = (ip: string, field: string, value: unknown) => {
      const o = JSON.parse(Buffer.from(encodeLease(lease(ip, far))).toString()) as Record<
        string,
        unknown
      >;
      o[field] = value;
      return Buffer.from(JSON.stringify(o));
    };
    await kv.put("v4.192.0.2.1", encodeLease({ ...lease("192.0.2.1", far), user: "al", trace }));
    await kv.put("v4.192.0.2.2", encodeLease(lease("192.0.2.2", far)));
    // Bad in a field the decision reads: not a lease.
    await kv.put("v4.192.0.2.3", withField("192.0.2.3", "expiresAt", "2024-02-30T12:00:00Z"));
    await kv.put("v4.192.0.2.4", withField("192.0.2.4", "trace", "00-not-a-trace"));
    await kv.put("v4.192.0.2.5", withField("192.0.2.5", "user", "a\u0000b"));
    await kv.put("v4.192.0.2.6", encodeRevocation({ revokedAt: Date.now(), by: "cli" }));
    // Bad only in a field the decision never reads: the mirror does not check it (a million
    // values load at start; the authorizer checked them when it wrote them).
    await kv.put("v4.192.0.2.7", withField("192.0.2.7", "loginAt", "2024-02-30T12:00:00Z"));
    const mirror = new LeaseMirror(nc, "views", log);
    await mirror.start();
    assert.deepEqual(mirror.lookup("v4.192.0.2.1", Date.now()), {
      expiresAt: far,
      user: "al",
      trace,
    });
    assert.deepEqual(mirror.lookup("v4.192.0.2.2", Date.now()), { expiresAt: far });
    for (const bad of ["v4.192.0.2.3", "v4.192.0.2.4", "v4.192.0.2.5", "v4.192.0.2.6"]) {
      assert.equal(mirror.holds(bad), false, bad);
    }
    assert.deepEqual(mirror.lookup("v4.192.0.2.7", Date.now()), { expiresAt: far });
    assert.equal(mirror.size, 3);
    await mirror.stop();
  });

  it("misses no write made while it loads", async () => {
    const kv = await bucket("busy");
    const far = Date.now() + 600_000;
    const key = (i: number) => `v4.10.1.${i >> 8}.${i & 255}`;
    const put = (i: number) => kv.put(key(i), encodeLease(lease(key(i).slice(3), far)));
    for (let i = 0; i < 5000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => put(i + j)));
    }
    const mirror = new LeaseMirror(nc, "busy", log);
    // New keys and deletes of loaded ones, racing the load.
    const writes = (async () => {
      for (let i = 5000; i < 6000; i++) {
        await put(i);
        if (i % 10 === 0) await kv.delete(key(i - 5000));
      }
    })();
    await mirror.start();
    await writes;
    await waitFor(() => mirror.size === 5900, 5000, `5 900 leases (have ${mirror.size})`);
    for (let i = 0; i < 6000; i++) {
      assert.equal(mirror.holds(key(i)), i >= 1000 || i % 10 !== 0, key(i));
    }
    await mirror.stop();
  });

  it("follows puts and deletes, and checks expiresAt itself", async () => {
    const kv = await bucket("live");
    const mirror = new LeaseMirror(nc, "live", log);
    await mirror.start();
    const now = Date.now();
    await kv.put("v4.192.0.2.9", encodeLease(lease("192.0.2.9", now + 60_000)));
    await waitFor(
      () => mirror.lookup("v4.192.0.2.9", Date.now()) !== undefined,
      2000,
      "put to arrive",
    );
    assert.equal(mirror.lookup("v4.192.0.2.9", now + 60_001), undefined, "past expiresAt");
    await kv.delete("v4.192.0.2.9");
    await waitFor(() => !mirror.holds("v4.192.0.2.9"), 2000, "delete to arrive");
    await kv.put("v4.192.0.2.10", new TextEncoder().encode("not a lease"));
    await kv.put("v4.192.0.2.11", encodeLease(lease("192.0.2.11", now + 60_000)));
    await waitFor(() => mirror.holds("v4.192.0.2.11"), 2000, "the next put");
    assert.equal(mirror.holds("v4.192.0.2.10"), false, "an undecodable value is dropped");
    await mirror.stop();
  });
});

describe("LeaseMirror supervisor", () => {
  it("replaces a watch whose consumer vanished, long before the client library would", async () => {
    const server = await startTestNatsServer();
    const nc = await connect({ servers: server.url });
    const heartbeats = setInterval(() => {
      void kv.put(HEARTBEAT_KEY, new TextEncoder().encode("{}")).catch(() => undefined);
    }, 200);
    const kv = await new Kvm(jetstream(nc)).create("supervised", {
      history: 1,
      markerTTL: 1000,
      ttl: 600_000,
    });
    const mirror = new LeaseMirror(nc, "supervised", log, {
      stallAfterMs: 1000,
      superviseEveryMs: 200,
    });
    try {
      await mirror.start();
      await waitFor(() => mirror.lastHeartbeatAt > 0, 3000, "a heartbeat");
      // Delete the watch's consumer on the server: the watch goes silent. The client's own
      // recovery waits for two missed idle heartbeats (30 s apart); the supervisor does not.
      const jsm = await jetstreamManager(nc);
      for (const c of await jsm.consumers.list("KV_supervised").next()) {
        await jsm.consumers.delete("KV_supervised", c.name);
      }
      await kv.put("v4.192.0.2.20", encodeLease(lease("192.0.2.20", Date.now() + 60_000)));
      await waitFor(() => mirror.holds("v4.192.0.2.20"), 8000, "the write after the stall");
    } finally {
      clearInterval(heartbeats);
      await mirror.stop();
      await nc.close();
      await server.cleanup();
    }
  });
});
