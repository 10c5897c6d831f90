// The foundation's promise, on a real nats-server (>= 2.11): a login posted to the watcher makes
// the Postfix policy service answer OK for that address within a second; an unknown address gets
// DUNNO; a short lease is expired by the server, the mirror hears the marker, and the answer
// returns to DUNNO; a retried event is stored once; the login's trace reaches the authorizer.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { createLogger } from "../../shared/log.ts";
import { startProcess, type RunningProcess } from "../../shared/process.ts";
import { provision } from "../../shared/provision.ts";
import { initTelemetry } from "../../shared/telemetry.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startMilter, type Milter } from "../../services/milter/milter.ts";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { startWatcher, type Watcher } from "../../services/watcher/watcher.ts";
import { PolicyClient } from "../support/policy-client.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { waitFor } from "../support/wait.ts";
import { roleConfig } from "../support/role-harness.ts";

// Installed before any role starts: the process skeleton reuses this installation.
const spans = new InMemorySpanExporter();
initTelemetry({
  serviceName: "thin-slice-test",
  log: createLogger("silent"),
  spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
});

const LEASE_TTL = "2s";

describe("one login relayed end to end", () => {
  let server: TestNatsServer;
  let running: RunningProcess;
  let watcher: Watcher;
  let milter: Milter;
  let policy: PolicyClient;
  let nc: NatsConnection;

  before(async () => {
    server = await startTestNatsServer();
    const config = roleConfig(server.url, {
      RELAYLEASE_LEASE_TTL: LEASE_TTL,
      RELAYLEASE_WATCHER_ID: "pop-1",
    });
    const natsUrl = config.natsUrl;
    nc = await connect({ servers: server.url });
    await provision(nc, {
      stream: config.stream,
      bucket: config.bucket,
      replicas: 1,
      maxLeaseTtlMs: 60_000,
      perMessageTtl: true,
    });
    running = await startProcess({
      role: "test",
      logLevel: "warn",
      metricsListen: config.metricsListen,
      start: async (ctx) => {
        await startAuthorizer({ ...config, natsUrl }, ctx);
        milter = await startMilter({ ...config, natsUrl }, ctx);
        watcher = await startWatcher({ ...config, natsUrl }, ctx);
      },
    });
    policy = await PolicyClient.connect(milter.policyAddress);
  });

  after(async () => {
    await policy.close();
    await running.shutdown("test done");
    await nc.close();
    await server.cleanup();
  });

  const ask = (ip: string) =>
    policy.query({ request: "smtpd_access_policy", protocol_state: "RCPT", client_address: ip });

  it("answers OK within a second of a login, then DUNNO after the server expires the lease", async () => {
    const ip = "192.0.2.10";
    assert.equal(await ask(ip), "DUNNO", "no lease before the login");
    const posted = Date.now();
    const res = await fetch(`http://${watcher.httpAddress}/v1/logins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ip, user: "alice", service: "imap" }),
    });
    assert.equal(res.status, 202, await res.clone().text());
    await waitFor(async () => (await ask(ip)) === "OK", 1000, "policy answer OK");
    const granted = Date.now() - posted;
    assert.ok(granted < 1000, `OK after ${granted} ms`);

    const key = leaseKey(parseAddress(ip));
    // The mirror drops a key only on a DEL/PURGE entry, never on its own clock: once it no longer
    // holds the key, it has heard the server's expiry marker.
    await waitFor(() => !milter.mirror.holds(key), 6000, "mirror to hear the expiry marker");
    const kv = await new Kvm(jetstream(nc)).open("relay-leases");
    const entry = await kv.get(key);
    assert.equal(entry?.operation, "PURGE", "the server replaced the lease with an expiry marker");
    assert.equal(await ask(ip), "DUNNO");
  });

  it("answers DUNNO for an address that never logged in", async () => {
    assert.equal(await ask("198.51.100.7"), "DUNNO");
    assert.equal(await ask("2001:db8::7"), "DUNNO");
  });

  it("stores an event published twice with the same id once", async () => {
    const jsm = await jetstreamManager(nc);
    const before = (await jsm.streams.info("RELAY_LOGINS")).state.messages;
    const publisher = new LoginPublisher(jetstream(nc), "pop-2");
    const report = { ip: "192.0.2.20", service: "pop3", source: "http" };
    await publisher.publish(report, "retry-1");
    await publisher.publish(report, "retry-1");
    const stored = (await jsm.streams.info("RELAY_LOGINS")).state.messages;
    assert.equal(stored - before, 1);
  });

  it("carries the login's trace context to the authorizer's span", async () => {
    const ip = "192.0.2.30";
    const res = await fetch(`http://${watcher.httpAddress}/v1/logins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ip, service: "pop3" }),
    });
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as { id: string };
    await waitFor(async () => (await ask(ip)) === "OK", 2000, "lease for the traced login");
    const finished = spans.getFinishedSpans();
    const create = finished.find(
      (s) => s.name.startsWith("create ") && s.attributes["messaging.message.id"] === id,
    );
    assert.ok(create, "the watcher's span for the reported login");
    const send = finished.find(
      (s) => s.name.startsWith("send ") && s.attributes["messaging.message.id"] === id,
    );
    assert.ok(send, "the watcher's send span");
    assert.equal(send.kind, SpanKind.PRODUCER);
    assert.equal(send.parentSpanContext?.spanId, create.spanContext().spanId);
    const process = finished.find(
      (s) =>
        s.kind === SpanKind.CONSUMER &&
        s.spanContext().traceId === send.spanContext().traceId &&
        s.attributes["relaylease.outcome"] === "created",
    );
    assert.ok(process, "an authorizer span in the login's trace");
    assert.equal(process.parentSpanContext?.spanId, send.spanContext().spanId);
    const decision = finished.find(
      (s) =>
        s.name === "relay decision policy" &&
        s.links[0]?.context.traceId === send.spanContext().traceId,
    );
    assert.ok(decision, "a relay decision span");
    assert.equal(decision.links[0]?.context.spanId, process.spanContext().spanId);
  });
});
