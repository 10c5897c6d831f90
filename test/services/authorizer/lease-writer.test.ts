// The lease writer on a real nats-server: creates, extends, never shortens, and stays exact
// under concurrent writers of one key.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { decodeLease, type Lease } from "../../../shared/lease.ts";
import { LeaseWriter, natsTtl } from "../../../services/authorizer/lease-writer.ts";
import { startTestNatsServer, type TestNatsServer } from "../../support/nats-server.ts";
import { provisionForTest } from "../../support/role-harness.ts";

function lease(expiresAt: number, event: string): Lease {
  return {
    ip: "192.0.2.1",
    service: "imap",
    source: "http",
    watcher: "w1",
    loginAt: expiresAt - 60_000,
    expiresAt,
    event,
  };
}

describe("natsTtl", () => {
  const cases: [number, string][] = [
    [1, "1s"],
    [999, "1s"],
    [1000, "1s"],
    [1001, "2s"],
    [1_800_000, "1800s"],
    [-5, "1s"],
  ];
  for (const [ms, ttl] of cases) {
    it(`${ms} ms -> ${ttl}`, () => {
      assert.equal(natsTtl(ms), ttl);
    });
  }
});

describe("LeaseWriter", () => {
  let server: TestNatsServer;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let kv: KV;
  let writer: LeaseWriter;

  before(async () => {
    server = await startTestNatsServer();
    nc = await connect({ servers: server.url });
    await provisionForTest(nc, {
      maxLeaseTtlMs: 3_600_000,
    });
    js = jetstream(nc);
    kv = await new Kvm(js).open("relay-leases");
    writer = new LeaseWriter(js, kv, "relay-leases", true);
  });
  after(async () => {
    await nc.close();
    await server.cleanup();
  });

  const stored = async (key: string) => {
    const e = await kv.get(key);
    assert.equal(e?.operation, "PUT");
    return decodeLease(e.value);
  };

  it("creates, extends, and keeps the longer lease", async () => {
    const now = Date.now();
    const key = "v4.192.0.2.1";
    assert.equal((await writer.write(key, lease(now + 60_000, "e1"), now)).outcome, "created");
    assert.equal((await writer.write(key, lease(now + 120_000, "e2"), now)).outcome, "extended");
    assert.equal((await writer.write(key, lease(now + 90_000, "e3"), now)).outcome, "kept");
    assert.equal((await writer.write(key, lease(now + 120_000, "e4"), now)).outcome, "kept");
    const l = await stored(key);
    assert.equal(l.event, "e2");
    assert.equal(l.expiresAt, now + 120_000);
  });

  it("sets the entry's own TTL on the server", async () => {
    const now = Date.now();
    const key = "v4.192.0.2.2";
    await writer.write(key, lease(now + 300_000, "t1"), now);
    const e = await kv.get(key);
    assert.ok(e);
    const msg = await (
      await js.jetstreamManager()
    ).streams.getMessage("KV_relay-leases", {
      seq: e.revision,
    });
    assert.equal(msg?.header.get("Nats-TTL"), "300s");
  });

  it("lets the longest of many concurrent writes win", async () => {
    const now = Date.now();
    const key = "v4.192.0.2.3";
    const expiries = Array.from({ length: 40 }, (_, i) => now + 10_000 + ((i * 7919) % 40) * 1000);
    const outcomes = await Promise.all(
      expiries.map(async (x, i) => (await writer.write(key, lease(x, `c${i}`), now)).outcome),
    );
    assert.equal(outcomes.filter((o) => o === "created").length, 1);
    assert.equal((await stored(key)).expiresAt, Math.max(...expiries));
  });
});
