// Not one login lost: with nats-server stopped, 1 000 logins go to the watcher; the watcher is
// restarted; nats-server comes back; an authorizer runs. Every login becomes its lease, and the
// stream holds each event once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { readAddressEntries } from "../../services/admin/bucket.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startWatcher, type Watcher } from "../../services/watcher/watcher.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

const LOGINS = 1000;

describe("watcher through a NATS outage and its own restart", () => {
  let server: TestNatsServer;
  const running: Harness[] = [];

  before(async () => {
    server = await startTestNatsServer();
    const nc = await connect({ servers: server.url });
    await provisionForTest(nc, {
      maxLeaseTtlMs: 1_800_000,
    });
    await nc.close();
  });
  after(async () => {
    for (const h of running.reverse()) await h.stop();
    await server.cleanup();
  });

  it(
    "turns every login made during the outage into its lease, none duplicated",
    { timeout: 90_000 },
    async () => {
      await server.stop();
      const config = roleConfig(server.url, {
        RELAYLEASE_WATCHER_ID: "pop-1",
        RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
      });
      let watcher!: Watcher;
      const first = await startRoles(async (ctx) => {
        watcher = await startWatcher(config, ctx);
      }, "error");
      for (let i = 0; i < LOGINS; i++) {
        const res = await fetch(`http://${watcher.httpAddress ?? ""}/v1/logins`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            ip: `10.88.${i >> 8}.${i & 255}`,
            user: `u${i}`,
            service: "imap",
          }),
        });
        assert.equal(res.status, 202, "stored while NATS is away");
      }
      assert.equal(watcher.outbox.stats().depth, LOGINS);
      await first.stop();

      const second = await startRoles(async (ctx) => {
        watcher = await startWatcher(config, ctx);
      }, "error");
      running.push(second);
      assert.equal(
        watcher.outbox.stats().depth,
        LOGINS,
        `the restarted watcher still holds them: ${JSON.stringify(watcher.outbox.stats())}`,
      );
      await server.restart();
      running.push(await startRoles((ctx) => startAuthorizer(config, ctx), "error"));

      const nc = await connect({ servers: server.url });
      try {
        const kv = await new Kvm(jetstream(nc)).open("relay-leases");
        await waitFor(
          async () => (await readAddressEntries(kv)).length === LOGINS,
          60_000,
          `${LOGINS} leases`,
          200,
        );
        const stored = (await (await jetstreamManager(nc)).streams.info("RELAY_LOGINS")).state
          .messages;
        assert.equal(stored, LOGINS, "each event stored once");
        assert.equal(watcher.outbox.stats().depth, 0);
      } finally {
        await nc.close();
      }
    },
  );
});
