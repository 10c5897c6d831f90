// The watcher's outbox against a real temp directory, with a stand-in for the login stream
// (the publish path is tested against a real nats-server elsewhere).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createLogger } from "../../../shared/log.ts";
import type { LoginEvent } from "../../../shared/login-event.ts";
import { SchemaError } from "../../../shared/schema.ts";
import {
  Outbox,
  OutboxClosedError,
  OutboxDirError,
  OutboxFullError,
  OutboxLockedError,
  OutboxWriteError,
  type OutboxOptions,
} from "../../../services/watcher/outbox.ts";
import { waitFor } from "../../support/wait.ts";

const log = createLogger("silent");

function event(i: number, loginAt = Date.now()): LoginEvent {
  return {
    id: `e${i}`,
    ip: `10.0.${(i >> 8) & 255}.${i & 255}`,
    user: `user${i}`,
    service: "imap",
    source: "http",
    watcher: "w1",
    loginAt,
  };
}

const ids = (from: number, to: number): string[] =>
  Array.from({ length: to - from }, (_, k) => `e${from + k}`);

/**
 * Stands in for the login stream. "ok" stores each event a tick later; "fail" refuses at once (NATS
 * away); "hold" keeps each publish pending until the test releases it.
 */
class Stream {
  mode: "ok" | "fail" | "hold" = "ok";
  readonly calls: string[] = [];
  readonly stored: string[] = [];
  readonly held: { id: string; release: () => void }[] = [];
  inFlight = 0;
  maxInFlight = 0;

  readonly publish = (e: LoginEvent): Promise<void> => {
    this.calls.push(e.id);
    if (this.mode === "fail") return Promise.reject(new Error("NATS away"));
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve) => {
      const release = () => {
        this.inFlight--;
        this.stored.push(e.id);
        resolve();
      };
      if (this.mode === "hold") this.held.push({ id: e.id, release });
      else setImmediate(release);
    });
  };

  releaseAll(): void {
    for (const h of this.held.splice(0)) h.release();
  }
}

