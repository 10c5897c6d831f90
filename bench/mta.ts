// Postfix throughput with relaylease's relay checks against Postfix without them (the issue
// "The SMTP side", bench part). A benchmark, not a test: it prints figures and whether each meets
// its goal, and fails only when a run cannot be trusted.
//
// Everything on loopback (shared/reference/mta-protocols.md §7, §8, §10.1): a throwaway Postfix
// (test/support/postfix.ts) takes mail from Postfix's own load generator `smtp-source`, which
// connects from 127.0.0.1, and relays it to `smtp-sink` (relayhost = [127.0.0.1]:SINK). 127.0.0.1
// holds a lease (`relaylease grant`, with RELAYLEASE_NEVER_LEASE=192.0.2.0/24 so that loopback
// may) and is outside mynetworks (127.0.0.2/32), so each check really runs. Configurations:
//   baseline   no check (check_client_access static:OK)
//   policy     check_policy_service before reject_unauth_destination    goal >= 0.97 x baseline
//   socketmap  check_client_access socketmap:inet:...:drac               goal >= 0.97 x baseline
//   milter     relaylease's milter gate (static:OK + smtpd_milters)      goal >= the C reference
//   reference  bench/reference-milter/drac-milter.c on libmilter, the same decision and steps
//   floors     policy service and socketmap table answered by bench/reference-milter/
//              floor-tables.c (one thread, poll, the same answers, no decision): what Postfix's
//              own side of each check costs, which no server can take away
//   Node       the policy service and the milter answered by the bare Node servers of
//   floors     bench/bare-servers.ts (a canned OK or accept, no parsing, no decision): what any
//              Node server costs Postfix before it does anything
// The relaylease role runs as its own process (`node services/cli.ts milter`, every front door
// open, RELAYLEASE_ACCEPT_AT=connect, NODE_OPTIONS=--use-largepages=silent as the README
// advises), as beside a real MTA; the C milter is built into a cache
// dir outside the repository by bench/reference-milter/build.sh.
//
// Method: the role's doors first take BENCH_MTA_WARM sessions from our own clients, so that V8 has
// compiled what a long-running role has (bench/role-doors.ts); then an unmeasured warm-up round,
// then BENCH_MTA_REPEATS rounds, each running every configuration once, in a new order each round
// (so drift on a shared machine hits all alike and no configuration always follows the same one);
// the figure is smtp-source's messages per second, the median of the rounds. A goal is judged on
// paired ratios: in each round, the configuration's rate over its comparator's in that same round;
// the verdict is their median, printed with their quartiles so a reader sees how far the machine's
// noise reaches. A run counts only when smtp-source exits 0, the sink got exactly its messages,
// Postfix logged each `status=sent` and nothing was rejected, deferred or bounced, and (for the
// role's front doors) the role counted a leased accept at that door for each message. Each
// configuration is first probed with our SMTP client: 127.0.0.1 may relay, the unleased
// 127.0.0.3 may not (except at baseline, which checks nothing).
// Beside each rate, CPU per message (counted until the queue has drained): of every process the
// run needs (Postfix's, smtp-source, smtp-sink, the checkers), and of the checking process
// (bench/process-cpu.ts: the scheduler's clock, its user and kernel split by clock ticks). On a
// CPU-bound box the first is the rate's inverse without the noise of other work, so goals are
// judged both ways; each run waits (at most QUIET_WAIT_MS) for the CPUs to be quiet, and the
// share other processes took anyway is printed.
// Side by side: on a shared VM one configuration's CPU per message moves about 9 % from run to
// run, and not with the other configurations' runs of the same round (the noise is faster than a
// round), so a 3 % goal sits inside it. Two Postfix instances run at the same time see the same
// machine: the ratio of their CPU per message moved 2 % between rounds with both unchecked (an A/A
// run, 12 rounds). So after the rounds above, each goal is judged again with its configuration and
// its comparator run at once, each on its own Postfix, smtp-source and smtp-sink, the two swapping
// instances every round, BENCH_MTA_PAIRS rounds: the other's CPU per message over this one's (on a
// CPU-bound box, the ratio of the rates each would reach alone; the rates of two runs sharing the
// CPUs say how the scheduler split them). Each C floor is run beside no check the same way: what
// Postfix's own side of that check costs, which bounds what any server can reach; the Node policy
// floor beside no check and the Node milter floor beside libmilter: what the role's goals leave
// for its own work once Node has woken up, read and written.
//
// Needs root, Postfix, gcc and libmilter-dev (scripts/install-bench-tools.sh) and nats-server.
// Run: `node bench/mta.ts`. Knobs: BENCH_MTA_MESSAGES (per run), BENCH_MTA_SESSIONS (parallel
// SMTP sessions), BENCH_MTA_SIZE (body bytes), BENCH_MTA_REPEATS, BENCH_MTA_PAIRS (side-by-side
// rounds), BENCH_MTA_WARM.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, open, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import { freePort } from "../services/dev/nats-server.ts";
import { CLI, relaylease } from "../test/support/cli.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import {
  REMOTE_DOMAIN,
  createPostfix,
  postfixUnavailable,
  postfixVersion,
  type PostfixSettings,
  type ThrowawayPostfix,
} from "../test/support/postfix.ts";
import { tryEnvelope } from "../test/support/smtp-client.ts";
import { waitFor } from "../test/support/wait.ts";
import { provisionForTest } from "../test/support/role-harness.ts";
import { BARE_MILTER, BARE_POLICY, printsALine } from "./bare-servers.ts";
import { buildFixture } from "./build-fixture.ts";
import { countKnob } from "./knobs.ts";
import { median } from "./stats.ts";
import { TICKS_PER_SECOND, processCpu, statFields, type ProcessCpu } from "./process-cpu.ts";
import { LARGE_PAGES, roleEnv, roleReady, warmDoors } from "./role-doors.ts";

