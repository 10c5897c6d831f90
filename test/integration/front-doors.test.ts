// Every front door of the milter role on a real nats-server, answering from one mirror: policy,
// milter, socketmap and whoson agree on a leased and an unknown client; with NATS gone past
// RELAYLEASE_STALE_AFTER, a known lease still counts and an unknown client gets the fail mode,
// never a relay.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { POLICY_DEFER_ACTION, startMilter, type Milter } from "../../services/milter/milter.ts";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { PolicyClient } from "../support/policy-client.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import { SocketmapClient } from "../support/socketmap-client.ts";
import { WhosonTcpClient, WhosonUdpClient } from "../support/whoson-client.ts";
import { waitFor } from "../support/wait.ts";

/** Replies as they stand on the wire. */
function text(reply: { status: string; value?: string; text?: string }): string {
  return "value" in reply
    ? `${reply.status} ${reply.value ?? ""}`
    : `${reply.status}${reply.text ?? ""}`;
}

describe("front doors of the milter role", () => {
  let server: TestNatsServer;
  let roles: Harness;
  let milter: Milter;
  let expiresAt = 0;

  before(async () => {
    server = await startTestNatsServer();
    const nc = await connect({ servers: server.url });
    await provisionForTest(nc, {
      maxLeaseTtlMs: 600_000,
    });
    const config = roleConfig(server.url, {
      RELAYLEASE_LEASE_TTL: "10m",
      RELAYLEASE_SOCKETMAP_LISTEN: "127.0.0.1:0",
      RELAYLEASE_WHOSON_LISTEN: "127.0.0.1:0",
      RELAYLEASE_STALE_AFTER: "3s",
    });
    roles = await startRoles(async (ctx) => {
      await startAuthorizer(config, ctx);
      milter = await startMilter(config, ctx);
    }, "error");
    const event = await new LoginPublisher(jetstream(nc), "pop-1").publish({
      ip: "192.0.2.5",
      user: "erin",
      service: "imap",
      source: "http",
    });
    expiresAt = event.loginAt + 600_000;
    await nc.close();
    await waitFor(
      () => milter.mirror.lookup("v4.192.0.2.5", Date.now()) !== undefined,
      3000,
      "the lease",
    );
  });
  after(async () => {
    await roles.stop();
    await server.cleanup();
  });

  async function answers(ip: string) {
    const policy = await PolicyClient.connect(milter.policyAddress);
    const socketmap = await SocketmapClient.connect(milter.socketmapAddress ?? "");
    const whoson = await WhosonTcpClient.connect(milter.whosonAddress ?? "");
    const udp = await WhosonUdpClient.open(milter.whosonAddress ?? "");
    try {
      return {
        policy: await policy.query({
          request: "smtpd_access_policy",
          protocol_state: "RCPT",
          client_address: ip,
          recipient: "x@remote.example",
        }),
        socketmap: text(await socketmap.lookup("drac", ip)),
        whoson: text(await whoson.query(ip)),
        whosonUdp: text(await udp.query(ip)),
      };
    } finally {
      await Promise.all([policy.close(), socketmap.close(), whoson.close(), udp.close()]);
    }
  }

  it("agree on a leased client and an unknown one", async () => {
    assert.deepEqual(await answers("192.0.2.5"), {
      policy: "OK",
      socketmap: `OK ${Math.floor(expiresAt / 1000)}`,
      whoson: "+erin",
      whosonUdp: "+erin",
    });
    assert.deepEqual(await answers("192.0.2.6"), {
      policy: "DUNNO",
      socketmap: "NOTFOUND",
      whoson: "-Not Logged in",
      whosonUdp: "-Not Logged in",
    });
  });

  it("count the mirror's changes and each door's decisions in /metrics", async () => {
    await answers("192.0.2.5");
    await answers("192.0.2.6");
    const metrics = await roles.metrics();
    const value = (name: string, labels: string) =>
      Number(new RegExp(`^${name}\\{${labels}[^}]*\\} (\\d+)$`, "m").exec(metrics)?.[1] ?? NaN);
    // The lease and the authorizer's heartbeats are puts.
    assert.ok(value("relaylease_mirror_changes_total", 'operation="PUT"') >= 2, metrics);
    assert.equal(value("relaylease_mirror_changes_total", 'operation="DEL"'), 0);
    assert.equal(value("relaylease_mirror_entries", ""), 1);
    for (const door of ["policy", "socketmap", "whoson"]) {
      const leased = `door="${door}",verdict="accept",reason="leased"`;
      assert.ok(value("relaylease_decisions_total", leased) >= 1, `${door}: ${metrics}`);
    }
    const refused = 'door="policy",verdict="reject",reason="relay-denied"';
    assert.ok(value("relaylease_decisions_total", refused) >= 1, metrics);
    const decided = /^relaylease_decision_duration_seconds_count(?:\{[^}]*\})? (\d+)$/m.exec(
      metrics,
    );
    assert.ok(Number(decided?.[1]) >= 8, metrics); // two clients, each at four doors
    // Latencies reach the histogram in batches (LatencyBatch), flushed before each read: every
    // decision counted is in it, though far fewer than a batch were made.
    let counted = 0;
    for (const [, n] of metrics.matchAll(/^relaylease_decisions_total\{[^}]*\} (\d+)$/gm)) {
      counted += Number(n);
    }
    assert.equal(Number(decided?.[1]), counted, metrics);
  });

  it("keep known leases and fail safe for unknown clients once NATS is gone", async () => {
    await server.stop();
    await waitFor(() => milter.mirror.stale(Date.now()), 5000, "the mirror to go stale");
    const leased = await answers("192.0.2.5");
    assert.equal(leased.policy, "OK");
    assert.match(leased.socketmap, /^OK \d+$/);
    const unknown = await answers("192.0.2.6");
    assert.equal(unknown.policy, POLICY_DEFER_ACTION);
    assert.match(unknown.socketmap, /^TEMP/);
    assert.match(unknown.whoson, /^\*/);
  });
});
