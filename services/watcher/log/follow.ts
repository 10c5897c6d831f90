/**
 * Follows a log file (RELAYLEASE_DOVECOT_LOG) the way `tail -F` does, across rotation, and
 * remembers its place across restarts (login-sources.md §6 and Pitfalls). Hands every complete
 * line to `onLine` as a range of a string that may hold other lines too (lines.ts): the line is
 * `text.slice(start, end)`, and a consumer that looks at most lines only briefly (the login
 * parser) never needs to slice them.
 *
 * Guarantees:
 * - Every line is delivered once, in file order, while the follower runs. `onLine` may return a
 *   promise: the follower waits for it before the next line (the log file is the buffer, so a
 *   slow consumer slows reading, never memory) and before saving a position past that line.
 * - Restart: the position (device, inode, offset just after the last delivered line, and the
 *   bytes before it; follow-state.ts) is saved at most every `saveIntervalMs` and at stop(). A
 *   restart resumes there: no replay, no skip. After a crash, lines delivered since the last save
 *   are delivered again (at least once), never lost.
 * - Rotation by rename (new inode at the path): the old file is read to its end, an unfinished
 *   last line included, then the new file from its start. The writer goes on writing to the old
 *   file until it reopens its log (logrotate's postrotate HUP, `doveadm log reopen`), which is
 *   after the new file appears: so while the old file has grown within `rotationGraceMs`, the
 *   follower stays on it, for at most ROTATION_HOLD_MAX_MS. If the path was rotated while we
 *   were stopped, `<path>.1` is checked for our inode and finished first.
 * - Copy-truncate (same inode, size below our offset; or the bytes before our offset changed,
 *   which catches a file truncated and grown past it between two looks): read from the start.
 * - Start with no usable state: at the end of the file (`startAtEnd`, default; old logins are
 *   not replayed) or at its start. A file that appears after we started is read from its start.
 * Known gaps:
 * - A writer that goes on writing to the old file after the follower switched (after a quiet
 *   `rotationGraceMs`, or ROTATION_HOLD_MAX_MS in all) is not read any more.
 * - Copy-truncate loses what the writer logs between logrotate's copy and its truncate (a
 *   property of copytruncate itself), and a truncated file that regrows to the same bytes before
 *   our offset is not noticed.
 * - Rotated while stopped to a name other than `<path>.1`, or compressed: the rest of the old
 *   file is not read. A state file that is missing or unreadable means starting per `startAtEnd`.
 * - Lines are delivered even if old (a replay after a rotation while stopped): consumers drop
 *   logins older than the lease TTL by the record's `at`.
 * Budget: one read (four chunks of `chunkBytes`, 64 KiB, also the most), one chunk decoded,
 * plus one line (`maxLineBytes`, 8 KiB): a longer line is skipped and counted in
 * `stats.overlong`. Change is noticed by fs.watch on the directory and by a poll every
 * `pollIntervalMs` (1 s; watch events are lost on some file systems and race with rotation).
 * Errors: a state directory we cannot write is fatal at start; read and save failures later are
 * counted, logged once per episode, and retried.
 */
import { constants, watch, type FSWatcher } from "node:fs";
import { access, open, stat, type FileHandle } from "node:fs/promises";
import { basename, dirname } from "node:path";
import type { Logger } from "../../../shared/log.ts";
import {
  isAt,
  loadState,
  readTail,
  saveState,
  tailMatches,
  type FollowState,
} from "./follow-state.ts";
import { LineSplitter } from "./lines.ts";

export interface FollowOptions {
  path: string;
  /** Where the position is kept across restarts. */
  statePath: string;
  /** The line is text.slice(start, end); `text` is only valid during the call. */
  onLine: (text: string, start: number, end: number) => void | Promise<void>;
  log: Logger;
  /** With no usable state: start at the end (default) or read the whole file. */
  startAtEnd?: boolean;
  pollIntervalMs?: number;
  saveIntervalMs?: number;
  maxLineBytes?: number;
  chunkBytes?: number;
  /** After a rename, how long the old file must have been quiet before the switch (2 s). */
  rotationGraceMs?: number;
}

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface FollowStats {
  lines: number;
  bytes: number;
  /** Lines longer than maxLineBytes, skipped. */
  overlong: number;
  rotations: number;
  truncations: number;
  readErrors: number;
  stateErrors: number;
  /** onLine threw or rejected; the line counts as delivered. */
  callbackErrors: number;
}

