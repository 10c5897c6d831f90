// The in-memory mirror of the lease bucket that every relay decision reads (DESIGN.md "Decision").
// It loads every key's last entry (bucket-load.ts), then follows each write, delete and expiry
// marker with a KV watch resumed after the loaded revision. It is ready once the load is done (at
// once for an empty bucket). Lookups check `expiresAt` themselves, so a missed expiry marker never
// keeps a lease alive.
//
// Supervision: authorizers write a heartbeat key every HEARTBEAT_INTERVAL_MS, so a watch that
// hears nothing for STALL_AFTER_MS has stalled (the server hosting its consumer died: the built-in
// recovery can take over a minute). The supervisor then replaces the watch, resuming after the
// last revision seen, with back-off; after a silence longer than the expiry markers live it
// reloads the whole bucket instead, since expiries in between would be missed.
// Staleness: the mirror is stale when it has heard nothing for `staleAfter` (NATS unreachable, no
// authorizer, or a watch that cannot be restarted); decisions then apply the fail mode.
// Limits: at most `maxEntries` leases; past it new keys are refused and counted, loudly.
import { jetstream } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { metrics } from "@opentelemetry/api";
import { decodeLeaseView } from "../../shared/bucket-value.ts";
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_KEY, isAddressKey } from "../../shared/contract.ts";
import { errorMessage } from "../../shared/errors.ts";
import type { LeaseView } from "../../shared/lease.ts";
import type { Logger } from "../../shared/log.ts";
import { MARKER_TTL_MS } from "../../shared/provision.ts";
import { loadBucket, type BucketEntry } from "./bucket-load.ts";

export interface LeaseLookup {
  /** The live lease under a key at `now`, if any. */
  lookup(key: string, now: number): LeaseView | undefined;
}

export interface MirrorOptions {
  /** Silence after which the mirror counts as stale (RELAYLEASE_STALE_AFTER). */
  readonly staleAfterMs?: number;
  /** RELAYLEASE_MIRROR_MAX. */
  readonly maxEntries?: number;
  /** Overrides for tests. */
  readonly stallAfterMs?: number;
  readonly superviseEveryMs?: number;
}

const STALL_AFTER_MS = 3 * HEARTBEAT_INTERVAL_MS;
const MAX_RESTART_BACKOFF_MS = 30_000;
/** A load that fails (a gap, a lost consumer) is tried this many times before start gives up. */
const LOAD_ATTEMPTS = 3;

export class LeaseMirror implements LeaseLookup {
  #leases = new Map<string, LeaseView>();
  readonly #nc: NatsConnection;
  readonly #bucket: string;
  #kv: KV | undefined;
  readonly #log: Logger;
  readonly #staleAfterMs: number;
  readonly #maxEntries: number;
  readonly #stallAfterMs: number;
  readonly #superviseEveryMs: number;
  #ready = false;
  #lastRevision = 0;
  #lastHeartbeatAt = 0;
  /** Local clock: when the watch last delivered anything (or the mirror became ready). */
  #lastHeardAt = 0;
  #heartbeatSeen = false;
  #nextRestartAt = 0;
  #restartBackoffMs = 1000;
  #restarting = false;
  #stopWatch: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #supervisor: NodeJS.Timeout | undefined;
  #refusedAtLimit = false;
  readonly #changes: Record<BucketEntry["operation"], number> = { PUT: 0, DEL: 0, PURGE: 0 };
  readonly #metrics;

