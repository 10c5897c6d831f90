// Proves the real-server kit: start and connect, JetStream API level, data surviving restart(),
// an R3 stream surviving the loss of a node, failure messages that carry the server's log, and
// no server outliving a killed parent.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { NatsServerError, freePort, startNatsServer } from "../../services/dev/nats-server.ts";
import {
  debianNatsServerBinary,
  startTestNatsCluster,
  startTestNatsServer,
  type TestNatsServer,
} from "./nats-server.ts";

const SHARED_PORT = 4222;

function assertNotShared(server: TestNatsServer): void {
  assert.notEqual(server.port, SHARED_PORT);
  assert.ok(!server.url.endsWith(`:${SHARED_PORT}`), server.url);
}

void describe("startTestNatsServer", () => {
  void it("starts a JetStream server with API level >= 1 on a free port", async (t) => {
    const started = Date.now();
    const server = await startTestNatsServer();
    t.after(() => server.cleanup());
    t.diagnostic(`start took ${Date.now() - started} ms`);
    assertNotShared(server);
    const nc = await connect({ servers: server.url });
    t.after(() => nc.close());
    const info = await (await jetstreamManager(nc)).getAccountInfo();
    assert.ok((info.api.level ?? 0) >= 1, `api.level ${String(info.api.level)}`);
  });

  void it("keeps stream data across restart() on the same port", async (t) => {
    const server = await startTestNatsServer();
    t.after(() => server.cleanup());
    const { port } = server;
    await withConnection(server.url, async (nc) => {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "KIT", subjects: ["kit.>"] });
      await jetstream(nc).publish("kit.one", "survives");
    });
    const started = Date.now();
    await server.restart();
    t.diagnostic(`restart took ${Date.now() - started} ms`);
    assert.equal(server.port, port);
    await withConnection(server.url, async (nc) => {
      const jsm = await jetstreamManager(nc);
      const msg = await jsm.streams.getMessage("KIT", { seq: 1 });
      assert.equal(msg?.string(), "survives");
    });
  });

  void it("rejects with exit code and log tail when the server exits early", async () => {
    await assert.rejects(startTestNatsServer({ extraConfig: "broken {{" }), (err: unknown) => {
      assert.ok(err instanceof NatsServerError);
      assert.match(err.message, /exited before becoming ready \(code 1,/);
      assert.match(err.message, /--- nats-server log tail ---\n.*Parse error/s);
      return true;
    });
  });

  void it("rejects with a named timeout and log tail when the server is too slow", async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-test-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const start = startNatsServer({ storeDir: path.join(dir, "store"), readyTimeoutMs: 1 });
    await assert.rejects(start, /nats-server did not become ready within 1 ms \(waiting for/);
  });

  void it("never chooses NATS's default ports", async () => {
    for (let i = 0; i < 50; i++) assert.ok(![4222, 6222, 8222].includes(await freePort()));
  });

  void it("writes an explicit listen address into the config", async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-test-"));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const server = await startNatsServer({ storeDir: path.join(dir, "store") });
    t.after(() => server.stop());
    const config = await readFile(server.configFile, "utf8");
    assert.match(config, new RegExp(`^listen: "127\\.0\\.0\\.1:${server.port}"$`, "m"));
    assert.doesNotMatch(config, /4222/);
  });
});

void describe("startTestNatsCluster", () => {
  void it("serves an R3 stream and keeps acking after its leader stops", async (t) => {
    const started = Date.now();
    const cluster = await startTestNatsCluster(3);
    t.after(() => cluster.cleanup());
    t.diagnostic(`cluster start took ${Date.now() - started} ms`);
    for (const server of cluster.servers) assertNotShared(server);
    const nc = await connect({
      servers: cluster.urls,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
    t.after(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
    assert.equal(info.config.num_replicas, 3);
    const js = jetstream(nc);
    await js.publish("r3.a", "before");

    const leaderName = (await jsm.streams.info("R3")).cluster?.leader;
    const leader = cluster.servers.find((_s, i) => `n${i + 1}` === leaderName);
    assert.ok(leader, `stream leader ${String(leaderName)}`);
    await leader.stop();
    const stopped = Date.now();

    // Re-election takes a few seconds; msgID makes a retried publish count once.
    const ack = await retry(() =>
      js.publish("r3.b", "after", { msgID: "after-stop", timeout: 1000 }),
    );
    t.diagnostic(`publish acked ${Date.now() - stopped} ms after the leader stopped`);
    assert.equal(ack.stream, "R3");
    assert.equal(ack.seq, 2);
    const state = await retry(async () => (await jsm.streams.info("R3")).state);
    assert.equal(state.messages, 2);
  });
});

void describe("debianNatsServerBinary", () => {
  void it("starts Debian's 2.9 server, which reports no JetStream API level", async (t) => {
    const binary = await debianNatsServerBinary();
    if (binary === undefined) {
      t.skip("no Debian nats-server 2.9.x installed");
      return;
    }
    const server = await startTestNatsServer({ binary });
    t.after(() => server.cleanup());
    await withConnection(server.url, async (nc) => {
      assert.match(nc.info?.version ?? "", /^2\.9\./);
      const info = await (await jetstreamManager(nc)).getAccountInfo();
      assert.equal(info.api.level, undefined);
    });
  });
});

void describe("orphan guard", () => {
  void it("stops the server when its parent process is SIGKILLed", async () => {
    const module = new URL("../../services/dev/nats-server.ts", import.meta.url).href;
    const script = `
      import { startNatsServer } from ${JSON.stringify(module)};
      const dir = process.argv[1];
      const server = await startNatsServer({ storeDir: dir + "/store" });
      console.log(server.pid);
      process.kill(process.pid, "SIGKILL");
    `;
    const dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-test-"));
    try {
      const stdout = await new Promise<string>((resolve) => {
        execFile(process.execPath, ["--input-type=module", "-e", script, dir], (_err, out) => {
          resolve(out);
        });
      });
      const pid = Number(stdout.trim());
      assert.ok(pid > 0, `child printed ${JSON.stringify(stdout)}`);
      await retry(async () => {
        assert.ok(!(await isRunning(pid)), `nats-server ${pid} still running`);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function withConnection(url: string, fn: (nc: NatsConnection) => Promise<void>) {
  const nc = await connect({ servers: url });
  try {
    await fn(nc);
  } finally {
    await nc.close();
  }
}

/** Retries fn for up to 20 s: cluster elections and orphan reaping take a moment. */
async function retry<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

/** A zombie (dead, not yet reaped by whoever inherited it) counts as not running. */
async function isRunning(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}
