// The watcher's outbox (RELAYLEASE_OUTBOX_DIR): every login source appends its login events here
// before it answers its client, and a drainer publishes them to the login stream in append order.
// While NATS is unreachable the events wait on disk; a restart continues where the last run
// stopped (DESIGN.md "Login sources": a login is never lost to an outage or a restart).
//
// Guarantees
// - append() resolves once the event is on disk: written and fdatasync'd. Appends that arrive
//   while a sync runs share the next one (group commit), so a busy source pays one sync per batch.
//   The event id and loginAt are fixed before the append, so a publish repeated after a crash
//   carries the same Nats-Msg-Id and the stream stores it once (within its 2-minute duplicate
//   window; past it a duplicate is harmless: the authorizer never shortens a lease).
// - The drainer publishes in append order with at most maxInFlight publishes in flight. A failed
//   publish (NATS away, timeout) is retried after a backoff, before anything newer is sent; no
//   event is skipped. An event can overtake only events sent in the same window (fewer than
//   maxInFlight), when an older one failed and was retried.
// - Progress is recorded in the position file, and a new publish waits until at most
//   maxInFlight - 1 published events lie beyond the recorded position: after a crash at most
//   maxInFlight events are published again (with the same ids). After a power loss the position
//   may be older (it is not synced): more events are published again, none is lost.
// - Events whose loginAt is older than maxAgeMs are dropped unpublished when the drainer reaches
//   them (their lease would already have run out), also while NATS is away; logged and counted.
//
// At the bound: while maxEvents events wait (stored and not yet published or dropped, plus
// appends being written), append() rejects with OutboxFullError; the refusal is logged (warn,
// with the event: id, ip, user, service, source, loginAt) and counted in `refused`: a login is
// never dropped silently. The source answers its client as it can: the HTTP API answers 503 (the
// client may retry); a log source holds its line and retries when there is room (the log file is
// its own buffer); DRAC and Dovecot's auth policy answer at once and cannot refuse, so for them
// the log line is the record. Nothing already stored is ever dropped to make room (old events
// leave only as published or expired). If the disk fails (ENOSPC, EIO), append() rejects with
// OutboxWriteError the same way; that segment is abandoned and the next append starts a new one.
//
// Settings: RELAYLEASE_OUTBOX_DIR (the directory), RELAYLEASE_OUTBOX_MAX_EVENTS (maxEvents);
// maxAgeMs is the longest lease TTL (RELAYLEASE_LEASE_TTL, RELAYLEASE_SERVICE_TTLS).
//
// Directory layout (files mode 0600, directory 0700; other files are left alone):
//   lock                          owner lock (outbox-lock.ts)
//   outbox-position               below which seq everything is published (outbox-segment.ts)
//   seg-<16-digit first seq>.log  records (outbox-record.ts), append-only; a new one at each
//                                 start, after a failed write, and once the current one passes
//                                 segmentBytes; deleted once drained.
//
// Budget: disk is about maxEvents x 200-300 bytes (1e6 events ~ 250 MB) plus one segment. Memory
// holds at most the segment being appended to and the one being drained (2 x segmentBytes of
// events), plus at most max(1024, 4 x maxInFlight) events taken by the drainer. Opening reads
// every segment once to count what is left (about 1 s per 250 MB).
import { mkdir, type FileHandle } from "node:fs/promises";
import { resolve } from "node:path";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import { decodeLoginEvent, encodeLoginEvent, type LoginEvent } from "../../shared/login-event.ts";
import { OutboxLockedError, acquireLock, type DirLock } from "./outbox-lock.ts";
import { OutboxDrainer } from "./outbox-drainer.ts";
import { openPositionFile, recoverSegments, type Segment } from "./outbox-segment.ts";
import { OutboxClosedError, OutboxWriter, createSegment } from "./outbox-writer.ts";

export { OutboxLockedError } from "./outbox-lock.ts";
export { OutboxClosedError, OutboxWriteError } from "./outbox-writer.ts";

export class OutboxFullError extends Error {
  override name = "OutboxFullError";
}
/** The directory cannot be used (missing rights, not a directory, unreadable files). */
export class OutboxDirError extends Error {
  override name = "OutboxDirError";
}

export interface OutboxOptions {
  /** Publishes one event; resolves once the stream has stored it. Must settle (time out). */
  readonly publish: (event: LoginEvent) => Promise<unknown>;
  readonly log: Logger;
  /** Events that may wait at once (RELAYLEASE_OUTBOX_MAX_EVENTS). */
  readonly maxEvents?: number;
  /** Publishes in flight at once, and the most re-published after a crash. */
  readonly maxInFlight?: number;
  /** Events older than this (by loginAt) are dropped unpublished (RELAYLEASE_OUTBOX_MAX_AGE). */
  readonly maxAgeMs?: number;
  /** A segment file is closed and a new one started once it passes this size. */
  readonly segmentBytes?: number;
  /** Extra wait before each write, to gather more appends into one sync (0: none). */
  readonly commitDelayMs?: number;
  /** Backoff after a failed publish: first and longest delay. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** How long close() waits for publishes in flight (they are published again next time). */
  readonly closeWaitMs?: number;
  /** The clock, for tests. */
  readonly now?: () => number;
}

