// Outbox benchmark: how many login events per second the watcher's outbox makes durable (written
// and fdatasync'd before append() resolves), by number of concurrent appenders and commit delay;
// how fast it drains to a stream that stores at once; how long an open takes to recover a backlog.
// The stand-in stream is in-process, so the drain figure is the outbox's own ceiling.
// Not a test: nothing here passes or fails. Run with `node bench/outbox.ts [seconds per case]`;
// the directory is a temp dir, or OUTBOX_BENCH_DIR to measure another disk.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createLogger } from "../shared/log.ts";
import type { LoginEvent } from "../shared/login-event.ts";
import { Outbox, type OutboxOptions } from "../services/watcher/outbox.ts";

const SECONDS = Number(process.argv[2] ?? 3);
const log = createLogger("silent");
let counter = 0;

function event(): LoginEvent {
  const i = counter++;
  return {
    id: `bench-${i}`,
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    user: `user${i % 5000}@example.org`,
    service: "imap",
    source: "dovecot-log",
    watcher: "pop-7f9c4b",
    loginAt: Date.now(),
    // As the intake makes them: each event carries the traceparent of its login's span.
    trace: `00-${i.toString(16).padStart(32, "0")}-${"5".repeat(16)}-01`,
  };
}

/** A stream that stores every event on the next turn of the event loop. */
const instant = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const parent = process.env.OUTBOX_BENCH_DIR ?? tmpdir();
  const dir = await mkdtemp(join(parent, "relaylease-outbox-bench-"));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchAppend(writers: number, commitDelayMs: number): Promise<void> {
  await withDir(async (dir) => {
    const outbox = await Outbox.open(dir, { publish: instant, log, commitDelayMs });
    const latencies: number[] = [];
    const deadline = performance.now() + SECONDS * 1000;
    const writer = async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        await outbox.append(event());
        latencies.push(performance.now() - t);
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: writers }, writer));
    const seconds = (performance.now() - t0) / 1000;
    const s = outbox.stats();
    await outbox.close();
    latencies.sort((a, b) => a - b);
    const name = `append, ${writers} writer${writers > 1 ? "s" : ""}, commit delay ${commitDelayMs} ms`;
    process.stdout.write(
      `${name.padEnd(44)} ${Math.round(s.appended / seconds).toLocaleString("en")}/s` +
        `  p50 ${quantile(latencies, 0.5).toFixed(3)} ms  p99 ${quantile(latencies, 0.99).toFixed(3)} ms` +
        `  ${(s.appended / s.syncs).toFixed(1)} events/sync  (n=${s.appended})\n`,
    );
  });
}

/** Fills the outbox while the stream is away, then times the drain once it is back. */
async function benchDrain(events: number, maxInFlight: number): Promise<void> {
  await withDir(async (dir) => {
    let up = false;
    let back: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (back = resolve));
    const publish = async () => {
      if (!up) await gate;
      await instant();
    };
    const options: OutboxOptions = { publish, log, maxInFlight };
    const filling = await Outbox.open(dir, options);
    await fill(filling, events);
    await filling.close();
    const t0 = performance.now();
    const outbox = await Outbox.open(dir, { ...options, publish: instant });
    const opened = performance.now();
    const onDisk = outbox.stats().bytes;
    up = true;
    back();
    while (outbox.stats().depth > 0) await new Promise((r) => setTimeout(r, 5));
    const t1 = performance.now();
    await outbox.close();
    const mb = (onDisk / 2 ** 20).toFixed(1);
    const perEvent = Math.round(onDisk / events);
    process.stdout.write(
      `${`open (recover ${events.toLocaleString("en")} events)`.padEnd(44)} ${(opened - t0).toFixed(0)} ms  (${mb} MB, ${perEvent} bytes/event)\n` +
        `${`drain, maxInFlight ${maxInFlight}`.padEnd(44)} ${Math.round(events / ((t1 - opened) / 1000)).toLocaleString("en")}/s  (n=${events})\n`,
    );
  });
}

async function fill(outbox: Outbox, events: number): Promise<void> {
  let left = events;
  const writer = async () => {
    while (left-- > 0) await outbox.append(event());
  };
  await Promise.all(Array.from({ length: 256 }, writer));
}

async function main(): Promise<void> {
  process.stdout.write(
    `outbox, ${SECONDS} s per case, in ${process.env.OUTBOX_BENCH_DIR ?? tmpdir()}\n`,
  );
  for (const delay of [0, 2]) {
    for (const writers of [1, 64]) await benchAppend(writers, delay);
  }
  await benchDrain(200_000, 64);
}

await main();
