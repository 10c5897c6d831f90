// A benchmark's reading of another process's CPU use, from /proc.
//
// /proc/PID/stat's user and system times are sampled at each clock tick: a process that runs a
// few milliseconds a second gets a ±20% figure from a ten-second run. The scheduler's own clock
// (/proc/PID/task/TID/schedstat, nanoseconds) is exact, but only per live thread: a thread that
// has ended (libmilter runs one per connection) is gone from it. So a process's CPU here is the
// exact sum over its live threads plus the tick-sampled time of the threads that have ended.
import { readFile, readdir } from "node:fs/promises";

/** USER_HZ: /proc times are in these ticks (100 on every Linux this runs on). */
export const TICKS_PER_SECOND = 100;

export interface ProcessCpu {
  /** Seconds on a CPU, all threads. */
  readonly onCpu: number;
  /** Seconds in user and in kernel mode, by clock ticks: a rough split of onCpu. */
  readonly user: number;
  readonly system: number;
}

/** The process's CPU so far, or undefined once it has gone. */
export async function processCpu(pid: number): Promise<ProcessCpu | undefined> {
  const own = await ticks(`/proc/${pid}/stat`);
  if (own === undefined) return undefined;
  let exact = 0;
  let liveTicks = 0;
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const schedstat = await readFile(`/proc/${pid}/task/${tid}/schedstat`, "utf8").catch(() => "");
    const thread = await ticks(`/proc/${pid}/task/${tid}/stat`);
    if (schedstat === "" || thread === undefined) continue; // ended while we read
    exact += Number(schedstat.split(" ")[0]) / 1e9;
    liveTicks += thread.user + thread.system;
  }
  const ended = Math.max(0, own.user + own.system - liveTicks);
  return { onCpu: exact + ended, user: own.user, system: own.system };
}

/** User and system seconds from a stat file, by ticks. */
async function ticks(file: string): Promise<{ user: number; system: number } | undefined> {
  const f = await statFields(file);
  if (f === undefined) return undefined;
  return { user: (f[11] ?? NaN) / TICKS_PER_SECOND, system: (f[12] ?? NaN) / TICKS_PER_SECOND };
}

/**
 * The numeric fields of a /proc stat file after its `(comm)`, so index 0 is the state (field 3
 * of proc(5)), 1 the ppid, 11 and 12 utime and stime, 13 and 14 cutime and cstime; undefined
 * once the process or thread is gone.
 */
export async function statFields(file: string): Promise<number[] | undefined> {
  const stat = await readFile(file, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  // "pid (comm) state ...": comm may hold anything, so count fields after the last ')'.
  return stat
    .slice(stat.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
}
