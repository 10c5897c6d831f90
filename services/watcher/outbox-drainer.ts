// The outbox's drainer: takes stored events in append order, publishes them with at most
// maxInFlight in flight, retries failures after a backoff (oldest first, before anything newer),
// drops events older than maxAgeMs, deletes drained segments and records progress in the
// position file. The guarantees it keeps are listed in outbox.ts.
import type { FileHandle } from "node:fs/promises";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { LoginEvent } from "../../shared/login-event.ts";
import { loadSegment, writePosition, type Segment, type StoredRecord } from "./outbox-segment.ts";
import type { OutboxWriter } from "./outbox-writer.ts";

export interface DrainerSettings {
  readonly maxInFlight: number;
  readonly maxAgeMs: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  readonly now: () => number;
}

/** Counters the drainer adds to (the outbox's stats). */
export interface DrainerCounts {
  published: number;
  publishFailures: number;
  expired: number;
  corrupt: number;
}

interface Entry {
  readonly rec: StoredRecord;
  state: "inflight" | "done" | "failed";
}

const EXPIRED_LOG_EVERY_MS = 10_000;

export class OutboxDrainer {
  readonly #writer: OutboxWriter;
  readonly #publish: (event: LoginEvent) => Promise<unknown>;
  readonly #o: DrainerSettings;
  readonly #log: Logger;
  readonly #counts: DrainerCounts;
  #dead = false;
  /** Events stored (acknowledged or recovered) and not yet published or dropped. */
  depth = 0;

  // Progress.
  readonly #posFh: FileHandle;
  /** Records with a lower seq were published or dropped in an earlier run. */
  readonly #openPosition: number;
  #savedPosition: number;
  #posWriting = false;
  #posBroken = false;
  /** After a failed write, the next is tried no sooner than this. */
  #posRetryAt = 0;
  #posSaved: Promise<void> = Promise.resolve();

  // Taking and publishing.
  #cur: Segment;
  #curIdx = 0;
  #stopped = false;
  #loading = false;
  readonly #outstanding = new Deque<Entry>();
  /** Seqs of published or in-flight events beyond the saved position (the re-publish window). */
  readonly #unsaved = new Deque<number>();
  #inFlight = 0;
  #failed = 0;
  #backoff: NodeJS.Timeout | undefined;
  #retryDelay: number;
  #failingSince: number | undefined;
  #idle: (() => void) | undefined;
  #expiredUnlogged = 0;
  #expiredLoggedAt = 0;
  readonly #maxOutstanding: number;