describe("Outbox", () => {
  let dir: string;
  const open: Outbox[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "relaylease-outbox-"));
  });
  afterEach(async () => {
    for (const o of open.splice(0)) await o.abandon();
    await rm(dir, { recursive: true, force: true });
  });

  async function openOutbox(stream: Stream, options: Partial<OutboxOptions> = {}) {
    const o = await Outbox.open(dir, {
      publish: stream.publish,
      log,
      retryMinMs: 2,
      retryMaxMs: 10,
      ...options,
    });
    open.push(o);
    return o;
  }

  const drained = (o: Outbox, what = "the outbox to drain") =>
    waitFor(() => o.stats().depth === 0 && o.stats().inFlight === 0, 5000, what);

  async function segmentFiles(): Promise<string[]> {
    return (await readdir(dir)).filter((n) => n.startsWith("seg-")).sort();
  }

  it("publishes in append order", async () => {
    const stream = new Stream();
    const o = await openOutbox(stream);
    await Promise.all(Array.from({ length: 500 }, (_, i) => o.append(event(i))));
    await drained(o);
    assert.deepEqual(stream.calls, ids(0, 500));
    assert.deepEqual(stream.stored, ids(0, 500));
    const s = o.stats();
    assert.equal(s.appended, 500);
    assert.equal(s.published, 500);
    assert.equal(s.oldestAgeMs, 0);
  });

  it("resolves an append once the event is in a segment file", async () => {
    const stream = new Stream();
    stream.mode = "hold";
    const o = await openOutbox(stream);
    await o.append(event(1));
    const [name] = await segmentFiles();
    const text = await readFile(join(dir, name ?? ""), "utf8");
    assert.match(text, /^[0-9a-f]{8} 1 \{"id":"e1","ip":"10\.0\.0\.1","user":"user1",/);
    assert.ok(text.endsWith("}\n"));
    assert.equal(o.stats().depth, 1);
  });

  it("keeps at most maxInFlight publishes in flight", async () => {
    const stream = new Stream();
    stream.mode = "hold";
    const o = await openOutbox(stream, { maxInFlight: 8 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => o.append(event(i))));
    await waitFor(() => stream.held.length === 8, 2000, "a full window");
    await sleep(30);
    assert.equal(stream.held.length, 8);
    assert.equal(o.stats().inFlight, 8);
    stream.held.shift()?.release();
    await waitFor(() => stream.held.length === 8, 2000, "one more publish");
    assert.equal(stream.calls.length, 9);
    stream.mode = "ok";
    stream.releaseAll();
    await drained(o);
    assert.equal(stream.maxInFlight, 8);
    assert.deepEqual(stream.calls, ids(0, 100));
  });

  for (const maxInFlight of [1, 16]) {
    it(`retries failed publishes in order, losing none (maxInFlight ${maxInFlight})`, async () => {
      const stream = new Stream();
      stream.mode = "fail";
      const o = await openOutbox(stream, { maxInFlight });
      await Promise.all(Array.from({ length: 50 }, (_, i) => o.append(event(i))));
      await waitFor(() => o.stats().publishFailures >= 3 * maxInFlight, 2000, "retries");
      assert.equal(o.stats().depth, 50);
      // Only the events of the first window are ever tried while NATS is away.
      assert.deepEqual(new Set(stream.calls), new Set(ids(0, maxInFlight)));
      stream.mode = "ok";
      await drained(o);
      assert.deepEqual(stream.stored, ids(0, 50));
    });
  }

  it("continues after close and reopen without publishing anything again", async () => {
    const first = new Stream();
    const a = await openOutbox(first);
    await Promise.all(Array.from({ length: 30 }, (_, i) => a.append(event(i))));
    await drained(a);
    first.mode = "fail";
    await Promise.all(Array.from({ length: 20 }, (_, i) => a.append(event(30 + i))));
    await a.close();
    await assert.rejects(a.append(event(99)), OutboxClosedError);

    const second = new Stream();
    const b = await openOutbox(second);
    assert.equal(b.stats().depth, 20);
    await drained(b);
    await b.append(event(50));
    await drained(b);
    assert.deepEqual(second.stored, ids(30, 51));
    await b.close();
    // e50 is seq 51; the segment it is in stays until the next open finds it drained.
    assert.deepEqual(await segmentFiles(), ["seg-0000000000000051.log"]);
  });

  it("numbers new events past the saved position even when segments are gone", async () => {
    const first = new Stream();
    const a = await openOutbox(first);
    await Promise.all(Array.from({ length: 10 }, (_, i) => a.append(event(i))));
    await drained(a);
    await a.close();
    for (const name of await segmentFiles()) await rm(join(dir, name));

    const second = new Stream();
    const b = await openOutbox(second);
    await b.append(event(10));
    await drained(b);
    assert.deepEqual(second.stored, ["e10"]);
  });

  it("after a crash publishes at most maxInFlight events again, with the same ids", async () => {
    const first = new Stream();
    first.mode = "hold";
    const a = await openOutbox(first, { maxInFlight: 8 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => a.append(event(i))));
    while (first.stored.length < 50) {
      await waitFor(() => first.held.length > 0, 2000, "a publish");
      first.held.shift()?.release();
      await sleep(0);
    }
    await a.abandon();

    const second = new Stream();
    const b = await openOutbox(second, { maxInFlight: 8 });
    await drained(b);
    const start = Number(second.stored[0]?.slice(1));
    assert.ok(start >= 50 - 8 && start <= 50, `re-published from e${start}`);
    assert.deepEqual(second.stored, ids(start, 100));
  });

  const damages: {
    name: string;
    damage: (b: Buffer) => Buffer;
    left: number[];
    torn: number;
    corrupt: number;
  }[] = [
    {
      name: "the last record cut in the middle",
      damage: (b) => b.subarray(0, b.length - 20),
      left: range(0, 19),
      torn: 1,
      corrupt: 0,
    },
    {
      name: "garbage bytes after the last record",
      damage: (b) => Buffer.concat([b, Buffer.from("\0\0\0\x01garbage")]),
      left: range(0, 20),
      torn: 1,
      corrupt: 0,
    },
    {
      name: "the last record cut, then a garbage line",
      damage: (b) => Buffer.concat([b.subarray(0, b.length - 20), Buffer.from("zz\n")]),
      left: range(0, 19),
      torn: 0,
      corrupt: 1,
    },
    {
      name: "a flipped byte in the fifth record",
      damage: (b) => {
        const c = Buffer.from(b);
        let off = 0;
        for (let k = 0; k < 5; k++) off = c.indexOf(0x0a, off) + 1;
        c[off + 30] = (c[off + 30] ?? 0) ^ 0x20;
        return c;
      },
      left: [...range(0, 5), ...range(6, 20)],
      torn: 0,
      corrupt: 1,
    },
  ];
  for (const c of damages) {
    it(`recovers from ${c.name}`, async () => {
      const first = new Stream();
      first.mode = "fail";
      const a = await openOutbox(first);
      await Promise.all(Array.from({ length: 20 }, (_, i) => a.append(event(i))));
      await a.close();
      const [name] = await segmentFiles();
      const path = join(dir, name ?? "");
      await writeFile(path, c.damage(await readFile(path)));

      const second = new Stream();
      const b = await openOutbox(second);
      assert.equal(b.stats().torn, c.torn);
      await b.append(event(20));
      await drained(b);
      assert.deepEqual(
        second.stored,
        [...c.left, 20].map((i) => `e${i}`),
      );
      assert.equal(b.stats().corrupt, c.corrupt);
    });
  }

  it("refuses appends at the bound, counts them, and takes them again once drained", async () => {
    const stream = new Stream();
    stream.mode = "fail";
    const o = await openOutbox(stream, { maxEvents: 10 });
    const results = await Promise.allSettled(
      Array.from({ length: 15 }, (_, i) => o.append(event(i))),
    );
    assert.deepEqual(
      results.map((r) => r.status),
      [...Array<string>(10).fill("fulfilled"), ...Array<string>(5).fill("rejected")],
    );
    const refused = results[14];
    assert.ok(refused?.status === "rejected" && refused.reason instanceof OutboxFullError);
    assert.match(String(refused.reason), /RELAYLEASE_OUTBOX_MAX_EVENTS/);
    assert.equal(o.stats().refused, 5);
    assert.equal(o.stats().depth, 10);
    stream.mode = "ok";
    await drained(o);
    await o.append(event(15));
    await drained(o);
    assert.deepEqual(stream.stored, [...ids(0, 10), "e15"]);
  });

  it("drops events older than maxAgeMs unpublished and counts them, even while NATS is away", async () => {
    let now = Date.parse("2026-11-20T12:00:00Z");
    const stream = new Stream();
    stream.mode = "fail";
    const o = await openOutbox(stream, { maxAgeMs: 3_600_000, now: () => now });
    await o.append(event(1, now - 2 * 3_600_000));
    await o.append(event(2, now - 60_000));
    await o.append(event(3, now));
    await waitFor(() => o.stats().expired === 1, 2000, "the first expiry");
    assert.equal(o.stats().depth, 2);
    assert.equal(o.stats().oldestAgeMs, 60_000);
    now += 3_600_000 - 30_000;
    await waitFor(() => o.stats().expired === 2, 2000, "an expiry while NATS is away");
    assert.equal(o.stats().oldestAgeMs, 3_600_000 - 30_000);
    stream.mode = "ok";
    await drained(o);
    assert.deepEqual(stream.stored, ["e3"]);
    await o.append(event(4, now - 3_600_001));
    await o.append(event(5, now - 3_600_000));
    await drained(o);
    assert.deepEqual(stream.stored, ["e3", "e5"]);
    assert.equal(o.stats().expired, 3);
    assert.equal(o.stats().published, 2);
  });

  it("rotates segments at segmentBytes and deletes the drained ones", async () => {
    const stream = new Stream();
    stream.mode = "fail";
    const o = await openOutbox(stream, { segmentBytes: 1024 });
    for (let i = 0; i < 100; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, k) => o.append(event(i + k))));
    }
    assert.ok(o.stats().segments >= 5, `${o.stats().segments} segments`);
    assert.equal((await segmentFiles()).length, o.stats().segments);
    stream.mode = "ok";
    await drained(o);
    assert.deepEqual(stream.stored, ids(0, 100));
    await waitFor(async () => (await segmentFiles()).length === 1, 2000, "drained segments gone");
    assert.equal(o.stats().segments, 1);
  });

  it("rejects an append it could not write, and goes on with a new segment", async () => {
    const stream = new Stream();
    stream.mode = "hold";
    const o = await openOutbox(stream, { segmentBytes: 1 });
    await o.append(event(1));
    // The next write needs a new segment, seg-…2.log: a directory in its way makes it fail.
    await mkdir(join(dir, "seg-0000000000000002.log"));
    await assert.rejects(o.append(event(2)), OutboxWriteError);
    await o.append(event(3));
    stream.mode = "ok";
    stream.releaseAll();
    await drained(o);
    assert.deepEqual(stream.stored, ["e1", "e3"]);
  });

  it("refuses an event that would not survive a restart", async () => {
    const o = await openOutbox(new Stream());
    await assert.rejects(o.append({ ...event(1), ip: "not an address" }), SchemaError);
    await assert.rejects(o.append({ ...event(1), user: "u".repeat(300) }), SchemaError);
    assert.equal(o.stats().appended, 0);
  });

  it("names RELAYLEASE_OUTBOX_DIR when the directory cannot be used", async () => {
    const file = join(dir, "not-a-dir");
    await writeFile(file, "");
    await assert.rejects(
      Outbox.open(join(file, "outbox"), { publish: new Stream().publish, log }),
      (err: unknown) => {
        assert.ok(err instanceof OutboxDirError);
        assert.match(err.message, /^RELAYLEASE_OUTBOX_DIR .*not-a-dir\/outbox: /);
        return true;
      },
    );
  });

  describe("lock", () => {
    it("refuses a second open of the same directory, naming RELAYLEASE_OUTBOX_DIR", async () => {
      const a = await openOutbox(new Stream());
      await assert.rejects(openOutbox(new Stream()), (err: unknown) => {
        assert.ok(err instanceof OutboxLockedError);
        assert.match(err.message, /^RELAYLEASE_OUTBOX_DIR .* is in use by this process/);
        return true;
      });
      await a.close();
      await (await openOutbox(new Stream())).close();
    });

    it("takes over the lock of a process that is gone", async () => {
      const gone = spawnSync(process.execPath, ["-e", "process.pid"]).pid;
      await writeFile(join(dir, "lock"), JSON.stringify({ pid: gone, host: hostname() }));
      await (await openOutbox(new Stream())).close();
    });

    it("respects a fresh lock from another host and takes over a stale one", async () => {
      const lock = join(dir, "lock");
      await writeFile(lock, JSON.stringify({ pid: 1, host: "another-host" }));
      await assert.rejects(openOutbox(new Stream()), /process 1 on another-host/);
      const old = new Date(Date.now() - 120_000);
      await utimes(lock, old, old);
      await (await openOutbox(new Stream())).close();
    });
  });
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, k) => from + k);
}
