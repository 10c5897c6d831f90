// Runs roles in this process against a test nats-server, the way `relaylease dev` does, with
// settings from a plain env map, logs captured as parsed JSON lines, and the Prometheus text of
// the process's metrics at hand.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { loadConfig } from "../../shared/config.ts";
import { startProcess, type RoleContext, type RunningProcess } from "../../shared/process.ts";
import { devSettings } from "../../services/dev/dev.ts";
import type { NatsConnection } from "@nats-io/transport-node";
import { provision, type Shape } from "../../shared/provision.ts";

export type RoleConfig = ReturnType<typeof loadConfig<typeof devSettings>> & {
  natsUrl: string[];
  outboxDir: string;
};

export function roleConfig(natsUrl: string, env: Record<string, string> = {}): RoleConfig {
  const config = loadConfig(devSettings, {
    env: {
      RELAYLEASE_HTTP_LISTEN: "127.0.0.1:0",
      RELAYLEASE_POLICY_LISTEN: "127.0.0.1:0",
      RELAYLEASE_METRICS_LISTEN: "127.0.0.1:0",
      RELAYLEASE_WATCHER_ID: "test",
      ...env,
      RELAYLEASE_NATS_URL: natsUrl,
    },
    flags: new Map(),
  });
  return {
    ...config,
    natsUrl: config.natsUrl ?? [natsUrl],
    outboxDir: config.outboxDir ?? scratchDir(),
  };
}

/** A temp outbox dir, removed when the test process exits. */
function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "relaylease-outbox-"));
  process.once("exit", () => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

export interface Harness {
  readonly running: RunningProcess;
  /** Every log line so far, parsed. */
  readonly logs: Record<string, unknown>[];
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

export async function startRoles(
  start: (ctx: RoleContext) => Promise<void>,
  logLevel = "info",
): Promise<Harness> {
  const logs: Record<string, unknown>[] = [];
  let partial = "";
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) if (l !== "") logs.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const running = await startProcess({
    role: "test",
    logLevel,
    metricsListen: "127.0.0.1:0",
    logDestination: destination,
    start,
  });
  return {
    running,
    logs,
    metrics: async () => (await fetch(`http://${running.healthAddress}/metrics`)).text(),
    stop: async () => {
      await running.shutdown("test done");
    },
  };
}

/**
 * Creates the stream, consumer and bucket the roles' defaults name (RELAY_LOGINS, relay-leases),
 * one replica, per-message TTL; what each test sets itself comes in `shape`.
 */
export function provisionForTest(
  nc: NatsConnection,
  shape: Pick<Shape, "maxLeaseTtlMs"> & Partial<Shape>,
): Promise<string[]> {
  return provision(nc, {
    stream: "RELAY_LOGINS",
    bucket: "relay-leases",
    replicas: 1,
    perMessageTtl: true,
    ...shape,
  });
}