const MESSAGES = countKnob("BENCH_MTA_MESSAGES", 4000);
const SESSIONS = countKnob("BENCH_MTA_SESSIONS", 20);
const SIZE = countKnob("BENCH_MTA_SIZE", 1000);
const REPEATS = countKnob("BENCH_MTA_REPEATS", 3);
const PAIRS = countKnob("BENCH_MTA_PAIRS", 9);
/** Milter sessions, policy requests and socketmap lookups that warm the role (bench/role-doors.ts). */
const WARM = countKnob("BENCH_MTA_WARM", 30_000);
const LEASED = "127.0.0.1";
const UNLEASED = "127.0.0.3";
const MYNETWORKS = "127.0.0.2/32";
const FROM = "bench@client.example";
const TO = `rcpt@${REMOTE_DOMAIN}`;
/** A run that takes longer is broken, not slow. */
const RUN_TIMEOUT_MS = 300_000;
/** After smtp-source ends, the queue must drain into the sink within this. */
const DRAIN_TIMEOUT_MS = 120_000;
const READY_TIMEOUT_MS = 30_000;
/** Before each run, wait at most this long for other processes to leave the CPUs alone. */
const QUIET_WAIT_MS = 30_000;
const QUIET_SHARE = 0.15;
/** Postfix log lines that make a run meaningless. */
const BAD_LOG = /reject|status=(deferred|bounced)|fatal:|panic:|warning:/;
/**
 * Warnings that say nothing of the check under test: a VM's clock stepping against the file
 * system's, and cleanup's work-around for it (which costs every configuration alike).
 */
const HARMLESS_WARNING =
  /warning: (file system clock is \d+ seconds? ahead of local clock|resetting file time stamps)/;
const FLOOR_POLICY = "policy service, C floor";
const FLOOR_SOCKETMAP = "socketmap table, C floor";
const BASELINE = "no check (baseline)";
const REFERENCE = "libmilter reference (C)";

interface Ports {
  readonly sink: number;
  /** The second Postfix instance's, for side-by-side runs. */
  readonly twinSink: number;
  readonly policy: number;
  readonly socketmap: number;
  readonly milter: number;
  readonly reference: number;
  readonly floorPolicy: number;
  readonly floorSocketmap: number;
  readonly nodePolicy: number;
  readonly nodeMilter: number;
  /** The role's /metrics and /readyz. */
  readonly metrics: number;
}

interface Configuration {
  readonly name: string;
  readonly settings: (p: Ports) => PostfixSettings;
  /** Which process makes the decision (or answers without one), for its CPU use. */
  readonly checker: "role" | "reference" | "floor" | "nodePolicy" | "nodeMilter" | undefined;
  /** The role's front door under test: each message must be one leased accept there. */
  readonly door?: "policy" | "socketmap" | "milter";
  /** The figure the goal compares with, and the least ratio that meets it. */
  readonly goal?: { readonly against: string; readonly ratio: number };
  /** The C floor of the same check, where there is one. */
  readonly floor?: string;
  /** A floor: what it is run beside, side by side, and what that shows. */
  readonly beside?: { readonly against: string; readonly shows: string };
  /** It answers every client alike (a Node floor): the unleased probe relays too. */
  readonly answersAll?: true;
}

const GATE = "permit_mynetworks, check_client_access static:OK, reject_unauth_destination";
const relay = (check: string) => `permit_mynetworks, ${check}, reject_unauth_destination`;
const policyGate = (port: number): PostfixSettings => ({
  smtpd_relay_restrictions: relay(`check_policy_service inet:127.0.0.1:${port}`),
});
const socketmapGate = (port: number): PostfixSettings => ({
  smtpd_relay_restrictions: relay(`check_client_access socketmap:inet:127.0.0.1:${port}:drac`),
});
const milterGate = (port: number): PostfixSettings => ({
  smtpd_relay_restrictions: GATE,
  smtpd_milters: `inet:127.0.0.1:${port}`,
  milter_default_action: "tempfail",
});

