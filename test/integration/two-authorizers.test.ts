// Two authorizers share the durable consumer while 10 000 events arrive: retried publishes of one
// event, distinct events for the same login, pairs published newest first, and redeliveries from
// an authorizer killed (SIGKILL) mid-stream. The leases must be exactly the expected ones: one per
// address, each lasting until its latest login + TTL, none shortened, none missing.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { AUTHORIZER_DURABLE } from "../../shared/contract.ts";
import { readAddressEntries } from "../../services/admin/bucket.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { freePort } from "../../services/dev/nats-server.ts";
import { LoginPublisher, type LoginReport } from "../../services/watcher/publisher.ts";
import { CLI } from "../support/cli.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

const TTL_MS = 3_600_000;
const ADDRESSES = 2000;

interface Planned {
  readonly id: string;
  readonly report: LoginReport & { loginAt: number };
}

/** Five publishes per address: 2 000 x 5 = 10 000. */
function plan(now: number): Planned[] {
  const out: Planned[] = [];
  for (let a = 0; a < ADDRESSES; a++) {
    const ip = `10.77.${a >> 8}.${a & 255}`;
    const t = (k: number) => now - 600_000 + ((a * 7919 + k * 104_729) % 590_000);
    const [t1, t2, t3] = [t(1), t(2), t(3)];
    const ev = (n: number, loginAt: number): Planned => ({
      id: `a${a}-e${n}`,
      report: { ip, service: "imap", source: "http", user: `user${a % 50}`, loginAt },
    });
    const newest = Math.max(t1, t2);
    const oldest = Math.min(t1, t2);
    out.push(ev(1, newest), ev(2, oldest)); // a reordered pair: the newer login arrives first
    out.push(ev(3, t3), ev(3, t3)); // a retried publish of one event
    out.push(ev(4, t3)); // the same login reported again under another id
  }
  return out;
}

/** Events the authorizer behind this metrics address has handled (0 while it is not up). */
async function handledBy(metricsAddress: string): Promise<number> {
  try {
    const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    return [...text.matchAll(/^relaylease_authorizer_events_total\{[^}]*\} (\d+)/gm)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
  } catch {
    return 0;
  }
}

describe("two authorizers, 10 000 events, one killed mid-stream", () => {
  let server: TestNatsServer;
  let nc: NatsConnection;
  let inProcess: Harness;
  let child: ChildProcess;

  before(async () => {
    server = await startTestNatsServer();
    nc = await connect({ servers: server.url });
    await provisionForTest(nc, {
      maxLeaseTtlMs: TTL_MS,
      ackWaitMs: 2000, // redeliveries of the killed replica's events come quickly
    });
  });
  after(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await inProcess.stop();
    await nc.close();
    await server.cleanup();
  });

  it("ends with exactly the expected leases", { timeout: 120_000 }, async () => {
    const env = {
      RELAYLEASE_NATS_URL: server.url,
      RELAYLEASE_LEASE_TTL: "1h",
      RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
    };
    const childMetrics = `127.0.0.1:${await freePort()}`;
    child = spawn(
      process.execPath,
      [CLI, "authorizer", "--metrics-listen", childMetrics, "--log-level", "warn"],
      {
        env: { ...process.env, ...env },
        stdio: "ignore",
      },
    );
    const exited = once(child, "exit");
    inProcess = await startRoles(
      (ctx) => startAuthorizer(roleConfig(server.url, env), ctx),
      "warn",
    );

    const events = plan(Date.now());
    const publisher = new LoginPublisher(jetstream(nc), "pop-1");
    let next = 0;
    const publishUpTo = (end: number) =>
      Promise.all(
        Array.from({ length: 128 }, async () => {
          while (next < end) {
            const e = events[next++];
            if (e !== undefined) await publisher.publish(e.report, e.id);
          }
        }),
      );
    const publishing = publishUpTo(events.length);
    // Kill the child while events flow and it is busy, so that it dies holding unacknowledged ones.
    await waitFor(
      async () => (await handledBy(childMetrics)) > 500,
      30_000,
      "the child authorizer to work",
      5,
    );
    child.kill("SIGKILL");
    await Promise.all([exited, publishing]);
    assert.ok(next >= events.length, "all events published");
    assert.equal(child.signalCode, "SIGKILL");

    const jsm = await jetstreamManager(nc);
    const stored = (await jsm.streams.info("RELAY_LOGINS")).state.messages;
    assert.equal(stored, 8000, "retried publishes stored once (2 000 x 4 distinct ids)");
    await waitFor(
      async () => {
        const c = await jsm.consumers.info("RELAY_LOGINS", AUTHORIZER_DURABLE);
        return c.num_pending === 0 && c.num_ack_pending === 0;
      },
      60_000,
      "every event acknowledged",
      100,
    );
    const redelivered = Number(
      /^relaylease_authorizer_redeliveries_total\{[^}]*\} (\d+)/m.exec(
        await inProcess.metrics(),
      )?.[1] ?? 0,
    );

    const expected = new Map<string, number>();
    for (const e of events) {
      const key = leaseKey(parseAddress(e.report.ip));
      expected.set(key, Math.max(expected.get(key) ?? 0, e.report.loginAt + TTL_MS));
    }
    const entries = await readAddressEntries(await new Kvm(jetstream(nc)).open("relay-leases"));
    assert.equal(entries.length, ADDRESSES, "one lease per address, none missing, none extra");
    for (const entry of entries) {
      assert.equal(entry.value.kind, "lease");
      assert.equal(
        entry.value.lease.expiresAt,
        expected.get(entry.key),
        `${entry.key} lasts until its latest login + TTL`,
      );
    }
    assert.ok(redelivered > 0, "the killed replica's events were redelivered to the other");
  });
});
