// The milter role under load from our own MTA-side clients, on a real nats-server (R1, loopback):
//   - decisions in process (TracedDecider: the pure decision plus its span and metrics)
//   - Postfix policy queries and milter RCPT decisions per second, with p50/p99 latency, over
//     1, 10 and 100 concurrent MTA connections
//   - the mirror's memory and initial load time for BENCH_MIRROR_LEASES leases (1 000 000)
import { performance } from "node:perf_hooks";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { kvSubject } from "../shared/contract.ts";
import { encodeLease } from "../shared/lease.ts";
import { createLogger } from "../shared/log.ts";
import { startMilter, TracedDecider, type Milter } from "../services/milter/milter.ts";
import { LeaseMirror } from "../services/milter/mirror.ts";
import { decisionConfigOf } from "../services/milter/settings.ts";
import { MilterClient } from "../test/support/milter-client.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { CLI } from "../test/support/cli.ts";
import { waitFor } from "../test/support/wait.ts";
import { freePort } from "../services/dev/nats-server.ts";
import { spawn } from "node:child_process";
import { PolicyClient } from "../test/support/policy-client.ts";
import { roleConfig, startRoles, provisionForTest } from "../test/support/role-harness.ts";

export type Report = (name: string, n: number, seconds: number, latenciesMs?: number[]) => void;

const LEASED = 10_000;