const CONFIGURATIONS: readonly Configuration[] = [
  {
    name: BASELINE,
    settings: () => ({ smtpd_relay_restrictions: GATE }),
    checker: undefined,
  },
  {
    name: "policy service",
    settings: (p) => policyGate(p.policy),
    checker: "role",
    door: "policy",
    goal: { against: BASELINE, ratio: 0.97 },
    floor: FLOOR_POLICY,
  },
  {
    name: "socketmap table",
    settings: (p) => socketmapGate(p.socketmap),
    checker: "role",
    door: "socketmap",
    goal: { against: BASELINE, ratio: 0.97 },
    floor: FLOOR_SOCKETMAP,
  },
  {
    name: "relaylease milter",
    settings: (p) => milterGate(p.milter),
    checker: "role",
    door: "milter",
    goal: { against: REFERENCE, ratio: 1 },
  },
  {
    name: REFERENCE,
    settings: (p) => milterGate(p.reference),
    checker: "reference",
  },
  {
    name: FLOOR_POLICY,
    settings: (p) => policyGate(p.floorPolicy),
    checker: "floor",
    beside: { against: BASELINE, shows: "what Postfix's own side of the check costs" },
  },
  {
    name: FLOOR_SOCKETMAP,
    settings: (p) => socketmapGate(p.floorSocketmap),
    checker: "floor",
    beside: { against: BASELINE, shows: "what Postfix's own side of the check costs" },
  },
  {
    name: "policy service, Node floor",
    settings: (p) => policyGate(p.nodePolicy),
    checker: "nodePolicy",
    beside: { against: BASELINE, shows: "what a Node server costs before it decides" },
    answersAll: true,
  },
  {
    name: "milter, Node floor",
    settings: (p) => milterGate(p.nodeMilter),
    checker: "nodeMilter",
    beside: { against: REFERENCE, shows: "what a Node milter costs before it decides" },
    answersAll: true,
  },
];

/** A child process we started, with its stderr tail for failure messages. */
class Daemon {
  readonly name: string;
  readonly child: ChildProcess;
  #tail = "";
  #exit: string | undefined;

  constructor(name: string, file: string, args: readonly string[], env?: NodeJS.ProcessEnv) {
    this.name = name;
    this.child = spawn(file, args, { env: env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    this.child.stderr?.on("data", (chunk: Buffer) => {
      this.#tail = (this.#tail + chunk.toString()).slice(-4000);
    });
    this.child.on("exit", (code, signal) => {
      this.#exit = `exited (${signal ?? String(code)})`;
    });
    this.child.on("error", (err) => {
      this.#exit = `failed to start: ${err.message}`;
    });
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw this.error("has no pid");
    return pid;
  }

  /** Throws when the process has gone: a figure measured without it would be meaningless. */
  check(): void {
    if (this.#exit !== undefined) throw this.error(this.#exit);
  }

  error(what: string): Error {
    return new Error(`${this.name} ${what}\n--- stderr tail ---\n${this.#tail}`);
  }

  async stop(): Promise<void> {
    if (this.#exit !== undefined || this.child.pid === undefined) return;
    const gone = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(timer);
  }
}

/** smtp-sink with running counters (-c): how many messages it has taken so far. */
class Sink extends Daemon {
  messages = 0;
  /** An update cut short by the pipe: `sess=N quit=N mesg=N` records each end with `\r`. */
  #partial = "";

  constructor(command: readonly string[]) {
    super("smtp-sink", command[0] ?? "", command.slice(1));
    this.child.stdout?.on("data", (chunk: Buffer) => {
      const records = (this.#partial + chunk.toString()).split("\r");
      this.#partial = records.pop() ?? "";
      for (const record of records) {
        const m = /mesg=(\d+)/.exec(record);
        if (m !== null) this.messages = Number(m[1]);
      }
    });
  }
}

function sinkCommand(port: number): string[] {
  return ["smtp-sink", "-u", "nobody", "-c", `127.0.0.1:${port}`, "256"];
}

function sourceCommand(port: number, messages: number): string[] {
  const args = ["-s", SESSIONS, "-m", messages, "-l", SIZE, "-f", FROM, "-t", TO];
  return ["smtp-source", ...args.map(String), `127.0.0.1:${port}`];
}

interface StatCpu {
  readonly ppid: number;
  /** Its own user and system seconds, all threads. */
  readonly user: number;
  readonly system: number;
  /** Seconds of its children that have exited and been reaped. */
  readonly children: number;
}

/** From /proc/PID/stat, by ticks; undefined once the process is gone. */
async function statCpu(pid: number | "self"): Promise<StatCpu | undefined> {
  const f = await statFields(`/proc/${pid}/stat`);
  if (f === undefined) return undefined;
  const s = (i: number) => (f[i] ?? NaN) / TICKS_PER_SECOND;
  return { ppid: f[1] ?? 0, user: s(11), system: s(12), children: s(13) + s(14) };
}

/** The processes whose CPU a run is charged with; how many leased accepts the role counted. */
interface Accounted {
  readonly masterPid: number;
  readonly daemons: readonly Daemon[];
  readonly checker: Daemon | undefined;
  readonly decisions: (() => Promise<number>) | undefined;
}

/** The role's relaylease_decisions_total{door, verdict="accept", reason="leased"}, from /metrics. */
async function leasedAccepts(metricsPort: number, door: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("relaylease_decisions_total{")) continue;
    const labels = [`door="${door}"`, 'verdict="accept"', 'reason="leased"'];
    if (labels.every((l) => line.includes(l))) sum += Number(line.slice(line.lastIndexOf(" ")));
  }
  return sum;
}

interface CpuSnapshot {
  /** Postfix (the master and its children, live and reaped), the daemons. */
  readonly ours: number;
  readonly checker: ProcessCpu | undefined;
  /** Seconds all CPUs spent running processes (user, nice, system), and in all. */
  readonly busy: number;
  readonly total: number;
}

async function cpuSnapshot(a: Accounted): Promise<CpuSnapshot> {
  let ours = 0;
  const whole = (p: StatCpu | undefined) => (p === undefined ? 0 : p.user + p.system + p.children);
  ours += whole(await statCpu(a.masterPid));
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const p = await statCpu(Number(entry));
    if (p?.ppid === a.masterPid) ours += whole(p);
  }
  for (const d of a.daemons) ours += whole(await statCpu(d.pid));
  const checker = a.checker === undefined ? undefined : await processCpu(a.checker.pid);
  return { ours, checker, ...(await machineCpu()) };
}

/** Seconds all CPUs spent running processes (user, nice, system), and in all, so far. */
async function machineCpu(): Promise<{ busy: number; total: number }> {
  // cpu  user nice system idle iowait irq softirq steal: interrupts are nobody's process time.
  const line = (await readFile("/proc/stat", "utf8")).split("\n")[0] ?? "";
  const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const busy = (t[0] ?? 0) + (t[1] ?? 0) + (t[2] ?? 0);
  const total = t.reduce((x, y) => x + y, 0);
  return { busy: busy / TICKS_PER_SECOND, total: total / TICKS_PER_SECOND };
}

/**
 * Other work on a shared machine skews the rates: waits, at most QUIET_WAIT_MS, for a second in
 * which the CPUs ran processes less than QUIET_SHARE of the time (ours are idle between runs).
 */
async function quiet(): Promise<void> {
  const deadline = Date.now() + QUIET_WAIT_MS;
  for (;;) {
    const a = await machineCpu();
    await sleep(1000);
    const b = await machineCpu();
    if ((b.busy - a.busy) / (b.total - a.total) <= QUIET_SHARE || Date.now() > deadline) return;
  }
}

async function fileSize(file: string): Promise<number> {
  const fh = await open(file, "r").catch(() => undefined);
  if (fh === undefined) return 0;
  try {
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}

async function readFrom(file: string, offset: number): Promise<string> {
  const fh = await open(file, "r");
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.alloc(Math.max(0, size - offset));
    await fh.read(buf, 0, buf.length, offset);
    return buf.toString("utf8");
  } finally {
    await fh.close();
  }
}

interface SourceRun {
  readonly code: number | null;
  readonly stderr: string;
  /** smtp-source's CPU, user and system, in seconds. */
  readonly cpu: number;
}

/**
 * Runs smtp-source under bash, whose `times` then prints its children's CPU (the last line,
 * "0m1.234s 0m0.567s"): two runs at once cannot tell theirs apart in this process's counters.
 */
function runSource(command: readonly string[]): Promise<SourceRun> {
  return new Promise((resolve, reject) => {
    const script = '"$@"; status=$?; times; exit $status';
    const child = spawn("bash", ["-c", script, "bash", ...command], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout = (stdout + chunk.toString()).slice(-4000)));
    child.stderr.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      const times = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s\s*$/.exec(stdout);
      const seconds = (m: string | undefined, s: string | undefined) => Number(m) * 60 + Number(s);
      const cpu = times === null ? NaN : seconds(times[1], times[2]) + seconds(times[3], times[4]);
      resolve({ code, stderr, cpu });
    });
  });
}