export interface LogFollower {
  readonly stats: Readonly<FollowStats>;
  /** Reads what is new now; resolves once it is delivered. fs.watch and the timer call it too. */
  poll(): Promise<void>;
  /** Stops watching, waits for the line in hand, saves the position, closes the file. */
  stop(): Promise<void>;
}

const LF = 0x0a;
const MAX_CHUNK_BYTES = 65536;
const CHUNKS_PER_READ = 4;
/** A writer that never reopens must not keep us from the new file for longer than this. */
const ROTATION_HOLD_MAX_MS = 30_000;

export async function followLog(options: FollowOptions): Promise<LogFollower> {
  const follower = new Follower(options);
  await follower.start();
  return follower;
}

class Follower implements LogFollower {
  readonly stats: FollowStats = {
    lines: 0,
    bytes: 0,
    overlong: 0,
    rotations: 0,
    truncations: 0,
    readErrors: 0,
    stateErrors: 0,
    callbackErrors: 0,
  };
  readonly #o: Required<Omit<FollowOptions, "log">>;
  readonly #log: Logger;
  readonly #splitter: LineSplitter;
  readonly #buf: Buffer;
  #fh: FileHandle | undefined;
  #dev = "";
  #ino = "";
  /** Next byte to read. */
  #pos = 0;
  /** Just after the last complete line; what is saved. */
  #lineStart = 0;
  /** The bytes before #lineStart (at most TAIL_BYTES). */
  #tail: Buffer = Buffer.alloc(0);
  #state: FollowState | undefined;
  /** The file was present at our first look: state and startAtEnd apply to it. */
  #firstOpen = true;
  #saved = { ino: "", offset: -1, at: 0 };
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #saveTimer: NodeJS.Timeout | undefined;
  #warnedMissing = false;
  #saveFailing = false;
  #readFailing = false;
  /** When a read last found new bytes in the current file (Date.now). */
  #grewAt = 0;
  /** When a new file at the path was first seen while we stayed on the old one, or 0. */
  #rotationSeenAt = 0;

