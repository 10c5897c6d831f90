import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startProcess } from "../../../shared/process.ts";
import { observeSource } from "../../../services/watcher/source-metrics.ts";

describe("source metrics", () => {
  it("exports each source's counters, nested ones flattened", async () => {
    const stats = { requests: 3, ignored: { failed: 2, protocol: 1 }, name: "not a number" };
    const running = await startProcess({
      role: "test",
      logLevel: "silent",
      metricsListen: "127.0.0.1:0",
      start: () => {
        observeSource("dovecot-policy", () => stats);
        return Promise.resolve();
      },
    });
    try {
      stats.ignored.failed = 5;
      const text = await (await fetch(`http://${running.healthAddress}/metrics`)).text();
      /** The sample whose labels include this source and event, in whatever order. */
      const value = (event: string): string | undefined => {
        for (const line of text.split("\n")) {
          if (!line.startsWith("relaylease_watcher_source_events_total{")) continue;
          if (line.includes('source="dovecot-policy"') && line.includes(`event="${event}"`)) {
            return line.split(" ").pop();
          }
        }
        return undefined;
      };
      assert.equal(value("requests"), "3");
      assert.equal(value("ignored_failed"), "5");
      assert.equal(value("ignored_protocol"), "1");
      assert.equal(value("name"), undefined);
    } finally {
      await running.shutdown("test");
    }
  });
});
