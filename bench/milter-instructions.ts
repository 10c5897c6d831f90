// Instructions per milter connection, counted by valgrind's callgrind: the work a server does for
// one SMTP session, in user mode, as a number this VM's noise cannot blur. CPU time at an MTA's
// pace (bench/doors-pace.ts) and under Postfix (bench/mta.ts) is what the goals judge, but on a
// shared VM it moves ±20% between runs; the instruction count of the same code moves about ±5%
// (when garbage collections fall), so it shows whether a change made a connection do less.
// It counts no kernel time and no cache miss: compare servers with it, not with the C reference
// (libmilter's cost is mostly a thread per connection, in the kernel).
//
// Each server runs under `valgrind --tool=callgrind --instr-atstart=no`: it takes FIRST
// connections uncounted (V8 compiles for the first 25 000 or so, bench/role-doors.ts), then
// `callgrind_control` turns counting on for COUNT more and off again; their total over COUNT is
// one connection's count. A connection is what Postfix makes of a leased client with
// RELAYLEASE_ACCEPT_AT=connect, one at a time: OPTNEG, CONNECT with Postfix's macros, ACCEPT,
// close. `callgrind_annotate` on the kept output files shows where the instructions go. Servers:
//   relaylease  the role's process (`node services/cli.ts milter`, every front door open); its
//               count also holds its idle work over the run (NATS pings, the mirror's supervision),
//               about 0.2 ms of CPU a second natively
//   bare Node   bench/bare-servers.ts BARE_MILTER: canned frames, no parsing
//   libmilter   bench/reference-milter/drac-milter.c
// Run: `node bench/milter-instructions.ts` (about 3 minutes). Knobs: BENCH_INSN_FIRST (30000),
// BENCH_INSN_COUNT (5000), BENCH_INSN_ONLY (only the servers whose name holds this text),
// BENCH_INSN_KEEP (a directory to keep callgrind's output files in, one per server).
// Needs valgrind, gcc and libmilter-dev (scripts/install-bench-tools.sh) and nats-server.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "../services/dev/nats-server.ts";
import { CLI } from "../test/support/cli.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { buildFixture } from "./build-fixture.ts";
import { BARE_MILTER, printsALine } from "./bare-servers.ts";
import { countKnob } from "./knobs.ts";
import { postfixMilterSession, provisionWithLease, roleEnv, roleReady } from "./role-doors.ts";

const FIRST = countKnob("BENCH_INSN_FIRST", 30_000);
const COUNT = countKnob("BENCH_INSN_COUNT", 5000);
const ONLY = process.env["BENCH_INSN_ONLY"] ?? "";
const KEEP = process.env["BENCH_INSN_KEEP"];
const LEASED = "127.0.0.1";
interface Server {
  readonly name: string;
  readonly command: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  /** Resolves once it answers on `port`. */
  ready(child: ChildProcess): Promise<void>;
}

/** Instructions the server ran for COUNT connections, after FIRST uncounted ones. */
async function instructions(server: Server, port: number, out: string): Promise<number> {
  const valgrind = ["--tool=callgrind", "--instr-atstart=no", `--callgrind-out-file=${out}`];
  const [file = "", ...args] = server.command;
  const child = spawn("valgrind", [...valgrind, file, ...args], {
    env: { ...process.env, ...server.env },
    stdio: ["ignore", "pipe", "ignore"],
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const counting = async (on: boolean) => {
    const r = await run("callgrind_control", [`--instr=${on ? "on" : "off"}`, String(child.pid)]);
    if (r !== 0) throw new Error(`${server.name}: callgrind_control exited ${String(r)}`);
  };
  const sessions = async (n: number) => {
    for (let i = 0; i < n; i++) await postfixMilterSession(`127.0.0.1:${String(port)}`, LEASED);
  };
  try {
    await server.ready(child);
    await sessions(FIRST);
    await counting(true);
    await sessions(COUNT);
    await counting(false);
  } finally {
    child.kill("SIGTERM"); // callgrind writes its counts as the process ends, even by a signal
    await exited;
  }
  const totals = /^totals: (\d+)/m.exec(await readFile(out, "utf8"));
  if (totals === null) throw new Error(`${server.name}: no totals in ${out}`);
  return Number(totals[1]);
}

function run(file: string, args: readonly string[]): Promise<number | null> {
  return new Promise((resolve, reject) => {
    spawn(file, args, { stdio: "ignore" }).once("error", reject).once("exit", resolve);
  });
}

async function main(): Promise<void> {
  const nats = await startTestNatsServer();
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-bench-insn-"));
  try {
    await provisionWithLease(nats.url, LEASED);
    const leasedFile = path.join(dir, "leased.txt");
    await writeFile(leasedFile, `${LEASED}\n`);
    const metrics = await freePort();
    const port = await freePort();
    const servers: Server[] = [
      {
        name: "relaylease milter",
        command: [process.execPath, CLI, "milter"],
        env: roleEnv(nats.url, {
          policy: await freePort(),
          socketmap: await freePort(),
          milter: port,
          metrics,
        }),
        ready: () => roleReady(metrics, 120_000),
      },
      {
        name: "bare Node milter, canned frames",
        command: [process.execPath, "--input-type=module", "-e", BARE_MILTER, String(port)],
        ready: printsALine,
      },
      {
        name: "libmilter reference, C",
        command: [
          await buildFixture("drac-milter"),
          "-p",
          `inet:${port}@127.0.0.1`,
          "-f",
          leasedFile,
        ],
        ready: printsALine,
      },
    ];
    process.stdout.write(
      `Instructions per milter connection (callgrind), ${String(COUNT)} connections after ${String(FIRST)}\n`,
    );
    for (const server of servers) {
      if (!server.name.includes(ONLY)) continue;
      const out = path.join(KEEP ?? dir, `callgrind-${server.name.split(" ")[0] ?? ""}.out`);
      const each = Math.round((await instructions(server, port, out)) / COUNT);
      process.stdout.write(`${server.name.padEnd(34)} ${each.toLocaleString("en").padStart(9)}\n`);
      await sleep(200); // the port is free again
    }
  } finally {
    await nats.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
