// The authorizer on a real nats-server: refusals by reason (logged and counted), revocation
// against a replayed older event, and leases expiring on the server at their own TTLs with a
// marker every watcher hears.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { KvWatchInclude, Kvm, type KV, type KvWatchEntry } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { decodeBucketValue } from "../../shared/bucket-value.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { LoginPublisher, type LoginReport } from "../../services/watcher/publisher.ts";
import { relaylease } from "../support/cli.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

describe("authorizer", () => {
  let server: TestNatsServer;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let kv: KV;
  let roles: Harness;
  let publisher: LoginPublisher;

  before(async () => {
    server = await startTestNatsServer();
    nc = await connect({ servers: server.url });
    js = jetstream(nc);
    await provisionForTest(nc, {
      maxLeaseTtlMs: 600_000,
    });
    kv = await new Kvm(js).open("relay-leases");
    const config = roleConfig(server.url, {
      RELAYLEASE_LEASE_TTL: "10m",
      RELAYLEASE_SERVICE_TTLS: "pop3=2s,imap=4s",
      RELAYLEASE_MAX_USERS_PER_IP: "2",
      RELAYLEASE_REFUSE_SHARED: "true",
      RELAYLEASE_IPV6_PREFIX: "64",
    });
    roles = await startRoles((ctx) => startAuthorizer(config, ctx));
    publisher = new LoginPublisher(js, "pop-1");
  });
  after(async () => {
    await roles.stop();
    await nc.close();
    await server.cleanup();
  });

  const login = (ip: string, extra: Partial<LoginReport> = {}) =>
    publisher.publish({ ip, service: "smtp-auth", source: "http", ...extra });
  const refusalCount = async (reason: string) =>
    Number(
      new RegExp(`relaylease_authorizer_refusals_total\\{reason="${reason}"[^}]*\\} (\\d+)`).exec(
        await roles.metrics(),
      )?.[1] ?? 0,
    );
  const leaseAt = async (key: string) => {
    const e = await kv.get(key);
    if (e?.operation !== "PUT") return undefined;
    const v = decodeBucketValue(e.value);
    return v.kind === "lease" ? v.lease : undefined;
  };

  const refused: [string, string][] = [
    ["127.0.0.2", "loopback"],
    ["::1", "loopback"],
    ["0.0.0.0", "unspecified"],
    ["169.254.10.1", "link-local"],
    ["fe80::1", "link-local"],
    ["224.0.0.5", "multicast"],
    ["ff02::1", "multicast"],
    ["100.64.0.1", "cgnat"],
    ["255.255.255.255", "broadcast"],
  ];
  for (const [ip, reason] of refused) {
    it(`refuses ${ip} as ${reason}, logged and counted`, async () => {
      const before = await refusalCount(reason);
      const event = await login(ip);
      await waitFor(
        async () => (await refusalCount(reason)) === before + 1,
        3000,
        `${reason} refusal counted`,
      );
      const line = roles.logs.find((l) => l["event"] === event.id);
      assert.equal(line?.["msg"], "lease refused");
      assert.equal(line["reason"], reason);
      assert.equal(await leaseAt(leaseKey(parseAddress(ip))), undefined);
    });
  }

  it("terminates a malformed event: logged, counted, never redelivered", async () => {
    const malformed = async () =>
      Number(
        /relaylease_authorizer_events_total\{outcome="malformed"[^}]*\} (\d+)/.exec(
          await roles.metrics(),
        )?.[1] ?? 0,
      );
    const before = await malformed();
    await js.publish("relaylease.login.pop-1", '{"ip": "not an address"}', { msgID: "garbage-1" });
    await waitFor(async () => (await malformed()) === before + 1, 3000, "malformed event counted");
    assert.ok(
      roles.logs.some(
        (l) => l["msg"] === "malformed login event dropped" && String(l["reason"]).includes('"ip"'),
      ),
    );
    const info = await (await js.jetstreamManager()).consumers.info("RELAY_LOGINS", "authorizer");
    assert.equal(info.num_ack_pending, 0, "terminated, not waiting for redelivery");
  });

  it("refuses a third user from one address when the guard says so", async () => {
    const ip = "198.51.100.50";
    await login(ip, { user: "u1" });
    await login(ip, { user: "u2" });
    const before = await refusalCount("shared-address");
    await login(ip, { user: "u3" });
    await waitFor(
      async () => (await refusalCount("shared-address")) === before + 1,
      3000,
      "shared-address refusal",
    );
    assert.deepEqual((await leaseAt(leaseKey(parseAddress(ip))))?.recent?.map(([u]) => u).sort(), [
      "u1",
      "u2",
    ]);
  });

  it("leases an IPv6 client's /64 under one key", async () => {
    await login("2001:db8:1:2::10");
    await waitFor(
      async () => (await leaseAt("v6.2001.0db8.0001.0002")) !== undefined,
      3000,
      "the /64 lease",
    );
  });

  it("grants nothing to an older event replayed after a revocation", async () => {
    const ip = "198.51.100.60";
    const key = leaseKey(parseAddress(ip));
    const loginAt = Date.now() - 1000;
    await login(ip, { loginAt });
    await waitFor(async () => (await leaseAt(key)) !== undefined, 3000, "the lease");
    const r = await relaylease(["revoke", ip], { RELAYLEASE_NATS_URL: server.url });
    assert.equal(r.code, 0, r.stderr);
    const before = await refusalCount("revoked");
    await login(ip, { loginAt }); // the same login again, as a replay or late redelivery would
    await waitFor(
      async () => (await refusalCount("revoked")) === before + 1,
      3000,
      "revoked refusal",
    );
    assert.equal(await leaseAt(key), undefined);
    await login(ip); // a login after the revocation grants again
    await waitFor(async () => (await leaseAt(key)) !== undefined, 3000, "a new lease");
  });

  it("expires two leases on the server at their own TTLs, and a watcher hears each", async () => {
    const watch = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
    const heard: KvWatchEntry[] = [];
    const done = (async () => {
      for await (const e of watch) if (e.key.startsWith("v4.192.0.2.")) heard.push(e);
    })();
    try {
      await login("192.0.2.71", { service: "pop3" }); // 2 s
      await login("192.0.2.72", { service: "imap" }); // 4 s
      await waitFor(
        () => heard.filter((e) => e.operation === "PUT").length === 2,
        3000,
        "both leases",
      );
      await waitFor(
        () => heard.some((e) => e.operation === "PURGE"),
        6000,
        "the first expiry marker",
      );
      const first = heard.find((e) => e.operation === "PURGE");
      assert.equal(first?.key, "v4.192.0.2.71", "the 2 s lease expires first");
      assert.ok(await leaseAt("v4.192.0.2.72"), "the 4 s lease outlives it");
      await waitFor(
        () => heard.filter((e) => e.operation === "PURGE").length === 2,
        6000,
        "the second marker",
      );
      assert.equal(heard.filter((e) => e.operation === "PURGE")[1]?.key, "v4.192.0.2.72");
    } finally {
      watch.stop();
      await done;
    }
  });
});