  constructor(
    writer: OutboxWriter,
    publish: (event: LoginEvent) => Promise<unknown>,
    progress: { readonly fh: FileHandle; readonly position: number },
    settings: DrainerSettings,
    log: Logger,
    counts: DrainerCounts,
  ) {
    this.#writer = writer;
    this.#publish = publish;
    this.#posFh = progress.fh;
    this.#openPosition = progress.position;
    this.#savedPosition = progress.position;
    this.#o = settings;
    this.#log = log;
    this.#counts = counts;
    this.#retryDelay = settings.retryMinMs;
    this.#maxOutstanding = Math.max(1024, 4 * settings.maxInFlight);
    for (const s of writer.segments) this.depth += s.count;
    const first = writer.segments[0];
    if (first === undefined) throw new Error("the outbox needs an active segment");
    this.#cur = first;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** `n` more events are on disk in the active segment. */
  stored(n: number): void {
    this.depth += n;
    this.pump();
  }

  /** A segment will not grow again: out of memory until the drainer reaches it. */
  sealed(seg: Segment): void {
    if (seg !== this.#cur) seg.records = undefined;
  }

  /** Closing: retires what settled, then saves and syncs the position. */
  async finish(): Promise<void> {
    this.#retire();
    this.#dead = true;
    this.logExpired(true);
    await this.#posSaved;
    try {
      const p = this.#committed();
      if (p > this.#savedPosition) await writePosition(this.#posFh, p);
      await this.#posFh.datasync();
    } catch (err) {
      this.#log.error({ err: errorMessage(err) }, "could not save the outbox position");
    }
  }

  /** As in a crash: nothing more is published or recorded. */
  async kill(): Promise<void> {
    this.#dead = true;
    this.stop();
    await this.#posSaved;
  }

  /** Takes, publishes and retires what it can; called whenever anything changes. */
  pump(): void {
    if (this.#dead) return;
    if (!this.#stopped) this.#take();
    this.#retire();
  }

  #take(): void {
    const now = this.#o.now();
    if (this.#failed > 0) this.#retryFailed(now);
    while (this.#outstanding.length < this.#maxOutstanding) {
      const rec = this.#peek();
      if (rec === undefined) break;
      const expired = now - rec.event.loginAt > this.#o.maxAgeMs;
      if (!expired && (this.#failed > 0 || !this.#windowOpen())) break;
      this.#curIdx++;
      const entry: Entry = { rec, state: "done" };
      this.#outstanding.push(entry);
      if (expired) this.#countExpired();
      else {
        if (!this.#posBroken) this.#unsaved.push(rec.seq);
        this.#launch(entry);
      }
    }
  }

  /** Launches nothing more (close): publishes in flight still settle and are recorded. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#backoff);
    this.#backoff = undefined;
  }

  #windowOpen(): boolean {
    return (
      this.#inFlight < this.#o.maxInFlight &&
      (this.#posBroken || this.#unsaved.length < this.#o.maxInFlight)
    );
  }

  /** Failed publishes go again, oldest first, once the backoff is over; expired ones are dropped. */
  #retryFailed(now: number): void {
    for (const e of this.#outstanding) {
      if (e.state !== "failed") continue;
      if (now - e.rec.event.loginAt > this.#o.maxAgeMs) {
        e.state = "done";
        this.#failed--;
        this.#countExpired();
      } else if (this.#backoff === undefined && this.#inFlight < this.#o.maxInFlight) {
        this.#failed--;
        this.#launch(e);
      }
    }
  }

  #launch(entry: Entry): void {
    entry.state = "inflight";
    this.#inFlight++;
    let sent: Promise<unknown>;
    try {
      sent = this.#publish(entry.rec.event);
    } catch (err) {
      sent = Promise.reject(asError(err));
    }
    void sent.then(
      () => {
        this.#settled(entry, undefined);
      },
      (err: unknown) => {
        this.#settled(entry, err ?? new Error("publish failed"));
      },
    );
  }

  #settled(entry: Entry, err: unknown): void {
    if (this.#dead) return;
    this.#inFlight--;
    if (err === undefined) {
      entry.state = "done";
      this.#counts.published++;
      this.#retryDelay = this.#o.retryMinMs;
      if (this.#failingSince !== undefined) {
        this.#log.info(
          { waiting: this.depth, failingMs: this.#o.now() - this.#failingSince },
          "publishing login events again",
        );
        this.#failingSince = undefined;
      }
    } else {
      entry.state = "failed";
      this.#failed++;
      this.#counts.publishFailures++;
      if (this.#failingSince === undefined) {
        this.#failingSince = this.#o.now();
        this.#log.warn(
          { err: errorMessage(err), waiting: this.depth },
          "could not publish a login event; keeping it in the outbox and retrying",
        );
      }
      if (this.#backoff === undefined && !this.#stopped) {
        this.#backoff = setTimeout(() => {
          this.#backoff = undefined;
          this.pump();
        }, this.#retryDelay);
        this.#backoff.unref();
        this.#retryDelay = Math.min(this.#retryDelay * 2, this.#o.retryMaxMs);
      }
    }
    if (this.#inFlight === 0) this.#idle?.();
    this.pump();
  }

  /** The next record to take, or undefined (nothing yet, or its segment is being read). */
  #peek(): StoredRecord | undefined {
    for (;;) {
      const seg = this.#cur;
      if (seg.records === undefined) {
        this.#load(seg);
        return undefined;
      }
      const rec = seg.records[this.#curIdx];
      if (rec !== undefined) return rec;
      if (!seg.sealed) return undefined;
      const segments = this.#writer.segments;
      const next = segments[segments.indexOf(seg) + 1];
      if (next === undefined) return undefined;
      seg.records = undefined;
      this.#cur = next;
      this.#curIdx = 0;
    }
  }

  #load(seg: Segment): void {
    if (this.#loading) return;
    this.#loading = true;
    void loadSegment(seg, this.#openPosition, this.#writer.isVoided, this.#log).then(
      (loaded) => {
        this.#loading = false;
        if (this.#dead || this.#cur !== seg) return;
        seg.records = loaded.records;
        this.#counts.corrupt += loaded.corrupt;
        // Known only now: records that turned out unreadable are not waiting after all.
        this.depth += loaded.records.length - seg.count;
        seg.count = loaded.records.length;
        this.pump();
      },
      (err: unknown) => {
        this.#loading = false;
        if (this.#dead) return;
        if ((err as NodeJS.ErrnoException).code === "ENOENT" && this.#cur === seg) {
          // Removed behind our back: what it held is lost; say so and go on with the rest.
          this.#log.error({ segment: seg.path, events: seg.count }, "outbox segment vanished");
          this.#counts.corrupt += seg.count;
          this.depth -= seg.count;
          seg.count = 0;
          seg.records = [];
          this.pump();
          return;
        }
        this.#log.error(
          { err: errorMessage(err), segment: seg.path },
          "could not read an outbox segment; trying again",
        );
        setTimeout(() => {
          this.pump();
        }, this.#o.retryMaxMs).unref();
      },
    );
  }

  /** Retires done entries at the head, deletes drained segments, and saves the position. */
  #retire(): void {
    let n = 0;
    while (this.#outstanding.peek()?.state === "done") {
      this.#outstanding.shift();
      n++;
    }
    this.depth -= n;
    const committed = this.#committed();
    const segments = this.#writer.segments;
    for (let s = segments[0]; s !== undefined && s !== this.#cur; s = segments[0]) {
      if (!s.sealed || s.lastSeq >= committed) break;
      // Deleting a drained segment needs no saved position: nothing in it is left to publish.
      this.#writer.drop(s);
    }
    if (committed > this.#savedPosition) this.#savePosition();
  }

  /** The lowest seq not yet published or dropped (all below it are). */
  #committed(): number {
    const head = this.#outstanding.peek();
    let c: number;
    if (head !== undefined) c = head.rec.seq;
    else {
      const seg = this.#cur;
      const rec = seg.records?.[this.#curIdx];
      if (seg.records === undefined) c = seg.base;
      else if (rec !== undefined) c = rec.seq;
      else c = seg.sealed ? seg.lastSeq + 1 : this.#writer.durableEnd;
    }
    return Math.max(c, this.#savedPosition);
  }

  #savePosition(): void {
    if (this.#posWriting || this.#o.now() < this.#posRetryAt) return;
    this.#posWriting = true;
    this.#posSaved = this.#positionLoop();
  }

  /** Writes the position until it catches up with the drainer; one write at a time. */
  async #positionLoop(): Promise<void> {
    try {
      while (!this.#dead) {
        const p = this.#committed();
        if (p <= this.#savedPosition) break;
        try {
          await writePosition(this.#posFh, p);
          this.#savedPosition = p;
          while ((this.#unsaved.peek() ?? Infinity) < p) this.#unsaved.shift();
          if (this.#posBroken) this.#log.info("saving the outbox position again");
          this.#posBroken = false;
        } catch (err) {
          // Publishing goes on without the re-publish bound rather than stall on a full disk.
          if (!this.#posBroken) {
            this.#log.error({ err: errorMessage(err) }, "could not save the outbox position");
          }
          this.#posBroken = true;
          this.#posRetryAt = this.#o.now() + this.#o.retryMaxMs;
          this.#unsaved.clear();
          break;
        }
      }
    } finally {
      this.#posWriting = false;
    }
    this.pump();
  }

  /** Resolves when no publish is in flight, or after `ms`. */
  whenIdle(ms: number): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#log.warn(
          { inFlight: this.#inFlight },
          "closing with publishes in flight; they will be published again",
        );
        resolve();
      }, ms);
      this.#idle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #countExpired(): void {
    this.#counts.expired++;
    this.#expiredUnlogged++;
    this.logExpired(false);
  }

  logExpired(force: boolean): void {
    const now = this.#o.now();
    if (this.#expiredUnlogged === 0) return;
    if (!force && now - this.#expiredLoggedAt < EXPIRED_LOG_EVERY_MS) return;
    this.#log.warn(
      { events: this.#expiredUnlogged, maxAgeMs: this.#o.maxAgeMs },
      "dropped login events older than the outbox's maximum age; their leases had run out",
    );
    this.#expiredUnlogged = 0;
    this.#expiredLoggedAt = now;
  }

  /** loginAt of the event at the head of the outbox. */
  headLoginAt(): number | undefined {
    const head = this.#outstanding.peek();
    if (head !== undefined) return head.rec.event.loginAt;
    const segments = this.#writer.segments;
    for (let i = segments.indexOf(this.#cur); i < segments.length; i++) {
      const seg = segments[i];
      if (seg === undefined) break;
      if (seg.records === undefined) return seg.firstLoginAt;
      const rec = seg.records[seg === this.#cur ? this.#curIdx : 0];
      if (rec !== undefined) return rec.event.loginAt;
    }
    return undefined;
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** A FIFO with O(1) shift: the drainer's window is pushed and shifted for every event. */
class Deque<T> {
  #items: T[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  push(item: T): void {
    this.#items.push(item);
  }
  peek(): T | undefined {
    return this.#items[this.#head];
  }
  shift(): T | undefined {
    const item = this.#items[this.#head];
    if (item === undefined) return undefined;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.#head; i < this.#items.length; i++) yield this.#items[i] as T;
  }
}
