// Benchmarks on a real nats-server (R1, loopback), printed as figures. Not a test: nothing here
// passes or fails. Run with `npm run bench` (all) or `npm run bench -- doors mirror` (some).
//   decide      the pure decision per second against a mirror-sized Map, p50/p99
//   authorizer  events to leases per second from a backlog (bench/authorizer.ts)
//   doors       policy and milter decisions over 1/10/100 connections (bench/front-doors.ts)
//   mirror      mirror memory and initial load time, BENCH_MIRROR_LEASES (1 000 000) leases
//   slice       events published, events to leases, and login (HTTP) to policy OK
import { performance } from "node:perf_hooks";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { leaseKey, parseAddress } from "../shared/address.ts";
import type { Lease } from "../shared/lease.ts";
import { startProcess } from "../shared/process.ts";
import { provision } from "../shared/provision.ts";
import { startAuthorizer } from "../services/authorizer/authorizer.ts";
import { decide } from "../services/milter/decide.ts";
import { startMilter } from "../services/milter/milter.ts";
import { LoginPublisher } from "../services/watcher/publisher.ts";
import { startWatcher } from "../services/watcher/watcher.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { benchAuthorizer } from "./authorizer.ts";
import { countKnob } from "./knobs.ts";
import { roleConfig } from "../test/support/role-harness.ts";
import { benchFrontDoors, benchMirror } from "./front-doors.ts";
import { PolicyClient } from "../test/support/policy-client.ts";

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

function report(name: string, count: number, seconds: number, latenciesMs?: number[]): void {
  let line = `${name.padEnd(44)} ${Math.round(count / seconds).toLocaleString("en")}/s`;
  if (latenciesMs !== undefined) {
    const s = [...latenciesMs].sort((a, b) => a - b);
    line += `  p50 ${quantile(s, 0.5).toFixed(3)} ms  p99 ${quantile(s, 0.99).toFixed(3)} ms`;
  }
  process.stdout.write(`${line}  (n=${count})\n`);
}

function ipOf(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

function benchDecide(): void {
  const leases = new Map<string, Lease>();
  const far = Date.now() + 3_600_000;
  for (let i = 0; i < 100_000; i++) {
    leases.set(leaseKey(parseAddress(ipOf(i))), {
      ip: ipOf(i),
      service: "imap",
      source: "http",
      watcher: "w",
      loginAt: 0,
      expiresAt: far,
      event: "e",
    });
  }
  const lookup = {
    lookup: (k: string, now: number) => {
      const l = leases.get(k);
      return l !== undefined && l.expiresAt > now ? l : undefined;
    },
  };
  const n = 1_000_000;
  const samples: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = i % 100 === 0 ? performance.now() : 0;
    decide(lookup, { clientAddress: ipOf(i % 200_000) }, Date.now());
    if (s !== 0) samples.push(performance.now() - s);
  }
  report("decide() in process, 100k leases", n, (performance.now() - t0) / 1000, samples);
}

/** `npm run bench -- NAME...` runs only the named parts: decide, authorizer, doors, mirror, slice. */
async function main(only: readonly string[]): Promise<void> {
  const want = (name: string) => only.length === 0 || only.includes(name);
  if (want("decide")) benchDecide();
  if (want("authorizer")) await benchAuthorizer(report);
  if (want("doors")) await benchFrontDoors(report);
  if (want("mirror")) await benchMirror(report, countKnob("BENCH_MIRROR_LEASES", 1_000_000));
  if (want("slice")) await benchSlice();
}

async function benchSlice(): Promise<void> {
  const server = await startTestNatsServer();
  const config = roleConfig(server.url, {
    RELAYLEASE_HTTP_LISTEN: "127.0.0.1:0",
    RELAYLEASE_POLICY_LISTEN: "127.0.0.1:0",
    RELAYLEASE_METRICS_LISTEN: "127.0.0.1:0",
    RELAYLEASE_WATCHER_ID: "bench",
    LOG_LEVEL: "error",
  });
  const natsUrl = [server.url];
  const nc = await connect({ servers: server.url });
  await provision(nc, {
    stream: config.stream,
    bucket: config.bucket,
    replicas: 1,
    maxLeaseTtlMs: config.leaseTtl,
    perMessageTtl: true,
  });
  let policyAddress = "";
  let httpAddress = "";
  const running = await startProcess({
    role: "bench",
    logLevel: "error",
    metricsListen: "127.0.0.1:0",
    start: async (ctx) => {
      await startAuthorizer({ ...config, natsUrl }, ctx);
      policyAddress = (await startMilter({ ...config, natsUrl }, ctx)).policyAddress;
      httpAddress = (await startWatcher({ ...config, natsUrl }, ctx)).httpAddress ?? "";
    },
  });
  try {
    await benchLoginToLease(nc, config.bucket);
    await benchLoginToOk(httpAddress, policyAddress);
  } finally {
    await running.shutdown("bench done");
    await nc.close();
    await server.cleanup();
  }
}

async function benchLoginToLease(
  nc: Awaited<ReturnType<typeof connect>>,
  bucket: string,
): Promise<void> {
  const js = jetstream(nc);
  const publisher = new LoginPublisher(js, "bench");
  const kv = await new Kvm(js).open(bucket);
  const base = (await kv.status()).values;
  const n = 5000;
  const inFlight = 256;
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = 100_000 + next++;
        await publisher.publish({ ip: ipOf(i), service: "imap", source: "bench" });
      }
    }),
  );
  const published = performance.now();
  report(`events published (${inFlight} in flight)`, n, (published - t0) / 1000);
  while ((await kv.status()).values < base + n) await new Promise((r) => setTimeout(r, 20));
  report("events to leases, one authorizer (R1)", n, (performance.now() - t0) / 1000);
}

async function benchLoginToOk(http: string, policyAddress: string): Promise<void> {
  const policy = await PolicyClient.connect(policyAddress);
  const latencies: number[] = [];
  const n = 200;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const ip = ipOf(300_000 + i);
    const s = performance.now();
    const res = await fetch(`http://${http}/v1/logins`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ip, service: "pop3" }),
    });
    await res.arrayBuffer();
    while ((await policy.query({ client_address: ip })) !== "OK")
      await new Promise((r) => setTimeout(r, 1));
    latencies.push(performance.now() - s);
  }
  report("login (HTTP) to policy OK, sequential", n, (performance.now() - t0) / 1000, latencies);
  await policy.close();
}

await main(process.argv.slice(2));