  constructor(nc: NatsConnection, bucket: string, log: Logger, options: MirrorOptions = {}) {
    this.#nc = nc;
    this.#bucket = bucket;
    this.#log = log.child({ module: "mirror" });
    this.#staleAfterMs = options.staleAfterMs ?? 60_000;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    this.#stallAfterMs = options.stallAfterMs ?? STALL_AFTER_MS;
    this.#superviseEveryMs = options.superviseEveryMs ?? 1000;
    const meter = metrics.getMeter("relaylease-milter");
    // Counted in plain numbers: a counter's add hashes its attributes, a third of a second over
    // the initial load of a million leases.
    meter
      .createObservableCounter("relaylease_mirror_changes", {
        description: "Bucket entries applied to the mirror, by operation (PUT, DEL, PURGE).",
      })
      .addCallback((r) => {
        for (const [operation, count] of Object.entries(this.#changes)) {
          r.observe(count, { operation });
        }
      });
    this.#metrics = {
      restarts: meter.createCounter("relaylease_mirror_watch_restarts", {
        description: "Watches replaced by the supervisor, by kind (resume, reload).",
      }),
      refused: meter.createCounter("relaylease_mirror_refused_entries", {
        description: "New leases not mirrored because RELAYLEASE_MIRROR_MAX was reached.",
      }),
    };
    meter
      .createObservableGauge("relaylease_mirror_entries", {
        description: "Leases held in the mirror (including ones past expiresAt not yet removed).",
      })
      .addCallback((r) => {
        r.observe(this.#leases.size);
      });
    meter
      .createObservableGauge("relaylease_mirror_stale", {
        description: "1 while the mirror is stale (heard nothing for RELAYLEASE_STALE_AFTER).",
      })
      .addCallback((r) => {
        r.observe(this.stale(Date.now()) ? 1 : 0);
      });
  }

  get size(): number {
    return this.#leases.size;
  }

  get lastRevision(): number {
    return this.#lastRevision;
  }

  /** When the mirror last heard an authorizer's heartbeat (epoch ms, server time), or 0. */
  get lastHeartbeatAt(): number {
    return this.#lastHeartbeatAt;
  }

  ready(): boolean {
    return this.#ready;
  }

  stale(now: number): boolean {
    return !this.#ready || now - this.#lastHeardAt > this.#staleAfterMs;
  }

  lookup(key: string, now: number): LeaseView | undefined {
    const lease = this.#leases.get(key);
    return lease !== undefined && lease.expiresAt > now ? lease : undefined;
  }

  /** Whether the mirror holds an entry for the key at all, expired or not (for diagnostics). */
  holds(key: string): boolean {
    return this.#leases.has(key);
  }

  /** Loads the bucket and starts following it; resolves once the mirror is ready. */
  async start(): Promise<void> {
    this.#kv = await new Kvm(jetstream(this.#nc)).open(this.#bucket);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#load();
        break;
      } catch (err) {
        if (attempt === LOAD_ATTEMPTS) throw err;
        this.#log.warn({ err: errorMessage(err), attempt }, "bucket load failed; trying again");
      }
    }
    this.#supervisor = setInterval(() => {
      void this.#supervise();
    }, this.#superviseEveryMs);
    this.#supervisor.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.#supervisor);
    this.#stopWatch?.();
    await this.#loop;
  }

  /** Replaces the mirror's content with a fresh load, then follows the bucket from there. */
  async #load(): Promise<void> {
    const [previous, previousRevision] = [this.#leases, this.#lastRevision];
    this.#leases = new Map();
    this.#ready = false;
    try {
      const revision = await loadBucket(this.#nc, this.#bucket, (entry) => {
        this.#apply(entry);
      });
      this.#lastRevision = revision;
      await this.#watch(revision);
    } catch (err) {
      [this.#leases, this.#lastRevision] = [previous, previousRevision];
      throw err;
    }
    this.#ready = true;
    this.#lastHeardAt = Date.now();
    this.#log.info({ leases: this.#leases.size, revision: this.#lastRevision }, "mirror loaded");
  }

  /** Follows the bucket after `revision` with a KV watch. */
  async #watch(revision: number): Promise<void> {
    if (this.#kv === undefined) throw new Error("mirror not started");
    const watch = await this.#kv.watch({ resumeFromRevision: revision + 1 });
    this.#stopWatch = () => {
      watch.stop();
    };
    this.#loop = (async () => {
      for await (const entry of watch) {
        this.#lastHeardAt = Date.now();
        // Each KvEntry getter parses again, so every field is read once.
        const key = entry.key;
        this.#apply({
          key,
          operation: entry.operation,
          value: entry.value,
          revision: entry.revision,
          createdMs: key === HEARTBEAT_KEY ? entry.created.getTime() : 0,
        });
      }
    })().catch((err: unknown) => {
      this.#log.error({ err: errorMessage(err) }, "bucket watch ended");
    });
  }

  /** Replaces a watch that has gone silent although authorizers write heartbeats. */
  async #supervise(): Promise<void> {
    const now = Date.now();
    const silentMs = now - this.#lastHeardAt;
    if (this.#restarting || !this.#heartbeatSeen || silentMs < this.#stallAfterMs) {
      if (silentMs < this.#stallAfterMs) this.#restartBackoffMs = 1000;
      return;
    }
    if (now < this.#nextRestartAt) return;
    this.#restarting = true;
    const reload = silentMs > MARKER_TTL_MS;
    this.#log.warn(
      { silentMs, reload, revision: this.#lastRevision },
      "watch silent; replacing it",
    );
    this.#metrics.restarts.add(1, { kind: reload ? "reload" : "resume" });
    try {
      this.#stopWatch?.();
      if (reload) await this.#load();
      else await this.#watch(this.#lastRevision);
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, "could not replace the watch; will retry");
    } finally {
      this.#nextRestartAt = Date.now() + this.#restartBackoffMs;
      this.#restartBackoffMs = Math.min(2 * this.#restartBackoffMs, MAX_RESTART_BACKOFF_MS);
      this.#restarting = false;
    }
  }

  #apply(entry: BucketEntry): void {
    const { key, operation } = entry;
    this.#lastRevision = Math.max(this.#lastRevision, entry.revision);
    this.#changes[operation]++;
    if (key === HEARTBEAT_KEY) {
      this.#lastHeartbeatAt = entry.createdMs;
      this.#heartbeatSeen = true;
      return;
    }
    // User revocations and anything else that is not an address key decide nothing here.
    if (!isAddressKey(key)) return;
    if (operation !== "PUT") {
      this.#leases.delete(key);
      return;
    }
    try {
      const lease = decodeLeaseView(entry.value);
      if (lease !== undefined) this.#hold(key, lease);
      else this.#leases.delete(key);
    } catch (err) {
      this.#leases.delete(key);
      this.#log.warn({ key, err: errorMessage(err) }, "undecodable lease dropped");
    }
  }

  #hold(key: string, lease: LeaseView): void {
    if (this.#leases.size < this.#maxEntries || this.#leases.has(key)) {
      this.#leases.set(key, lease);
      this.#refusedAtLimit = false;
      return;
    }
    this.#metrics.refused.add(1);
    if (!this.#refusedAtLimit) {
      this.#log.error(
        { limit: this.#maxEntries },
        "lease mirror full (RELAYLEASE_MIRROR_MAX): new leases are not mirrored and do not relay",
      );
    }
    this.#refusedAtLimit = true;
  }
}