interface Run {
  readonly perSecond: number;
  /** CPU per message of everything the run needs, smtp-source to smtp-sink, in microseconds. */
  readonly oursUs: number;
  /** CPU per message of the checking process, in microseconds: on a CPU, and its split. */
  readonly checkerUs: ProcessCpu | undefined;
  /** Share of all CPUs that processes not ours ran: other work on a shared machine (or, side by side, the other run). */
  readonly foreign: number;
}

/**
 * One smtp-source run, verified end to end: every message relayed, nothing refused. The rate is
 * smtp-source's; CPU is counted until the queue has drained, so it covers the whole delivery.
 */
async function measure(
  pf: ThrowawayPostfix,
  sink: Sink,
  accounted: Accounted,
  messages: number,
): Promise<Run> {
  const logStart = await fileSize(pf.maillog);
  const sunk = sink.messages;
  const decided = await accounted.decisions?.();
  const before = await cpuSnapshot(accounted);
  const t0 = performance.now();
  const r = await runSource(sourceCommand(pf.port, messages));
  const seconds = (performance.now() - t0) / 1000;
  let after: CpuSnapshot;
  try {
    if (r.code !== 0) throw new Error(`smtp-source exited ${String(r.code)}`);
    if (Number.isNaN(r.cpu)) throw new Error("smtp-source's CPU time was not printed");
    await verify(pf, sink, { logStart, sunk }, messages);
    for (const d of accounted.daemons) d.check();
    // Before the role is asked for its counters: rendering /metrics is not a decision's cost.
    after = await cpuSnapshot(accounted);
    const accepts = (await accounted.decisions?.()) ?? NaN;
    if (decided !== undefined && !(accepts - decided >= messages)) {
      throw new Error(`the role counted ${accepts - decided} leased accepts for ${messages}`);
    }
  } catch (err) {
    const log = (await readFrom(pf.maillog, logStart)).split("\n").slice(-30).join("\n");
    const detail = `--- smtp-source ---\n${r.stderr}\n--- maillog ---\n${log}`;
    throw new Error(`${(err as Error).message}\n${detail}`, { cause: err });
  }
  const perMessage = (b = 0, a = 0) => ((a - b) / messages) * 1e6;
  const { checker: c0 } = before;
  const { checker: c1 } = after;
  const ours = after.ours - before.ours + r.cpu;
  return {
    perSecond: messages / seconds,
    oursUs: (ours / messages) * 1e6,
    checkerUs:
      c0 === undefined
        ? undefined
        : {
            onCpu: perMessage(c0.onCpu, c1?.onCpu),
            user: perMessage(c0.user, c1?.user),
            system: perMessage(c0.system, c1?.system),
          },
    foreign: Math.max(0, after.busy - before.busy - ours) / (after.total - before.total),
  };
}

