// CPU per request of the role's front doors at an MTA's pace, against the floors below it. A
// benchmark, not a test: it prints figures and fails only when an answer is wrong.
//
// What Postfix costs the role is mostly per wake-up, not per byte: at 300 messages a second
// every request or milter connection wakes the process on its own, with cold caches. So this
// drives the real role process (`node services/cli.ts milter`, every door open) with our own MTA
// clients, 20 at a time, paced to PACE operations a second in all, and reads the process's CPU
// from /proc:
//   milter     one connection per operation, as Postfix opens one per SMTP session: OPTNEG,
//              CONNECT with Postfix's macros (accept at connect: 127.0.0.1 holds a lease), QUIT
//   policy     one request per operation over 20 persistent connections, as smtpd keeps them
//   socketmap  one lookup per operation over 20 persistent connections
// and, for each door, floors on the same load:
//   libmilter  bench/reference-milter/drac-milter.c (C, a thread per connection)
//   bare node  a Node server answering OPTNEG and CONNECT with canned frames, no parsing: what a
//              Node milter costs before it does anything; and one answering each policy request
//              (up to its blank line) with a canned action
//   C floor    bench/reference-milter/floor-tables.c (one thread, poll): the policy service and
//              the socketmap table with the same answers and no decision
// Run: `node bench/doors-pace.ts`. Knobs: BENCH_PACE (operations per second, default 300; 0 =
// as fast as the clients go), BENCH_PACE_OPS (per run, 3000), BENCH_PACE_ROUNDS (3, best kept),
// BENCH_PACE_ONLY (only the runs whose name holds this text, e.g. "policy"), BENCH_PACE_WARM
// (30000: sessions at each of the role's doors before any run, bench/role-doors.ts).
// Needs nats-server (NATS_SERVER_BIN) and gcc + libmilter-dev (scripts/install-bench-tools.sh).
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../services/dev/nats-server.ts";
import { CLI } from "../test/support/cli.ts";
import { MilterClient } from "../test/support/milter-client.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../test/support/policy-client.ts";
import { SocketmapClient } from "../test/support/socketmap-client.ts";
import { buildFixture } from "./build-fixture.ts";
import { BARE_MILTER, BARE_POLICY, printsALine } from "./bare-servers.ts";
import {
  LARGE_PAGES,
  postfixConnectMacros,
  provisionWithLease,
  roleEnv,
  roleReady,
  warmDoors,
} from "./role-doors.ts";
import { processCpu, type ProcessCpu } from "./process-cpu.ts";
import { countKnob } from "./knobs.ts";

const PACE = countKnob("BENCH_PACE", 300, 0);
const OPS = countKnob("BENCH_PACE_OPS", 3000);
const ROUNDS = countKnob("BENCH_PACE_ROUNDS", 3);
/** Milter sessions, policy requests and socketmap lookups that warm the role first (role-doors.ts). */
const WARM = countKnob("BENCH_PACE_WARM", 30_000);
/** Only the runs whose name holds this text. */
const ONLY = process.env["BENCH_PACE_ONLY"] ?? "";
const CLIENTS = 20;
const LEASED = "127.0.0.1";

type Cleanups = (() => Promise<unknown>)[];

/** A live process's CPU so far (bench/process-cpu.ts). */
async function cpuOf(pid: number): Promise<ProcessCpu> {
  const cpu = await processCpu(pid);
  if (cpu === undefined) throw new Error(`process ${pid} has gone`);
  return cpu;
}

function started(child: ChildProcess, cleanups: Cleanups): number {
  cleanups.push(async () => {
    child.kill("SIGTERM");
    await sleep(200);
  });
  if (child.pid === undefined) throw new Error("a benchmark process did not start");
  return child.pid;
}

/** Runs OPS operations, CLIENTS at a time, paced; the process's CPU per operation in µs. */
async function measure(pid: number, op: (i: number) => Promise<void>) {
  for (let i = 0; i < OPS / 10; i++) await op(i); // warm-up
  await sleep(300);
  const before = await cpuOf(pid);
  const t0 = performance.now();
  let next = 0;
  const gapMs = PACE > 0 ? (CLIENTS * 1000) / PACE : 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next < OPS) {
        const began = performance.now();
        await op(next++);
        const wait = gapMs - (performance.now() - began);
        if (wait > 0) await sleep(wait);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await sleep(300);
  const after = await cpuOf(pid);
  const us = (s: number) => (s * 1e6) / OPS;
  const user = after.user - before.user;
  const system = after.system - before.system;
  const onCpu = after.onCpu - before.onCpu;
  // The sampled split, scaled to the exact total.
  const userShare = user + system > 0 ? user / (user + system) : 0;
  return { rate: OPS / seconds, cpu: us(onCpu), user: us(onCpu * userShare) };
}

async function milterSession(port: number): Promise<void> {
  const c = await MilterClient.connect(`127.0.0.1:${port}`);
  await c.negotiate();
  const reply = await c.connectStep(
    { family: "4", address: LEASED, port: 40000 },
    postfixConnectMacros(LEASED),
  );
  if (reply?.type !== "accept") throw new Error(`milter answered ${JSON.stringify(reply)}`);
  await c.send({ type: "quit" });
  await c.closed;
}