function ipOf(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** Writes `n` leases straight into the bucket, 512 publishes in flight. */
async function fillBucket(nc: NatsConnection, n: number): Promise<void> {
  const js = jetstream(nc);
  const expiresAt = Date.now() + 3_600_000;
  let next = 0;
  await Promise.all(
    Array.from({ length: 512 }, async () => {
      while (next < n) {
        const i = next++;
        const ip = ipOf(i);
        const value = {
          ip,
          service: "imap",
          source: "bench",
          watcher: "bench",
          loginAt: expiresAt - 3_600_000,
          expiresAt,
          event: `e${i}`,
        };
        await js.publish(kvSubject("relay-leases", `v4.${ip}`), encodeLease(value), {
          ttl: "3600s",
        });
      }
    }),
  );
}

async function withServer(
  leases: number,
  use: (nc: NatsConnection, url: string) => Promise<void>,
): Promise<void> {
  const server = await startTestNatsServer();
  const nc = await connect({ servers: server.url });
  try {
    await provisionForTest(nc, {
      maxLeaseTtlMs: 3_600_000,
    });
    await fillBucket(nc, leases);
    await use(nc, server.url);
  } finally {
    await nc.close();
    await server.cleanup();
  }
}

/** `total` requests spread over `connections` clients, each sequential; latencies of every one. */
async function load<C>(
  connections: number,
  total: number,
  open: () => Promise<C>,
  ask: (client: C, i: number) => Promise<unknown>,
  close: (client: C) => Promise<void>,
): Promise<{ seconds: number; latencies: number[] }> {
  const clients = await Promise.all(Array.from({ length: connections }, open));
  const per = Math.ceil(total / connections);
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c, ci) => {
      for (let i = 0; i < per; i++) {
        const s = performance.now();
        await ask(c, ci * per + i);
        latencies.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(clients.map(close));
  return { seconds, latencies };
}

export async function benchFrontDoors(report: Report): Promise<void> {
  await withServer(LEASED, async (_nc, url) => {
    await benchDecisionInProcess(report, url);
    // The role runs in a process of its own, as beside a real MTA; the load comes from here.
    const [policy, milter, metrics] = await Promise.all([freePort(), freePort(), freePort()]);
    const role = spawn(process.execPath, [CLI, "milter"], {
      stdio: "ignore",
      env: {
        ...process.env,
        RELAYLEASE_NATS_URL: url,
        RELAYLEASE_POLICY_LISTEN: `127.0.0.1:${policy}`,
        RELAYLEASE_MILTER_LISTEN: `127.0.0.1:${milter}`,
        RELAYLEASE_METRICS_LISTEN: `127.0.0.1:${metrics}`,
        RELAYLEASE_ACCEPT_AT: "rcpt",
        RELAYLEASE_STALE_AFTER: "1h",
        LOG_LEVEL: "error",
      },
    });
    try {
      await waitFor(
        async () =>
          (await fetch(`http://127.0.0.1:${metrics}/readyz`).catch(() => undefined))?.status ===
          200,
        30_000,
        "the milter role",
        50,
      );
      for (const connections of [1, 10, 100]) {
        const r = await load(
          connections,
          50_000,
          () => PolicyClient.connect(`127.0.0.1:${policy}`),
          (c, i) =>
            c.query({
              request: "smtpd_access_policy",
              protocol_state: "RCPT",
              client_address: ipOf(i % (2 * LEASED)),
              recipient: "a@remote.example",
            }),
          (c) => c.close(),
        );
        report(`policy service, ${connections} connection(s)`, 50_000, r.seconds, r.latencies);
      }
      for (const connections of [1, 10, 100]) {
        const r = await load(
          connections,
          50_000,
          async () => {
            const c = await MilterClient.connect(`127.0.0.1:${milter}`);
            await c.negotiate();
            await c.connectStep({ family: "4", address: ipOf(LEASED + 1) });
            return c;
          },
          (c) => c.rcpt("a@remote.example", { "{rcpt_mailer}": "smtp" }),
          (c) => c.close(),
        );
        report(`milter RCPT, ${connections} connection(s)`, 50_000, r.seconds, r.latencies);
      }
    } finally {
      role.kill("SIGTERM");
    }
  });
}

/** The decision with its span and metrics, as the front doors call it, without any socket. */
async function benchDecisionInProcess(report: Report, url: string): Promise<void> {
  let milter!: Milter;
  const config = roleConfig(url, { RELAYLEASE_STALE_AFTER: "1h" });
  const roles = await startRoles(async (ctx) => {
    milter = await startMilter(config, ctx);
  }, "error");
  try {
    const decider = new TracedDecider(milter.mirror, decisionConfigOf(config, false));
    const samples: number[] = [];
    const n = 1_000_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const s = i % 100 === 0 ? performance.now() : 0;
      decider.decide("bench", {
        clientAddress: ipOf(i % (2 * LEASED)),
        stage: "rcpt",
        recipient: "a@remote.example",
      });
      if (s !== 0) samples.push(performance.now() - s);
    }
    report(
      "decision in process (with span and metrics)",
      n,
      (performance.now() - t0) / 1000,
      samples,
    );
  } finally {
    await roles.stop();
  }
}

export async function benchMirror(report: Report, leases: number): Promise<void> {
  await withServer(leases, async (nc) => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const before = process.memoryUsage().heapUsed;
    const mirror = new LeaseMirror(nc, "relay-leases", createLogger("error"), {
      maxEntries: leases + 1,
    });
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await mirror.start();
    const seconds = (performance.now() - t0) / 1000;
    // CPU beside wall time: on a shared VM the wall time swings with the neighbours' load.
    const cpu = process.cpuUsage(cpu0);
    gc?.();
    const mb = (process.memoryUsage().heapUsed - before) / 1e6;
    report(`mirror initial load, ${leases.toLocaleString("en")} leases`, mirror.size, seconds);
    process.stdout.write(
      `${"mirror load time".padEnd(44)} ${seconds.toFixed(2)} s wall, ${(cpu.user / 1e6).toFixed(2)} s user + ${(cpu.system / 1e6).toFixed(2)} s system CPU (this process; the server's apart)\n`,
    );
    process.stdout.write(
      `${"mirror heap for them".padEnd(44)} ${mb.toFixed(0)} MB${gc === undefined ? " (run with --expose-gc for a settled figure)" : ""}\n`,
    );
    await mirror.stop();
  });
}