  constructor(options: FollowOptions) {
    this.#o = {
      startAtEnd: true,
      pollIntervalMs: 1000,
      saveIntervalMs: 1000,
      maxLineBytes: 8192,
      chunkBytes: 65536,
      rotationGraceMs: 2000,
      ...options,
    };
    this.#log = options.log.child({ module: "log-follow" });
    this.#splitter = new LineSplitter(this.#o.maxLineBytes);
    // Past 64 KiB a chunk decodes to a string V8 keeps in large-object space, which the parser
    // reads more slowly (bench/log-parse.ts): chunks stay small. Reads are larger, and cut into
    // chunks, since each read is a round trip through libuv's thread pool.
    this.#o.chunkBytes = Math.min(Math.max(this.#o.chunkBytes, 1), MAX_CHUNK_BYTES);
    this.#buf = Buffer.allocUnsafe(CHUNKS_PER_READ * this.#o.chunkBytes);
  }

  async start(): Promise<void> {
    const stateDir = dirname(this.#o.statePath);
    await access(stateDir, constants.W_OK).catch((err: unknown) => {
      throw new Error(`the log follower cannot write its state in ${stateDir}`, { cause: err });
    });
    try {
      this.#state = await loadState(this.#o.statePath, this.#o.path);
    } catch (err) {
      this.stats.stateErrors++;
      this.#log.warn({ err, statePath: this.#o.statePath }, "ignoring unreadable follow state");
    }
    await this.#open();
    this.#watch();
    this.#timer = setInterval(() => void this.poll(), this.#o.pollIntervalMs).unref();
    void this.poll();
  }

  poll(): Promise<void> {
    this.#again = true;
    this.#running ??= this.#loop().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    clearInterval(this.#timer);
    clearTimeout(this.#saveTimer);
    await this.#running;
    await this.#save(true);
    await this.#fh?.close();
    this.#fh = undefined;
  }

  async #loop(): Promise<void> {
    while (this.#again && !this.#stopped) {
      this.#again = false;
      try {
        await this.#pass();
        if (this.#readFailing) this.#log.info({ path: this.#o.path }, "reading the log again");
        this.#readFailing = false;
      } catch (err) {
        this.stats.readErrors++;
        // Once per episode: the poll timer retries every pollIntervalMs.
        if (!this.#readFailing) {
          this.#log.warn({ err, path: this.#o.path }, "reading the log failed; retrying");
        }
        this.#readFailing = true;
      }
    }
  }

  async #pass(): Promise<void> {
    if (this.#fh === undefined) await this.#open();
    if (this.#fh === undefined) return;
    await this.#checkFile(this.#fh);
    await this.#drain();
    await this.#save(false);
  }

  #watch(): void {
    const name = basename(this.#o.path);
    try {
      this.#watcher = watch(dirname(this.#o.path), { persistent: false }, (_event, file) => {
        if (file === null || file === name) void this.poll();
      });
      this.#watcher.on("error", (err) => {
        this.#log.warn({ err }, "fs.watch failed; polling only");
        this.#watcher?.close();
      });
    } catch (err) {
      this.#log.warn({ err }, "fs.watch unavailable; polling only");
    }
  }

  /** Opens the path and decides where to start reading it. */
  async #open(): Promise<void> {
    const fh = await openIfExists(this.#o.path);
    if (fh === undefined) {
      if (!this.#warnedMissing) this.#log.info({ path: this.#o.path }, "waiting for the log file");
      this.#warnedMissing = true;
      this.#firstOpen = false; // whatever appears later is new
      return;
    }
    const first = this.#firstOpen;
    this.#firstOpen = false;
    const state = this.#state;
    this.#state = undefined;
    await this.#use(fh, 0);
    if (state !== undefined) await this.#resume(fh, state);
    else if (first && this.#o.startAtEnd) await this.#startAtEnd(fh);
  }

  /** Makes fh the file being read, from `offset` (a line start). */
  async #use(fh: FileHandle, offset: number): Promise<void> {
    const st = await fh.stat({ bigint: true });
    this.#fh = fh;
    this.#dev = String(st.dev);
    this.#ino = String(st.ino);
    this.#pos = this.#lineStart = offset;
    this.#splitter.reset();
    this.#tail = await readTail(fh, offset);
  }

  async #startAtEnd(fh: FileHandle): Promise<void> {
    const { size } = await fh.stat();
    await this.#use(fh, size);
    // A writer in the middle of a line: what we see of it is not a line.
    if (size > 0 && this.#tail.at(-1) !== LF) this.#splitter.skipToNextLine();
  }

  async #resume(fh: FileHandle, state: FollowState): Promise<void> {
    if (this.#ino === state.ino && this.#dev === state.dev) {
      if (await isAt(fh, state)) return this.#use(fh, state.offset);
      this.stats.truncations++;
      this.#log.info({ path: this.#o.path }, "log truncated while stopped; reading from its start");
      return;
    }
    const rotated = await openIfExists(`${this.#o.path}.1`);
    const st = await rotated?.stat({ bigint: true });
    if (rotated !== undefined && st !== undefined) {
      if (
        String(st.ino) === state.ino &&
        String(st.dev) === state.dev &&
        (await isAt(rotated, state))
      ) {
        this.#log.info(
          { path: this.#o.path },
          "log rotated while stopped; finishing <path>.1 first",
        );
        await fh.close();
        return this.#use(rotated, state.offset); // the next check sees the new inode at the path
      }
      await rotated.close();
    }
    this.#log.info({ path: this.#o.path }, "log replaced while stopped; reading from its start");
  }

  /** Rotation and truncation, seen from the path and the open file. */
  async #checkFile(fh: FileHandle): Promise<void> {
    const st = await stat(this.#o.path, { bigint: true }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    });
    if (st === undefined) return; // renamed away, not yet recreated: keep reading the old file
    if (String(st.ino) !== this.#ino || String(st.dev) !== this.#dev) {
      await this.#drain();
      if (this.#stopped || this.#writerMayBeOnOldFile()) return; // after a restart: <path>.1
      const next = await openIfExists(this.#o.path);
      if (next === undefined) return;
      const rest = this.#splitter.flush();
      if (rest !== undefined) await this.#deliver(rest, 0, rest.length);
      await fh.close();
      this.#rotationSeenAt = 0;
      this.stats.rotations++;
      this.#log.info({ path: this.#o.path }, "log rotated; following the new file");
      return this.#use(next, 0);
    }
    const size = Number(st.size);
    if (size < this.#pos || !(await tailMatches(fh, this.#lineStart, this.#tail))) {
      this.stats.truncations++;
      this.#log.info({ path: this.#o.path }, "log truncated; reading from its start");
      return this.#use(fh, 0);
    }
  }

  /** After a rename: whether the old file grew too recently to leave it yet. */
  #writerMayBeOnOldFile(): boolean {
    const now = Date.now();
    if (this.#rotationSeenAt === 0) this.#rotationSeenAt = now;
    return (
      now - this.#grewAt < this.#o.rotationGraceMs &&
      now - this.#rotationSeenAt < ROTATION_HOLD_MAX_MS
    );
  }

  /** Reads to the end of the current file, delivering every complete line. */
  async #drain(): Promise<void> {
    const fh = this.#fh;
    if (fh === undefined) return;
    const start = this.#lineStart;
    const piece = this.#o.chunkBytes;
    while (!this.#stopped) {
      const { bytesRead } = await fh.read(this.#buf, 0, this.#buf.length, this.#pos);
      if (bytesRead === 0) break;
      this.#grewAt = Date.now();
      const readAt = this.#pos;
      this.#pos += bytesRead;
      this.stats.bytes += bytesRead;
      for (let off = 0; off < bytesRead; off += piece) {
        await this.#split(this.#buf.subarray(off, Math.min(off + piece, bytesRead)), readAt + off);
      }
    }
    if (this.#lineStart !== start) this.#tail = await readTail(fh, this.#lineStart);
  }

  /** Delivers the lines `chunk` (read from file offset `at`) finishes. */
  async #split(chunk: Buffer, at: number): Promise<void> {
    const overlong = this.#splitter.overlong;
    const lines = this.#splitter.push(chunk);
    this.stats.overlong += this.#splitter.overlong - overlong;
    for (let i = 0; i < lines.count; i++) {
      const pending = this.#deliver(lines.text, lines.start(i), lines.end(i));
      if (pending !== undefined) await pending;
    }
    const lastLf = chunk.lastIndexOf(LF);
    if (lastLf >= 0) this.#lineStart = at + lastLf + 1;
  }

  /** A promise only if the consumer returned one: most lines are not waited for. */
  #deliver(text: string, start: number, end: number): Promise<void> | undefined {
    this.stats.lines++;
    try {
      const pending = this.#o.onLine(text, start, end);
      if (pending !== undefined)
        return pending.catch((err: unknown) => {
          this.#consumerFailed(err);
        });
    } catch (err) {
      this.#consumerFailed(err);
    }
    return undefined;
  }

  #consumerFailed(err: unknown): void {
    this.stats.callbackErrors++;
    this.#log.error({ err }, "log line consumer failed");
  }

  /** Saves the position if it moved: at once if forced, else at most every saveIntervalMs. */
  async #save(force: boolean): Promise<void> {
    const saved = this.#saved;
    if (this.#ino === "" || (saved.ino === this.#ino && saved.offset === this.#lineStart)) return;
    const wait = saved.at + this.#o.saveIntervalMs - Date.now();
    if (!force && wait > 0) {
      this.#saveTimer ??= setTimeout(() => {
        this.#saveTimer = undefined;
        void this.poll();
      }, wait).unref();
      return;
    }
    const state = {
      path: this.#o.path,
      dev: this.#dev,
      ino: this.#ino,
      offset: this.#lineStart,
      tail: this.#tail,
    };
    try {
      await saveState(this.#o.statePath, state);
      this.#saved = { ino: state.ino, offset: state.offset, at: Date.now() };
    } catch (err) {
      this.stats.stateErrors++;
      // Once per episode: a full disk would otherwise log every saveIntervalMs.
      if (!this.#saveFailing) {
        this.#log.warn({ err, statePath: this.#o.statePath }, "saving the follow state failed");
      }
      this.#saveFailing = true;
      this.#saved = { ...saved, at: Date.now() }; // retry after saveIntervalMs, not every pass
      return;
    }
    if (this.#saveFailing)
      this.#log.info({ statePath: this.#o.statePath }, "follow state saved again");
    this.#saveFailing = false;
  }
}

async function openIfExists(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
