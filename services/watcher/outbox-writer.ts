// The append side of the outbox: group commit into segment files. Appends queue up while a write
// and its fdatasync run; the next write takes everything queued (up to MAX_BATCH), so N appenders
// share one sync. An append resolves only after the sync that covers it. A segment is sealed and
// a new one started once it passes segmentBytes, or after a failed write (whose appends are
// rejected and whose sequence numbers are voided: in this run they are never published, even if
// their bytes reached the disk; after a restart they are ordinary records and published, which is
// harmless since the login did happen).
import { open, unlink, type FileHandle } from "node:fs/promises";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { LoginEvent } from "../../shared/login-event.ts";
import { encodeRecord } from "./outbox-record.ts";
import { newSegment, syncDir, type Segment } from "./outbox-segment.ts";

export class OutboxWriteError extends Error {
  override name = "OutboxWriteError";
}
export class OutboxClosedError extends Error {
  override name = "OutboxClosedError";
}

/** Records per write and sync, so that one burst does not become one huge write. */
const MAX_BATCH = 1024;

interface Pending {
  readonly seq: number;
  readonly event: LoginEvent;
  readonly json: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export interface WriterHooks {
  /** After each write, before its appends resolve: `stored` records are on disk (0: failed). */
  readonly written: (stored: number) => void;
  /** A segment will not grow again. */
  readonly sealed: (seg: Segment) => void;
}

export interface WriterStart {
  /** Segments found on disk, oldest first, then the new active one. */
  readonly segments: Segment[];
  readonly fh: FileHandle;
  readonly nextSeq: number;
  readonly segmentBytes: number;
  readonly commitDelayMs: number;
}

export class OutboxWriter {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #hooks: WriterHooks;
  readonly #segmentBytes: number;
  readonly #commitDelayMs: number;
  /** Oldest first; the last one is being appended to. */
  readonly segments: Segment[];
  #active: Segment;
  #fh: FileHandle | undefined;
  #broken = false;
  #queue: Pending[] = [];
  #writing = 0;
  #flushing = false;
  #flushed: Promise<void> = Promise.resolve();
  #dead = false;
  #nextSeq: number;
  #durableEnd: number;
  /** Sequence ranges [from, to] whose write failed in this run. */
  readonly #voided: [number, number][] = [];
  bytes = 0;
  syncs = 0;

  constructor(dir: string, log: Logger, start: WriterStart, hooks: WriterHooks) {
    this.#dir = dir;
    this.#log = log;
    this.#hooks = hooks;
    this.#segmentBytes = start.segmentBytes;
    this.#commitDelayMs = start.commitDelayMs;
    this.segments = start.segments;
    const active = start.segments.at(-1);
    if (active === undefined) throw new Error("the outbox writer needs an active segment");
    this.#active = active;
    this.#fh = start.fh;
    this.#nextSeq = start.nextSeq;
    this.#durableEnd = start.nextSeq;
    for (const s of start.segments) this.bytes += s.bytes;
  }

  /** Appends queued or being written: they count against the bound before they are stored. */
  get pending(): number {
    return this.#queue.length + this.#writing;
  }

  /** Every seq below it is stored and synced, or voided. */
  get durableEnd(): number {
    return this.#durableEnd;
  }

  /** Resolves once the write loop under way (if any) has finished. */
  get flushed(): Promise<void> {
    return this.#flushed;
  }

  append(event: LoginEvent, json: Uint8Array): Promise<void> {
    const stored = new Promise<void>((resolve, reject) => {
      this.#queue.push({ seq: this.#nextSeq++, event, json, resolve, reject });
    });
    if (!this.#flushing) {
      this.#flushing = true;
      this.#flushed = this.#flushLoop();
    }
    return stored;
  }

  isVoided = (seq: number): boolean => this.#voided.some(([a, b]) => seq >= a && seq <= b);