/**
 * Waits for the queue to drain into the sink, then checks that the sink got exactly `messages`
 * more than `sunk`, and that Postfix logged one `status=sent` each and nothing bad since `logStart`.
 */
async function verify(
  pf: ThrowawayPostfix,
  sink: Sink,
  from: { readonly logStart: number; readonly sunk: number },
  messages: number,
): Promise<void> {
  const target = from.sunk + messages;
  await waitFor(() => sink.messages >= target, DRAIN_TIMEOUT_MS, "the queue to drain", 50);
  const sent = async () => (await readFrom(pf.maillog, from.logStart)).match(/ status=sent /g);
  await waitFor(async () => ((await sent()) ?? []).length >= messages, 10_000, "the log", 50);
  const lines = (await readFrom(pf.maillog, from.logStart)).split("\n");
  const bad = lines.filter((line) => BAD_LOG.test(line) && !HARMLESS_WARNING.test(line));
  if (bad.length > 0) throw new Error(`Postfix logged ${bad.length} bad line(s): ${bad[0] ?? ""}`);
  if (sink.messages !== target) {
    throw new Error(`smtp-sink got ${sink.messages - from.sunk} messages, not ${messages}`);
  }
}

/** The first RCPT reply from each client: the leased one must relay, the other not if checked. */
async function probe(pf: ThrowawayPostfix, checked: boolean): Promise<string> {
  const reply = async (client: string) => {
    const r = await tryEnvelope(
      { host: pf.host, port: pf.port, localAddress: client },
      { from: FROM, to: [TO] },
    );
    return r.rcpt[0]?.raw ?? "(no reply)";
  };
  const leased = await reply(LEASED);
  const unleased = await reply(UNLEASED);
  const ok =
    /^250 /.test(leased) && (checked ? /^5\d\d 5\.7\.1 /.test(unleased) : /^250 /.test(unleased));
  const line = `${LEASED}: ${leased}; ${UNLEASED}: ${unleased}`;
  if (!ok) throw new Error(`probe failed: ${line}\n--- maillog ---\n${await pf.maillogTail()}`);
  return line;
}

type Cleanups = (() => Promise<unknown>)[];