export const OUTBOX_DEFAULTS = {
  maxEvents: 1_000_000,
  maxInFlight: 64,
  maxAgeMs: 24 * 3_600_000,
  segmentBytes: 1 << 20,
  commitDelayMs: 0,
  retryMinMs: 100,
  retryMaxMs: 5_000,
  closeWaitMs: 5_000,
} as const;

export interface OutboxStats {
  /** Events stored and not yet published or dropped. */
  readonly depth: number;
  readonly maxEvents: number;
  /** Bytes of segment files. */
  readonly bytes: number;
  readonly segments: number;
  /** now - loginAt of the event at the head of the outbox; 0 when it is empty. */
  readonly oldestAgeMs: number;
  readonly inFlight: number;
  // Counters since open:
  readonly appended: number;
  readonly published: number;
  readonly publishFailures: number;
  /** Appends refused at the bound. */
  readonly refused: number;
  /** Events dropped unpublished as older than maxAgeMs. */
  readonly expired: number;
  /** Records dropped as unreadable (bad checksum, not an event). */
  readonly corrupt: number;
  /** Torn records found at the end of segments when opening (never acknowledged). */
  readonly torn: number;
  /** Segment writes, each followed by one sync: appended / syncs is the group-commit batch. */
  readonly syncs: number;
}

type Settings = Required<Omit<OutboxOptions, "publish" | "log">>;

export class Outbox {
  readonly #dir: string;
  readonly #o: Settings;
  readonly #log: Logger;
  readonly #lock: DirLock;
  readonly #posFh: FileHandle;
  readonly #writer: OutboxWriter;
  readonly #drainer: OutboxDrainer;
  #state: "open" | "closing" | "closed" = "open";
  #closed: Promise<void> = Promise.resolve();
  readonly #counts = {
    appended: 0,
    published: 0,
    publishFailures: 0,
    refused: 0,
    expired: 0,
    corrupt: 0,
    torn: 0,
  };

  /** Opens (creating if need be) and recovers the directory, and starts draining it. */
  static async open(dir: string, options: OutboxOptions): Promise<Outbox> {
    const settings = checkOptions(options);
    const log = options.log.child({ module: "outbox" });
    const lock = await inDir(dir, async () => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      return acquireLock(dir, log);
    });
    let posFh: FileHandle | undefined;
    try {
      return await inDir(dir, async () => {
        const pos = await openPositionFile(dir);
        posFh = pos.fh;
        if (pos.existed && pos.position === undefined) {
          log.warn({ dir }, "outbox position unreadable: publishing everything on disk again");
        }
        const position = pos.position ?? 0;
        const found = await recoverSegments(dir, position, log);
        const nextSeq = Math.max(position, found.maxSeq + 1, 1);
        const [active, fh] = await createSegment(resolve(dir), nextSeq);
        const outbox = new Outbox(dir, settings, options.publish, log, lock, {
          fh: posFh,
          position,
          segments: [...found.segments, active],
          segmentFh: fh,
          nextSeq,
        });
        outbox.#counts.torn = found.torn;
        log.info(
          {
            dir,
            waiting: outbox.#drainer.depth,
            segments: found.segments.length,
            removed: found.removed,
          },
          "outbox open",
        );
        outbox.#drainer.pump();
        return outbox;
      });
    } catch (err) {
      await posFh?.close().catch(() => undefined);
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  private constructor(
    dir: string,
    settings: Settings,
    publish: (event: LoginEvent) => Promise<unknown>,
    log: Logger,
    lock: DirLock,
    found: {
      fh: FileHandle;
      position: number;
      segments: Segment[];
      segmentFh: FileHandle;
      nextSeq: number;
    },
  ) {
    this.#dir = resolve(dir);
    this.#o = settings;
    this.#log = log;
    this.#lock = lock;
    this.#posFh = found.fh;
    const start = {
      segments: found.segments,
      fh: found.segmentFh,
      nextSeq: found.nextSeq,
      segmentBytes: settings.segmentBytes,
      commitDelayMs: settings.commitDelayMs,
    };
    this.#writer = new OutboxWriter(this.#dir, log, start, {
      written: (stored) => {
        this.#counts.appended += stored;
        this.#drainer.stored(stored);
      },
      sealed: (seg) => {
        this.#drainer.sealed(seg);
      },
    });
    this.#drainer = new OutboxDrainer(
      this.#writer,
      publish,
      { fh: found.fh, position: found.position },
      settings,
      log,
      this.#counts,
    );
  }

  /**
   * Stores a login event; resolves once it is on disk, rejects with OutboxFullError at the bound,
   * OutboxWriteError if the disk fails, OutboxClosedError after close(), SchemaError for an event
   * that would not survive a restart (a field the login event schema refuses, over 4 KiB).
   */
  append(event: LoginEvent): Promise<void> {
    if (this.#state !== "open") {
      return Promise.reject(new OutboxClosedError(`the outbox ${this.#dir} is closed`));
    }
    let canonical: LoginEvent;
    let json: Uint8Array;
    try {
      canonical = decodeLoginEvent(encodeLoginEvent(event));
      json = encodeLoginEvent(canonical);
    } catch (err) {
      return Promise.reject(asError(err));
    }
    if (this.#drainer.depth + this.#writer.pending >= this.#o.maxEvents) {
      this.#counts.refused++;
      this.#log.warn(
        { event: canonical, depth: this.#drainer.depth, maxEvents: this.#o.maxEvents },
        "outbox full: login refused",
      );
      return Promise.reject(
        new OutboxFullError(
          `the outbox holds ${this.#o.maxEvents} events waiting for NATS (RELAYLEASE_OUTBOX_MAX_EVENTS)`,
        ),
      );
    }
    return this.#writer.append(canonical, json);
  }

  stats(): OutboxStats {
    const head = this.#drainer.headLoginAt();
    return {
      depth: this.#drainer.depth,
      maxEvents: this.#o.maxEvents,
      bytes: this.#writer.bytes,
      segments: this.#writer.segments.length,
      oldestAgeMs: head === undefined ? 0 : Math.max(0, this.#o.now() - head),
      inFlight: this.#drainer.inFlight,
      ...this.#counts,
      syncs: this.#writer.syncs,
    };
  }

  /**
   * Stops: appends already made are written and acknowledged, new ones are refused; publishes in
   * flight get up to closeWaitMs; the position is saved and synced; the lock is released.
   */
  close(): Promise<void> {
    if (this.#state === "open") {
      this.#state = "closing";
      this.#closed = this.#close();
    }
    return this.#closed;
  }

  async #close(): Promise<void> {
    await this.#writer.flushed;
    this.#drainer.stop();
    await this.#drainer.whenIdle(this.#o.closeWaitMs);
    this.#state = "closed";
    await this.#drainer.finish();
    await this.#release();
    this.#log.info({ waiting: this.#drainer.depth }, "outbox closed");
  }

  /**
   * Stops as a crash would, for tests: nothing more is acknowledged, published or recorded. A
   * write already under way completes or not, as it would; its appends are rejected regardless.
   */
  async abandon(): Promise<void> {
    if (this.#state !== "open") return this.#closed;
    this.#state = "closed";
    this.#writer.kill();
    const killed = this.#drainer.kill();
    await this.#writer.flushed;
    await killed;
    await this.#release();
  }

  async #release(): Promise<void> {
    await this.#writer.close().catch(() => undefined);
    await this.#posFh.close().catch(() => undefined);
    await this.#lock.release().catch((err: unknown) => {
      this.#log.warn({ err: errorMessage(err) }, "could not remove the outbox lock");
    });
  }
}