  /** As in a crash: queued appends are rejected; a write under way completes, unacknowledged. */
  kill(): void {
    this.#dead = true;
    for (const p of this.#queue.splice(0)) p.reject(new OutboxClosedError("outbox abandoned"));
  }

  /** Forgets a drained segment and deletes its file. */
  drop(seg: Segment): void {
    const i = this.segments.indexOf(seg);
    if (i === -1 || seg === this.#active) throw new Error("dropping a segment that is not drained");
    this.segments.splice(i, 1);
    this.bytes -= seg.bytes;
    unlink(seg.path).catch((err: unknown) => {
      // Left behind, it holds only published records: the next open deletes it.
      this.#log.warn({ err: errorMessage(err), segment: seg.path }, "could not delete a segment");
    });
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
  }

  async #flushLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        if (this.#commitDelayMs > 0) await delay(this.#commitDelayMs);
        const batch = this.#queue.splice(0, MAX_BATCH);
        this.#writing = batch.length;
        await this.#write(batch);
      }
    } finally {
      this.#flushing = false;
    }
  }

  /** Writes and syncs a batch, then settles its appends. */
  async #write(batch: Pending[]): Promise<void> {
    const first = batch[0]?.seq ?? this.#nextSeq;
    const last = batch.at(-1)?.seq ?? first;
    try {
      if (this.#fh === undefined || this.#broken || this.#active.bytes >= this.#segmentBytes) {
        await this.#rotate(first);
      }
      const fh = this.#fh;
      if (fh === undefined) throw new Error("no segment open");
      const buf = Buffer.concat(batch.map((p) => encodeRecord(p.seq, p.json)));
      await writeAll(fh, buf, this.#active.bytes);
      await fh.datasync();
      this.syncs++;
      if (this.#dead) throw new OutboxClosedError("outbox abandoned");
      this.#stored(batch, buf.length);
    } catch (err) {
      this.#durableEnd = last + 1;
      const prev = this.#voided.at(-1);
      if (prev !== undefined && prev[1] + 1 === first) prev[1] = last;
      else this.#voided.push([first, last]);
      this.#broken = true;
      this.#writing = 0;
      this.#hooks.written(0);
      let e = err as Error;
      if (!(err instanceof OutboxClosedError)) {
        this.#log.error(
          { err: errorMessage(err), dir: this.#dir, events: batch.length },
          "could not store login events in the outbox",
        );
        e = new OutboxWriteError(`could not store login events in ${this.#dir}`, { cause: err });
      }
      for (const p of batch) p.reject(e);
    }
  }

  #stored(batch: Pending[], bytes: number): void {
    const seg = this.#active;
    seg.bytes += bytes;
    this.bytes += bytes;
    for (const p of batch) {
      seg.records?.push({ seq: p.seq, event: p.event });
      seg.firstLoginAt ??= p.event.loginAt;
    }
    seg.lastSeq = batch.at(-1)?.seq ?? seg.lastSeq;
    seg.count += batch.length;
    this.#durableEnd = seg.lastSeq + 1;
    this.#writing = 0;
    this.#hooks.written(batch.length);
    for (const p of batch) p.resolve();
  }

  /** Seals the active segment and starts a new one whose first record will be `base`. */
  async #rotate(base: number): Promise<void> {
    const old = this.#active;
    if (!old.sealed) {
      old.sealed = true;
      this.#hooks.sealed(old);
    }
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close();
    const [seg, newFh] = await createSegment(this.#dir, base);
    this.#fh = newFh;
    this.segments.push(seg);
    this.#active = seg;
    this.#broken = false;
  }
}

/** Creates a segment file and makes its name durable before any record in it is acknowledged. */
export async function createSegment(dir: string, base: number): Promise<[Segment, FileHandle]> {
  const seg = newSegment(dir, base);
  const fh = await open(seg.path, "wx", 0o600);
  try {
    await syncDir(dir);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(seg.path).catch(() => undefined);
    throw err;
  }
  return [seg, fh];
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let off = 0; off < buf.length;) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    if (bytesWritten === 0) throw new Error("write made no progress");
    off += bytesWritten;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
