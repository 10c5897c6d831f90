// The process skeleton: health endpoints, readiness, ordered shutdown with a deadline.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { metrics } from "@opentelemetry/api";
import { freePort } from "../../services/dev/nats-server.ts";
import { startProcess } from "../../shared/process.ts";

describe("process skeleton", () => {
  it("serves /healthz, /readyz and /metrics", async () => {
    let ready = false;
    const running = await startProcess({
      role: "test",
      logLevel: "silent",
      metricsListen: "127.0.0.1:0",
      start: (ctx) => {
        ctx.add({ name: "mirror", ready: () => ready, stop: () => Promise.resolve() });
        metrics.getMeter("test").createCounter("relaylease_test_things").add(3);
        return Promise.resolve();
      },
    });
    try {
      const get = (path: string) => fetch(`http://${running.healthAddress}${path}`);
      assert.equal((await get("/healthz")).status, 200);
      const notReady = await get("/readyz");
      assert.equal(notReady.status, 503);
      assert.match(await notReady.text(), /not ready: mirror/);
      ready = true;
      assert.equal((await get("/readyz")).status, 200);
      assert.match(await (await get("/metrics")).text(), /relaylease_test_things_total\{[^}]*\} 3/);
      assert.equal((await get("/nope")).status, 404);
      assert.equal(
        (await fetch(`http://${running.healthAddress}/healthz`, { method: "POST" })).status,
        405,
      );
    } finally {
      await running.shutdown("test");
    }
  });

  it("is not ready before start has finished, even when every component is", async () => {
    const port = await freePort();
    const readyz = () => fetch(`http://127.0.0.1:${port}/readyz`);
    let whileStarting = { status: 0, text: "" };
    const running = await startProcess({
      role: "test",
      logLevel: "silent",
      metricsListen: `127.0.0.1:${port}`,
      start: async (ctx) => {
        ctx.add({ name: "mirror", ready: () => true, stop: () => Promise.resolve() });
        const r = await readyz(); // a front door would be started after this
        whileStarting = { status: r.status, text: await r.text() };
      },
    });
    try {
      assert.equal(whileStarting.status, 503);
      assert.match(whileStarting.text, /not ready: start/);
      assert.equal((await readyz()).status, 200);
    } finally {
      await running.shutdown("test");
    }
  });

  it("stops components in reverse order and reports one that misses the deadline", async () => {
    const stopped: string[] = [];
    const running = await startProcess({
      role: "test",
      logLevel: "silent",
      metricsListen: "127.0.0.1:0",
      shutdownDeadlineMs: 300,
      start: (ctx) => {
        for (const name of ["nats", "stuck", "front-door"]) {
          ctx.add({
            name,
            stop: () => {
              stopped.push(name);
              return name === "stuck" ? new Promise<void>(() => undefined) : Promise.resolve();
            },
          });
        }
        return Promise.resolve();
      },
    });
    const started = Date.now();
    const clean = await running.shutdown("test");
    assert.equal(clean, false);
    assert.deepEqual(stopped, ["front-door", "stuck", "nats"]);
    assert.ok(Date.now() - started < 2000, "the deadline bounds the shutdown");
    assert.equal(await running.shutdown("again"), false, "a second shutdown waits for the first");
  });

  it("stops what had started when start fails, and rethrows", async () => {
    const stopped: string[] = [];
    await assert.rejects(
      startProcess({
        role: "test",
        logLevel: "silent",
        metricsListen: "127.0.0.1:0",
        start: (ctx) => {
          ctx.add({ name: "nats", stop: () => Promise.resolve(void stopped.push("nats")) });
          return Promise.reject(new Error("bucket missing"));
        },
      }),
      /bucket missing/,
    );
    assert.deepEqual(stopped, ["nats"]);
  });
});