function checkOptions(o: OutboxOptions): Settings {
  const s: Settings = {
    maxEvents: o.maxEvents ?? OUTBOX_DEFAULTS.maxEvents,
    maxInFlight: o.maxInFlight ?? OUTBOX_DEFAULTS.maxInFlight,
    maxAgeMs: o.maxAgeMs ?? OUTBOX_DEFAULTS.maxAgeMs,
    segmentBytes: o.segmentBytes ?? OUTBOX_DEFAULTS.segmentBytes,
    commitDelayMs: o.commitDelayMs ?? OUTBOX_DEFAULTS.commitDelayMs,
    retryMinMs: o.retryMinMs ?? OUTBOX_DEFAULTS.retryMinMs,
    retryMaxMs: o.retryMaxMs ?? OUTBOX_DEFAULTS.retryMaxMs,
    closeWaitMs: o.closeWaitMs ?? OUTBOX_DEFAULTS.closeWaitMs,
    now: o.now ?? Date.now,
  };
  for (const key of [
    "maxEvents",
    "maxInFlight",
    "maxAgeMs",
    "segmentBytes",
    "retryMinMs",
  ] as const) {
    if (!Number.isSafeInteger(s[key]) || s[key] < 1) {
      throw new RangeError(`outbox option ${key} must be a whole number of at least 1`);
    }
  }
  for (const key of ["commitDelayMs", "retryMaxMs", "closeWaitMs"] as const) {
    if (!Number.isSafeInteger(s[key]) || s[key] < 0) {
      throw new RangeError(`outbox option ${key} must be a whole number of at least 0`);
    }
  }
  return s;
}

/** Names the setting in any error but the lock's (which already does). */
async function inDir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof OutboxLockedError) throw err;
    throw new OutboxDirError(`RELAYLEASE_OUTBOX_DIR ${dir}: ${errorMessage(err)}`, { cause: err });
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