async function main(): Promise<void> {
  const unavailable = await postfixUnavailable();
  if (unavailable !== undefined) throw new Error(`${unavailable} (scripts/install-bench-tools.sh)`);
  const cleanups: Cleanups = [];
  try {
    await bench(cleanups);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}

/** A fresh nats-server with the stream and bucket, and a lease of an hour for LEASED. */
async function startNatsWithLease(cleanups: Cleanups): Promise<string> {
  const nats = await startTestNatsServer();
  cleanups.push(() => nats.cleanup());
  const nc = await connect({ servers: nats.url });
  try {
    await provisionForTest(nc, {
      maxLeaseTtlMs: 3_600_000,
    });
  } finally {
    await nc.close();
  }
  // Loopback is on the default never-lease list; smtp-source can only come from 127.0.0.1.
  const env = { RELAYLEASE_NATS_URL: nats.url, RELAYLEASE_NEVER_LEASE: "192.0.2.0/24" };
  const grant = await relaylease(["grant", LEASED, "--ttl", "1h"], env);
  if (grant.code !== 0) throw new Error(`relaylease grant ${LEASED} failed: ${grant.stderr}`);
  return nats.url;
}

interface Started {
  readonly daemon: Daemon;
  /** How to start it by hand, for the report. */
  readonly command: string;
}

/** `relaylease milter` as its own process, every front door open; resolves once it is ready. */
async function startRole(natsUrl: string, ports: Ports, cleanups: Cleanups): Promise<Started> {
  const env = roleEnv(natsUrl, ports, {
    RELAYLEASE_TRUSTED_NETWORKS: MYNETWORKS,
    RELAYLEASE_LOCAL_DOMAINS: "mx.test.invalid localhost",
  });
  const daemon = new Daemon("relaylease milter role", process.execPath, [CLI, "milter"], {
    ...process.env,
    ...env,
  });
  cleanups.push(() => daemon.stop());
  await roleReady(ports.metrics, READY_TIMEOUT_MS, () => {
    daemon.check();
  });
  const assignments = Object.entries(env).map(([k, v]) => `${k}='${v}'`);
  return { daemon, command: `${assignments.join(" ")} node services/cli.ts milter` };
}

/** The C milter with LEASED as its only leased address; resolves once it listens. */
async function startReference(port: number, dir: string, cleanups: Cleanups): Promise<Started> {
  const leasedFile = path.join(dir, "leased.txt");
  await writeFile(leasedFile, `${LEASED}\n`);
  return startFixture("drac-milter", ["-p", `inet:${port}@127.0.0.1`, "-f", leasedFile], cleanups);
}

/** The C floor for the policy service and the socketmap table; resolves once it listens. */
function startFloor(ports: Ports, cleanups: Cleanups): Promise<Started> {
  const args = [String(ports.floorPolicy), String(ports.floorSocketmap), LEASED];
  return startFixture("floor-tables", args, cleanups);
}

/** A bare Node server (bench/bare-servers.ts) with the role's Node options, once it listens. */
function startNodeFloor(
  name: string,
  program: string,
  port: number,
  cleanups: Cleanups,
): Promise<Started> {
  const args = [LARGE_PAGES, "--input-type=module", "-e", program, String(port)];
  const command = `node ${LARGE_PAGES} --input-type=module -e "<${name} of bench/bare-servers.ts>" ${port}`;
  return startListening(name, process.execPath, args, command, cleanups);
}

/** Builds a C fixture and starts it; resolves once it prints its first line (it listens). */
async function startFixture(name: string, args: string[], cleanups: Cleanups): Promise<Started> {
  const built = await buildFixture(name);
  return startListening(name, built, args, `${built} ${args.join(" ")}`, cleanups);
}

/** Starts a server that prints a line once it listens; resolves then. */
async function startListening(
  name: string,
  file: string,
  args: readonly string[],
  command: string,
  cleanups: Cleanups,
): Promise<Started> {
  const daemon = new Daemon(name, file, args);
  cleanups.push(() => daemon.stop());
  await printsALine(daemon.child).catch(() => {
    throw daemon.error("exited at start");
  });
  return { daemon, command };
}

async function bench(cleanups: Cleanups): Promise<void> {
  const ports: Ports = {
    sink: await freePort(),
    twinSink: await freePort(),
    policy: await freePort(),
    socketmap: await freePort(),
    milter: await freePort(),
    reference: await freePort(),
    floorPolicy: await freePort(),
    floorSocketmap: await freePort(),
    nodePolicy: await freePort(),
    nodeMilter: await freePort(),
    metrics: await freePort(),
  };
  const dir = await mkdtemp(path.join(tmpdir(), "relaylease-bench-mta-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const role = await startRole(await startNatsWithLease(cleanups), ports, cleanups);
  const reference = await startReference(ports.reference, dir, cleanups);
  const floor = await startFloor(ports, cleanups);
  const nodePolicy = await startNodeFloor("BARE_POLICY", BARE_POLICY, ports.nodePolicy, cleanups);
  const nodeMilter = await startNodeFloor("BARE_MILTER", BARE_MILTER, ports.nodeMilter, cleanups);
  const primary = await startInstance(ports.sink, ports, cleanups);
  const twin = await startInstance(ports.twinSink, ports, cleanups);
  const { pf } = primary;
  // Warmed last: its 30 000 connections leave as many local ports in TIME_WAIT, and a port
  // picked before them but bound after (the C fixtures', Postfix's) could be one of them.
  await warmDoors(ports, LEASED, WARM);
  // The Node floors are warmed alike (they have no socketmap door).
  await warmDoors({ policy: ports.nodePolicy, milter: ports.nodeMilter }, LEASED, WARM);

  const checkers = {
    role: role.daemon,
    reference: reference.daemon,
    floor: floor.daemon,
    nodePolicy: nodePolicy.daemon,
    nodeMilter: nodeMilter.daemon,
  };
  /** Sequential runs are charged with every daemon (idle ones cost nothing); side by side, each with its own. */
  const accounted = (
    { checker, door }: Configuration,
    on: Instance,
    daemons: readonly Daemon[],
  ): Accounted => ({
    masterPid: on.masterPid,
    daemons,
    checker: checker === undefined ? undefined : checkers[checker],
    decisions: door === undefined ? undefined : () => leasedAccepts(ports.metrics, door),
  });
  const everyDaemon = [...Object.values(checkers), primary.sink];
  const runs = new Map<string, Run[]>(CONFIGURATIONS.map((c) => [c.name, []]));
  const setup = `${SESSIONS} sessions x ${MESSAGES} messages of ${SIZE} bytes, median of ${REPEATS}`;
  process.stdout.write(`Postfix ${await postfixVersion()}, ${setup}\n`);
  for (let round = 0; round <= REPEATS; round++) {
    for (const c of round === 0 ? CONFIGURATIONS : shuffled(CONFIGURATIONS, round)) {
      await pf.reconfigure({ ...primary.relaying, ...c.settings(ports) });
      await quiet();
      const on = accounted(c, primary, everyDaemon);
      if (round > 0) {
        runs.get(c.name)?.push(await measure(pf, primary.sink, on, MESSAGES));
        continue;
      }
      // Warm-up round: the probes, and a tenth of a run to warm caches and the JIT.
      const checked = c.checker !== undefined && c.answersAll !== true;
      process.stdout.write(`probe ${c.name}: ${await probe(pf, checked)}\n`);
      await measure(pf, primary.sink, on, Math.ceil(MESSAGES / 10));
    }
  }

  const compared = CONFIGURATIONS.flatMap((c) => {
    const against = sideBySideAgainst(c);
    if (against === undefined) return [];
    const other = CONFIGURATIONS.find((o) => o.name === against);
    if (other === undefined) throw new Error(`${c.name}: no configuration ${against}`);
    return [[c, other] as const];
  });
  const pairs = new Map<string, [Run, Run][]>(compared.map(([c]) => [c.name, []]));
  const own = (x: Configuration, on: Instance) =>
    accounted(x, on, x.checker === undefined ? [on.sink] : [on.sink, checkers[x.checker]]);
  for (let round = 0; round <= PAIRS; round++) {
    for (const [c, other] of shuffled(compared, round)) {
      const [mine, theirs] = round % 2 === 0 ? [primary, twin] : [twin, primary];
      await Promise.all([
        mine.pf.reconfigure({ ...mine.relaying, ...c.settings(ports) }),
        theirs.pf.reconfigure({ ...theirs.relaying, ...other.settings(ports) }),
      ]);
      await quiet();
      // Round 0 warms the twin's processes; its runs are not kept.
      const messages = round === 0 ? Math.ceil(MESSAGES / 10) : MESSAGES;
      const pair = await Promise.all([
        measure(mine.pf, mine.sink, own(c, mine), messages),
        measure(theirs.pf, theirs.sink, own(other, theirs), messages),
      ]);
      if (round > 0) pairs.get(c.name)?.push(pair);
    }
  }
  report(runs, pairs, ports, pf, {
    role: role.command,
    reference: reference.command,
    floor: floor.command,
    node: [nodePolicy.command, nodeMilter.command],
  });
}

/** What a configuration is run beside: its goal's comparator, or a floor's partner. */
function sideBySideAgainst(c: Configuration): string | undefined {
  return c.goal?.against ?? c.beside?.against;
}

interface Instance {
  readonly pf: ThrowawayPostfix;
  readonly sink: Sink;
  readonly masterPid: number;
  /** Its main.cf settings that relay to its own smtp-sink. */
  readonly relaying: PostfixSettings;
}

/** A throwaway Postfix relaying to its own smtp-sink, with no check yet. */
async function startInstance(
  sinkPort: number,
  ports: Ports,
  cleanups: Cleanups,
): Promise<Instance> {
  const sink = new Sink(sinkCommand(sinkPort));
  cleanups.push(() => sink.stop());
  const pf = await createPostfix({ mynetworks: MYNETWORKS });
  cleanups.push(() => pf.cleanup());
  const relaying = { relayhost: `[127.0.0.1]:${sinkPort}`, defer_transports: "" };
  await pf.start({ ...relaying, ...CONFIGURATIONS[0]?.settings(ports) });
  sink.check();
  const masterPid = Number(await readFile(path.join(pf.dir, "queue/pid/master.pid"), "utf8"));
  return { pf, sink, masterPid, relaying };
}

/** The items in an order that depends only on `seed` (Fisher-Yates over a small LCG). */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let state = (seed * 2_654_435_761) >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** The value at quantile q (0..1) of xs, the nearest rank. */
function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))] ?? NaN;
}