async function main(cleanups: Cleanups): Promise<void> {
  const nats = await startTestNatsServer();
  cleanups.push(() => nats.cleanup());
  await provisionWithLease(nats.url, LEASED);
  const port = {
    policy: 0,
    socketmap: 0,
    milter: 0,
    metrics: 0,
    libmilter: 0,
    bare: 0,
    barePolicy: 0,
    floorPolicy: 0,
    floorSocketmap: 0,
  };
  for (const k of Object.keys(port) as (keyof typeof port)[]) port[k] = await freePort();
  const role = spawn(process.execPath, [CLI, "milter"], {
    env: { ...process.env, ...roleEnv(nats.url, port) },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const rolePid = started(role, cleanups);
  await roleReady(port.metrics, 30_000);
  await warmDoors(port, LEASED, WARM);
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-bench-pace-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const leasedFile = path.join(dir, "leased.txt");
  await writeFile(leasedFile, `${LEASED}\n`);
  /** Starts a floor or reference server; resolves with its pid once it prints that it listens. */
  const launch = async (file: string, args: string[]) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "inherit"] });
    const pid = started(child, cleanups);
    await printsALine(child);
    return pid;
  };
  const libmilterPid = await launch(await buildFixture("drac-milter"), [
    "-p",
    `inet:${port.libmilter}@127.0.0.1`,
    "-f",
    leasedFile,
  ]);
  const node = (program: string, p: number) =>
    launch(process.execPath, [LARGE_PAGES, "--input-type=module", "-e", program, String(p)]);
  const barePid = await node(BARE_MILTER, port.bare);
  const barePolicyPid = await node(BARE_POLICY, port.barePolicy);
  const floorPid = await launch(await buildFixture("floor-tables"), [
    String(port.floorPolicy),
    String(port.floorSocketmap),
    LEASED,
  ]);

  /** CLIENTS persistent connections to a port, closed at the end. */
  const clients = async <T extends { close(): Promise<unknown> }>(
    connect: (address: string) => Promise<T>,
    p: number,
  ) => {
    const cs = await Promise.all(Array.from({ length: CLIENTS }, () => connect(`127.0.0.1:${p}`)));
    cleanups.push(() => Promise.all(cs.map((c) => c.close())));
    return cs;
  };
  /** One policy request per operation to the server on port p, answered OK. */
  const policyAt = async (p: number) => {
    const cs = await clients((a) => PolicyClient.connect(a), p);
    return async (i: number) => {
      const action = await cs[i % CLIENTS]?.query({
        ...POSTFIX_RCPT_REQUEST,
        client_address: LEASED,
      });
      if (action !== "OK") throw new Error(`policy answered ${String(action)}`);
    };
  };
  /** One socketmap lookup per operation to the server on port p, answered OK. */
  const socketmapAt = async (p: number) => {
    const cs = await clients((a) => SocketmapClient.connect(a), p);
    return async (i: number) => {
      const reply = await cs[i % CLIENTS]?.lookup("drac", LEASED);
      if (reply?.status !== "OK") throw new Error(`socketmap answered ${JSON.stringify(reply)}`);
    };
  };
  const runs: [string, number, (i: number) => Promise<void>][] = [
    ["relaylease milter (connection)", rolePid, () => milterSession(port.milter)],
    ["libmilter reference, C", libmilterPid, () => milterSession(port.libmilter)],
    ["bare Node milter, canned frames", barePid, () => milterSession(port.bare)],
    ["relaylease policy (request)", rolePid, await policyAt(port.policy)],
    ["bare Node policy, canned action", barePolicyPid, await policyAt(port.barePolicy)],
    ["policy C floor", floorPid, await policyAt(port.floorPolicy)],
    ["relaylease socketmap (lookup)", rolePid, await socketmapAt(port.socketmap)],
    ["socketmap C floor", floorPid, await socketmapAt(port.floorSocketmap)],
  ];
  const best = new Map<string, { rate: number; cpu: number; user: number }>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, pid, op] of runs) {
      if (!name.includes(ONLY)) continue;
      const r = await measure(pid, op);
      const had = best.get(name);
      if (had === undefined || r.cpu < had.cpu) best.set(name, r);
    }
  }
  const pace = PACE > 0 ? `${PACE}/s in all` : "as fast as the clients go";
  process.stdout.write(
    `CPU per operation of the answering process, ${CLIENTS} clients, ${pace}, ${OPS} per run, best of ${ROUNDS}\n`,
  );
  for (const [name, r] of best) {
    const cpu = `${r.cpu.toFixed(1)} µs (about ${r.user.toFixed(0)} of it in user mode)`;
    process.stdout.write(`${name.padEnd(34)} ${r.rate.toFixed(0).padStart(6)}/s  ${cpu}\n`);
  }
}

const cleanups: Cleanups = [];
try {
  await main(cleanups);
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
}
