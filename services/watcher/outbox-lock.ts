// The owner lock of an outbox directory: one process at a time may use it (two would write the
// same segment names and publish each other's events). The lock is a file `lock`, created with
// O_EXCL, holding `{pid, host, start}` (start: the process start time from /proc, so a reused pid
// is not mistaken for the holder). A lock is stale, and taken over with a warning, when
//   - its host is ours and its process is gone, was restarted under the same pid (pid 1 in a
//     restarted container is the usual case), or is another process that reuses the pid;
//   - its host is another one and the holder has not touched it for LOCK_STALE_MS (the holder
//     touches it every LOCK_HEARTBEAT_MS), e.g. a pod rescheduled with its volume.
// Otherwise opening fails with OutboxLockedError, which names RELAYLEASE_OUTBOX_DIR.
// Limits: processes in other pid namespaces on the same host name are invisible to the pid check;
// containers must not share an outbox directory. Two processes that find the same stale lock at
// the same instant can both win: the lock guards against a misconfiguration, not a race of starts.
import { readFileSync } from "node:fs";
import { open, readFile, stat, unlink, utimes } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import type { Logger } from "../../shared/log.ts";

export class OutboxLockedError extends Error {
  override name = "OutboxLockedError";
}

export const LOCK_FILE = "lock";
export const LOCK_STALE_MS = 60_000;
const LOCK_HEARTBEAT_MS = 15_000;

/** Lock files held by this process: the pid check alone cannot tell them from a previous run. */
const held = new Set<string>();

interface Holder {
  readonly pid: number;
  readonly host: string;
  readonly start?: string | undefined;
}

export interface DirLock {
  readonly path: string;
  release(): Promise<void>;
}

export async function acquireLock(dir: string, log: Logger): Promise<DirLock> {
  const path = resolve(join(dir, LOCK_FILE));
  const me: Holder = { pid: process.pid, host: hostname(), start: processStart(process.pid) };
  for (let attempt = 0; attempt < 2; attempt++) {
    if (await tryCreate(path, me)) return holdLock(path);
    const holder = await liveHolder(path);
    if (holder !== undefined) {
      throw new OutboxLockedError(
        `RELAYLEASE_OUTBOX_DIR ${dir} is in use by ${holder} (lock file ${path}): ` +
          "each watcher needs an outbox directory of its own",
      );
    }
    log.warn({ lock: path }, "taking over a stale outbox lock left by a process that is gone");
    await unlink(path).catch(ignoreMissing);
  }
  throw new OutboxLockedError(
    `RELAYLEASE_OUTBOX_DIR ${dir}: another process took the lock (${path}) at the same moment`,
  );
}

async function tryCreate(path: string, me: Holder): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
  try {
    await fh.writeFile(JSON.stringify(me) + "\n");
  } finally {
    await fh.close();
  }
  return true;
}

function holdLock(path: string): DirLock {
  held.add(path);
  // Lets a process on another host see that the lock is alive (see LOCK_STALE_MS).
  const heartbeat = setInterval(() => {
    const now = new Date();
    // A failed touch only makes the lock look older to other hosts; nothing to do here.
    utimes(path, now, now).catch(() => undefined);
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  let released = false;
  return {
    path,
    release: async () => {
      if (released) return;
      released = true;
      clearInterval(heartbeat);
      held.delete(path);
      await unlink(path).catch(ignoreMissing);
    },
  };
}

/** Describes the live holder of the lock, or undefined when the lock is stale or gone. */
async function liveHolder(path: string): Promise<string | undefined> {
  let text: string;
  let mtimeMs: number;
  try {
    text = await readFile(path, "utf8");
    mtimeMs = (await stat(path)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const h = parseHolder(text);
  // A lock file cut short while it was being written: its writer died right there.
  if (h === undefined) return undefined;
  const who = `process ${h.pid} on ${h.host}`;
  if (h.host !== hostname()) return Date.now() - mtimeMs < LOCK_STALE_MS ? who : undefined;
  if (h.pid === process.pid) return held.has(path) ? "this process" : undefined;
  if (!isAlive(h.pid)) return undefined;
  const start = processStart(h.pid);
  if (h.start !== undefined && start !== undefined && start !== h.start) return undefined;
  return who;
}

function parseHolder(text: string): Holder | undefined {
  try {
    const o = JSON.parse(text) as Partial<Record<keyof Holder, unknown>>;
    if (!Number.isSafeInteger(o.pid) || typeof o.host !== "string") return undefined;
    return {
      pid: o.pid as number,
      host: o.host,
      start: typeof o.start === "string" ? o.start : undefined,
    };
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined off Linux. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
}