/** Round by round, f(this run) over f(the other's run in the same round). */
function pairedRatios(
  mine: readonly Run[],
  other: readonly Run[],
  f: (mine: Run, other: Run) => number,
): number[] {
  return mine.flatMap((r, i) => {
    const o = other[i];
    return o === undefined ? [] : [f(r, o)];
  });
}

/** Round by round, this configuration's rate over the other's: its comparator, baseline or C floor. */
function rateRatios(mine: readonly Run[], other: readonly Run[]): number[] {
  return pairedRatios(mine, other, (a, b) => a.perSecond / b.perSecond);
}

/** "0.981 [0.962..0.995]": the median of paired ratios and their quartiles. */
function spread(ratios: readonly number[]): string {
  const q = (x: number) => quantile(ratios, x).toFixed(3);
  return `${q(0.5)} [${q(0.25)}..${q(0.75)}]`;
}

/** The ratios' spread and whether their median reaches the goal's ratio. */
function judged(ratios: readonly number[], goal: number): string {
  return `${spread(ratios)} ${quantile(ratios, 0.5) >= goal ? "met" : "NOT met"}`;
}

/** Medians over a configuration's runs. */
function medians(rs: readonly Run[]) {
  const of = (f: (r: Run) => number) => median(rs.map(f));
  return {
    perSecond: of((r) => r.perSecond),
    oursUs: of((r) => r.oursUs),
    checker: of((r) => r.checkerUs?.onCpu ?? NaN),
    user: of((r) => r.checkerUs?.user ?? NaN),
    system: of((r) => r.checkerUs?.system ?? NaN),
    foreign: of((r) => r.foreign),
  };
}

/**
 * Two lines per configuration. The goal is judged on smtp-source's rate, as asked, and also on
 * CPU per message (as a rate: the other's CPU over this one's), which other work on a shared
 * machine disturbs far less than it disturbs the rate.
 */
