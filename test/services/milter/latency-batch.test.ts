import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Histogram } from "@opentelemetry/api";
import { LatencyBatch } from "../../../services/milter/milter.ts";

/** A histogram that keeps what it is handed, in order. */
function keeping(): { histogram: Histogram; recorded: number[] } {
  const recorded: number[] = [];
  const histogram: Histogram = {
    record: (value: number) => {
      recorded.push(value);
    },
  };
  return { histogram, recorded };
}

describe("LatencyBatch", () => {
  it("hands values on once a batch is full, in order, and starts the next batch", () => {
    const { histogram, recorded } = keeping();
    const batch = new LatencyBatch(histogram, 3);
    batch.record(1);
    batch.record(2);
    assert.deepEqual(recorded, []);
    batch.record(3);
    assert.deepEqual(recorded, [1, 2, 3]);
    batch.record(4);
    assert.deepEqual(recorded, [1, 2, 3]);
  });

  it("hands on a partial batch when flushed, once", () => {
    const { histogram, recorded } = keeping();
    const batch = new LatencyBatch(histogram, 4);
    batch.record(0.5);
    batch.record(0.25);
    batch.flush();
    assert.deepEqual(recorded, [0.5, 0.25]);
    batch.flush();
    assert.deepEqual(recorded, [0.5, 0.25]);
    for (let i = 0; i < 9; i++) batch.record(i);
    batch.flush();
    assert.deepEqual(recorded, [0.5, 0.25, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });
});
