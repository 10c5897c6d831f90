// Property: whatever the interleaving of appends, NATS outages, clean restarts and crashes, every
// acknowledged login event is published, in append order, exactly once, except that
//   - after each crash at most maxInFlight events are published again (same ids: the stream
//     dedupes them), and
//   - an event may overtake fewer than maxInFlight older ones (a failed publish retried after a
//     newer one in the same window succeeded).
// Appends cut short by a crash (rejected) may or may not be published: they were never
// acknowledged, but may have reached the disk.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import fc from "fast-check";
import { createLogger } from "../../../shared/log.ts";
import type { LoginEvent } from "../../../shared/login-event.ts";
import { Outbox } from "../../../services/watcher/outbox.ts";
import { waitFor } from "../../support/wait.ts";

const log = createLogger("silent");

type Op =
  | { readonly kind: "append"; readonly n: number }
  | { readonly kind: "down" }
  | { readonly kind: "up" }
  | { readonly kind: "settle"; readonly ms: number }
  | { readonly kind: "restart" }
  | { readonly kind: "crash"; readonly n: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constant("append"), n: fc.integer({ min: 1, max: 40 }) }),
  },
  { weight: 2, arbitrary: fc.constant({ kind: "down" }) },
  { weight: 2, arbitrary: fc.constant({ kind: "up" }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("settle"), ms: fc.integer({ min: 0, max: 5 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "restart" }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("crash"), n: fc.integer({ min: 0, max: 20 }) }),
  },
);

/** The login stream: while down, publishes fail after a moment; otherwise they are stored. */
class Stream {
  down = false;
  /** Ids in the order the stream stored them, repeats included. */
  readonly stored: string[] = [];
  #n = 0;
  readonly publish = (e: LoginEvent): Promise<void> => {
    const down = this.down;
    const wait = this.#n++ % 3;
    return new Promise((resolve, reject) => {
      setTimeout(() => {
        if (down) {
          reject(new Error("NATS away"));
        } else {
          this.stored.push(e.id);
          resolve();
        }
      }, wait);
    });
  };
}

function event(i: number): LoginEvent {
  return {
    id: `p${i}`,
    ip: `10.1.${(i >> 8) & 255}.${i & 255}`,
    service: "pop3",
    source: "dovecot-log",
    watcher: "w1",
    loginAt: Date.now(),
  };
}

async function run(ops: readonly Op[], maxInFlight: number): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "relaylease-outbox-prop-"));
  const stream = new Stream();
  const options = {
    publish: stream.publish,
    log,
    maxInFlight,
    segmentBytes: 2048,
    retryMinMs: 1,
    retryMaxMs: 4,
  };
  const appended: string[] = [];
  const acked = new Set<string>();
  const maybe = new Set<string>();
  let crashes = 0;
  let outbox = await Outbox.open(dir, options);
  try {
    for (const o of ops) {
      switch (o.kind) {
        case "append": {
          const batch = Array.from({ length: o.n }, () => {
            const e = event(appended.length);
            appended.push(e.id);
            return outbox.append(e).then(() => e.id);
          });
          for (const id of await Promise.all(batch)) acked.add(id);
          break;
        }
        case "down":
          stream.down = true;
          break;
        case "up":
          stream.down = false;
          break;
        case "settle":
          await sleep(o.ms);
          break;
        case "restart":
          await outbox.close();
          outbox = await Outbox.open(dir, options);
          break;
        case "crash": {
          const pending = Array.from({ length: o.n }, () => {
            const e = event(appended.length);
            appended.push(e.id);
            return outbox.append(e).then(
              () => acked.add(e.id),
              () => maybe.add(e.id),
            );
          });
          await sleep(0);
          await outbox.abandon();
          await Promise.all(pending);
          crashes++;
          outbox = await Outbox.open(dir, options);
          break;
        }
      }
    }
    stream.down = false;
    const o = outbox;
    await waitFor(() => o.stats().depth === 0 && o.stats().inFlight === 0, 10_000, "drained");
    await outbox.close();
  } finally {
    await outbox.abandon();
    await rm(dir, { recursive: true, force: true });
  }
  check(stream.stored, appended, acked, maybe, crashes, maxInFlight);
}

function check(
  stored: readonly string[],
  appended: readonly string[],
  acked: ReadonlySet<string>,
  maybe: ReadonlySet<string>,
  crashes: number,
  maxInFlight: number,
): void {
  const once = new Set(stored);
  for (const id of acked) assert.ok(once.has(id), `acknowledged ${id} was never published`);
  for (const id of once) assert.ok(acked.has(id) || maybe.has(id), `${id} was never appended`);
  const repeats = stored.length - once.size;
  assert.ok(repeats <= crashes * maxInFlight, `${repeats} repeats after ${crashes} crashes`);
  // Order: rank each published event by append order; an event may follow a later one only if
  // it is within the window of it.
  const rank = new Map(appended.filter((id) => once.has(id)).map((id, i) => [id, i]));
  let highest = -1;
  for (const id of once) {
    const r = rank.get(id) ?? -1;
    assert.ok(highest - r < maxInFlight, `${id} came after one ${highest - r} events later`);
    highest = Math.max(highest, r);
  }
}

describe("Outbox property", () => {
  for (const maxInFlight of [1, 4, 16]) {
    it(`publishes every acknowledged event once and in order (maxInFlight ${maxInFlight})`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 16 }), (ops) =>
          run(ops, maxInFlight),
        ),
        { numRuns: 25 },
      );
    });
  }
});