function figureLines(c: Configuration, runs: ReadonlyMap<string, readonly Run[]>): string[] {
  const rs = runs.get(c.name) ?? [];
  const m = medians(rs);
  const baseRuns = runs.get(CONFIGURATIONS[0]?.name ?? "") ?? [];
  const base = medians(baseRuns);
  let goal = "";
  const target = c.goal;
  if (target !== undefined) {
    const other = runs.get(target.against) ?? [];
    const byRate = judged(rateRatios(rs, other), target.ratio);
    const byCpu = judged(
      pairedRatios(rs, other, (a, b) => b.oursUs / a.oursUs),
      target.ratio,
    );
    goal = `  goal >= ${target.ratio.toFixed(2)} x ${target.against}: ${byRate} (by CPU/msg: ${byCpu})`;
  }
  const toBase = spread(rateRatios(rs, baseRuns));
  const figure = `${m.perSecond.toFixed(0).padStart(5)} msg/s  ${toBase} x baseline`;
  const each = (f: (r: Run) => number) => rs.map((r) => f(r).toFixed(0)).join("/");
  const all = `${m.oursUs.toFixed(0)} µs (${(m.oursUs / base.oursUs).toFixed(3)} x baseline)`;
  const details = [
    `runs ${each((r) => r.perSecond)} msg/s`,
    ...(c.floor === undefined
      ? []
      : [`over its C floor: ${spread(rateRatios(rs, runs.get(c.floor) ?? []))}`]),
    `CPU/msg: all processes ${all}, runs ${each((r) => r.oursUs)}`,
  ];
  if (!Number.isNaN(m.checker)) {
    const split = `ticks: ${m.user.toFixed(0)} user + ${m.system.toFixed(0)} sys`;
    details.push(`${c.checker ?? ""} ${m.checker.toFixed(0)} µs (${split})`);
  }
  details.push(`other load ${(m.foreign * 100).toFixed(0)}% of the CPUs`);
  return [`${c.name.padEnd(28)} ${figure}${goal}`, `${"".padEnd(30)}[${details.join("; ")}]`];
}

/**
 * Each goal judged side by side: round by round, the comparator's CPU per message over the
 * configuration's (as a rate), and the two rates, run at the same time.
 */
function sideBySideLines(pairs: ReadonlyMap<string, readonly (readonly [Run, Run])[]>): string[] {
  const out = [
    "",
    `Side by side (each goal's configuration and its comparator, each floor and its partner, at the same time, each on its own Postfix, ${PAIRS} rounds):`,
  ];
  for (const c of CONFIGURATIONS) {
    const ps = pairs.get(c.name);
    const against = sideBySideAgainst(c);
    if (ps === undefined || against === undefined) continue;
    const byCpu = ps.map(([mine, other]) => other.oursUs / mine.oursUs);
    const byRate = ps.map(([mine, other]) => mine.perSecond / other.perSecond);
    const goal = c.goal;
    const verdict =
      goal === undefined
        ? `x ${against}: by CPU/msg ${spread(byCpu)} (${c.beside?.shows ?? ""})`
        : `goal >= ${goal.ratio.toFixed(2)} x ${against}: by CPU/msg ${judged(byCpu, goal.ratio)}`;
    const checker = median(ps.map(([mine]) => mine.checkerUs?.onCpu ?? NaN));
    const own = Number.isNaN(checker) ? "" : `; ${c.checker ?? ""} ${checker.toFixed(0)} µs`;
    const cpu = `${median(ps.map(([m]) => m.oursUs)).toFixed(0)} vs ${median(ps.map(([, o]) => o.oursUs)).toFixed(0)} µs`;
    out.push(
      `${c.name.padEnd(28)} ${verdict} (rate ${spread(byRate)})`,
      `${"".padEnd(30)}[CPU/msg: all processes ${cpu}${own}]`,
    );
  }
  return out;
}

function report(
  runs: ReadonlyMap<string, readonly Run[]>,
  pairs: ReadonlyMap<string, readonly (readonly [Run, Run])[]>,
  ports: Ports,
  pf: ThrowawayPostfix,
  commands: {
    readonly role: string;
    readonly reference: string;
    readonly floor: string;
    readonly node: readonly string[];
  },
): void {
  const out: string[] = [""];
  for (const c of CONFIGURATIONS) out.push(...figureLines(c, runs));
  out.push(...sideBySideLines(pairs));
  out.push(
    "",
    "Commands (smtp-source for each run; smtp-sink, the role and the C fixtures throughout):",
    `  ${sourceCommand(pf.port, MESSAGES).join(" ")}`,
    `  ${sinkCommand(ports.sink).join(" ")} (side by side also ${sinkCommand(ports.twinSink).join(" ")}, for a second Postfix alike)`,
    `  ${commands.role}`,
    `  ${commands.reference}`,
    `  ${commands.floor}`,
    ...commands.node.map((command) => `  ${command}`),
    `  Postfix ${pf.configDir}/main.cf: mynetworks = ${MYNETWORKS}, relayhost = [127.0.0.1]:${ports.sink}, defer_transports =, and`,
  );
  for (const c of CONFIGURATIONS) {
    const settings = Object.entries(c.settings(ports)).map(([k, v]) => `${k} = ${v}`);
    out.push(`    ${c.name}: ${settings.join("; ")}`);
  }
  process.stdout.write(`${out.join("\n")}\n`);
}

await main();
