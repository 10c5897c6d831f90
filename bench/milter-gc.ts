// Young-generation garbage collection under milter connections: whether each connection's objects
// die young, as they should, or outlive scavenges into the old generation. The role once kept
// every connection alive until a full collection (a Set of open connections and an object literal
// with getters: services/milter/open-connections.ts, milter-protocol/server.ts), which cost no
// instructions anyone could see but made each scavenge copy megabytes.
//
// Each server runs under `node --trace-gc`; our own milter client makes Postfix's session for a
// leased client (bench/role-doors.ts) over LANES connections at a time: WARM sessions, then
// SESSIONS measured. From the scavenges logged while measured: how many, their median and worst
// pause, the megabytes the heap kept after each over the one before (what was promoted and not
// yet freed), and scavenge time per session. Servers: the role (`node services/cli.ts milter`)
// and the bare Node milter (bench/bare-servers.ts), whose connections die young.
// Run: `node bench/milter-gc.ts`. Knobs: BENCH_GC_WARM (5000), BENCH_GC_SESSIONS (40000),
// BENCH_GC_LANES (4). Needs nats-server.
import { spawn, type ChildProcess } from "node:child_process";
import { freePort } from "../services/dev/nats-server.ts";
import { CLI } from "../test/support/cli.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { BARE_MILTER } from "./bare-servers.ts";
import { countKnob } from "./knobs.ts";
import { median } from "./stats.ts";
import { postfixMilterSession, provisionWithLease, roleEnv, roleReady } from "./role-doors.ts";

const WARM = countKnob("BENCH_GC_WARM", 5000);
const SESSIONS = countKnob("BENCH_GC_SESSIONS", 40_000);
const LANES = countKnob("BENCH_GC_LANES", 4);
const LEASED = "127.0.0.1";

/** `[pid:isolate]  1234 ms: Scavenge 46.2 (89.7) -> 26.8 (89.7) MB, pooled: 8 MB, 4.24 / 0.00 ms` */
const SCAVENGE = /: Scavenge [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB, .*?([\d.]+) \/ [\d.]+ ms/;

interface Scavenge {
  readonly afterMb: number;
  readonly pauseMs: number;
}

/** A server under --trace-gc; `lines` holds what it has logged so far. */
interface Traced {
  readonly child: ChildProcess;
  readonly lines: string[];
}

function traced(args: readonly string[], env?: NodeJS.ProcessEnv): Traced {
  const child = spawn(process.execPath, ["--trace-gc", ...args], {
    env: env ?? process.env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: string[] = [];
  let partial = "";
  child.stdout.on("data", (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts);
  });
  return { child, lines };
}

async function sessions(port: number, n: number): Promise<number> {
  const started = performance.now();
  const each = Math.ceil(n / LANES);
  await Promise.all(
    Array.from({ length: LANES }, async () => {
      for (let i = 0; i < each; i++) await postfixMilterSession(`127.0.0.1:${port}`, LEASED);
    }),
  );
  return (each * LANES) / ((performance.now() - started) / 1000);
}

async function measure(name: string, server: Traced, port: number): Promise<void> {
  await sessions(port, WARM);
  const from = server.lines.length;
  const perSecond = await sessions(port, SESSIONS);
  const scavenges: Scavenge[] = server.lines.slice(from).flatMap((line) => {
    const m = SCAVENGE.exec(line);
    return m === null ? [] : [{ afterMb: Number(m[1]), pauseMs: Number(m[2]) }];
  });
  const kept = scavenges.slice(1).map((s, i) => s.afterMb - (scavenges[i]?.afterMb ?? 0));
  const pauses = scavenges.map((s) => s.pauseMs);
  const totalMs = pauses.reduce((a, b) => a + b, 0);
  const figures = [
    `${scavenges.length} scavenges`,
    `pause median ${median(pauses).toFixed(2)} ms, worst ${Math.max(0, ...pauses).toFixed(2)} ms`,
    `kept after each ${kept.length === 0 ? "n/a" : median(kept).toFixed(1)} MB (median)`,
    `${((totalMs * 1000) / SESSIONS).toFixed(2)} µs of scavenging per session`,
    `${Math.round(perSecond)} sessions/s`,
  ];
  process.stdout.write(`${name.padEnd(18)} ${figures.join("; ")}\n`);
}

async function main(): Promise<void> {
  const nats = await startTestNatsServer();
  const children: ChildProcess[] = [];
  try {
    await provisionWithLease(nats.url, LEASED);
    process.stdout.write(
      `Scavenges under ${SESSIONS} milter sessions, ${LANES} at a time, after ${WARM} (node --trace-gc)\n`,
    );
    const ports = {
      policy: await freePort(),
      socketmap: await freePort(),
      milter: await freePort(),
      metrics: await freePort(),
    };
    const role = traced([CLI, "milter"], { ...process.env, ...roleEnv(nats.url, ports) });
    children.push(role.child);
    await roleReady(ports.metrics, 60_000);
    await measure("relaylease milter", role, ports.milter);
    const barePort = await freePort();
    const bare = traced(["--input-type=module", "-e", BARE_MILTER, String(barePort)]);
    children.push(bare.child);
    // Not its first line: under --trace-gc that may be a collection's.
    while (!bare.lines.includes("ready")) {
      if (bare.child.exitCode !== null) throw new Error("the bare Node milter exited at start");
      await new Promise((r) => setTimeout(r, 20));
    }
    await measure("bare Node milter", bare, barePort);
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await nats.cleanup();
  }
}

await main();
