// The in-memory mirror of the lease bucket that every relay decision reads (DESIGN.md "Decision").
// A KV watch loads the bucket's last values, then follows every write, delete and expiry marker.
// It is ready once the initial load is done: at once for an empty bucket (a watch of an empty
// bucket yields nothing to wait for), else when the entry with nothing pending after it arrives.
// Lookups check `expiresAt` themselves, so a missed expiry marker never keeps a lease alive.
// Limits: one map entry per key in the bucket; a value that does not decode is dropped (logged).
import type { KV, KvEntry } from "@nats-io/kv";
import { metrics } from "@opentelemetry/api";
import { errorMessage } from "../../shared/errors.ts";
import { decodeBucketValue } from "../../shared/bucket-value.ts";
import { HEARTBEAT_KEY, isAddressKey } from "../../shared/contract.ts";
import type { Lease } from "../../shared/lease.ts";
import type { Logger } from "../../shared/log.ts";

export interface LeaseLookup {
  /** The live lease under a key at `now`, if any. */
  lookup(key: string, now: number): Lease | undefined;
}

export class LeaseMirror implements LeaseLookup {
  readonly #leases = new Map<string, Lease>();
  readonly #kv: KV;
  readonly #log: Logger;
  #ready = false;
  #lastRevision = 0;
  #lastHeartbeatAt = 0;
  #stopWatch: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  readonly #changes = metrics
    .getMeter("relaylease-milter")
    .createCounter("relaylease_mirror_changes", {
      description: "Bucket entries applied to the mirror, by operation (PUT, DEL, PURGE).",
    });

  constructor(kv: KV, log: Logger) {
    this.#kv = kv;
    this.#log = log.child({ module: "mirror" });
    metrics
      .getMeter("relaylease-milter")
      .createObservableGauge("relaylease_mirror_entries", {
        description: "Leases held in the mirror (including ones past expiresAt not yet removed).",
      })
      .addCallback((r) => {
        r.observe(this.#leases.size);
      });
  }

  get size(): number {
    return this.#leases.size;
  }

  get lastRevision(): number {
    return this.#lastRevision;
  }

  ready(): boolean {
    return this.#ready;
  }

  lookup(key: string, now: number): Lease | undefined {
    const lease = this.#leases.get(key);
    return lease !== undefined && lease.expiresAt > now ? lease : undefined;
  }

  /** Whether the mirror holds an entry for the key at all, expired or not (for diagnostics). */
  holds(key: string): boolean {
    return this.#leases.has(key);
  }

  /** Starts the watch; resolves once the initial load is complete. */
  async start(): Promise<void> {
    const status = await this.#kv.status();
    const watch = await this.#kv.watch();
    this.#stopWatch = () => {
      watch.stop();
    };
    let loaded!: () => void;
    const initialLoad = new Promise<void>((resolve) => {
      loaded = resolve;
    });
    if (status.values === 0) this.#markReady(loaded);
    this.#loop = (async () => {
      for await (const entry of watch) {
        this.#apply(entry);
        if (!this.#ready && entry.delta === 0) this.#markReady(loaded);
      }
    })().catch((err: unknown) => {
      this.#log.error({ err: errorMessage(err) }, "bucket watch ended");
    });
    await initialLoad;
  }

  async stop(): Promise<void> {
    this.#stopWatch?.();
    await this.#loop;
  }

  #markReady(loaded: () => void): void {
    this.#ready = true;
    this.#log.info({ leases: this.#leases.size, revision: this.#lastRevision }, "mirror loaded");
    loaded();
  }

  /** When the mirror last heard an authorizer's heartbeat (epoch ms, server time), or 0. */
  get lastHeartbeatAt(): number {
    return this.#lastHeartbeatAt;
  }

  #apply(entry: KvEntry): void {
    this.#lastRevision = entry.revision;
    this.#changes.add(1, { operation: entry.operation });
    if (entry.key === HEARTBEAT_KEY) {
      this.#lastHeartbeatAt = entry.created.getTime();
      return;
    }
    // User revocations and anything else that is not an address key decide nothing here.
    if (!isAddressKey(entry.key)) return;
    if (entry.operation !== "PUT") {
      this.#leases.delete(entry.key);
      return;
    }
    try {
      const value = decodeBucketValue(entry.value);
      if (value.kind === "lease") this.#leases.set(entry.key, value.lease);
      else this.#leases.delete(entry.key);
    } catch (err) {
      this.#leases.delete(entry.key);
      this.#log.warn({ key: entry.key, err: errorMessage(err) }, "undecodable lease dropped");
    }
  }
}
