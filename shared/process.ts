// The process skeleton every role runs in: logging, telemetry, the health server, signals, and an
// ordered graceful shutdown with a deadline. A role's main.ts loads its config and hands a start
// function here; start registers components in the order they come up, and they are stopped in
// reverse order (front doors first, NATS last), each within what is left of the deadline.
import { errorMessage } from "./errors.ts";
import { startHealthServer, type ReadinessCheck } from "./health-server.ts";
import type { DestinationStream } from "pino";
import { createLogger, type Logger } from "./log.ts";
import { initTelemetry, type Telemetry, type TelemetryOptions } from "./telemetry.ts";

export interface Component {
  readonly name: string;
  /** Omitted: always ready once started. */
  ready?(): boolean;
  stop(): Promise<void>;
}

export interface RoleContext {
  readonly log: Logger;
  /** Registers a started component: stopped on shutdown, and part of /readyz if it has ready(). */
  add(component: Component): void;
}

export interface ProcessOptions {
  readonly role: string;
  readonly logLevel: string;
  readonly metricsListen: string;
  readonly shutdownDeadlineMs?: number;
  readonly spanProcessors?: TelemetryOptions["spanProcessors"];
  /** Where logs go (default stdout); tests read them from here. */
  readonly logDestination?: DestinationStream;
  start(ctx: RoleContext): Promise<void>;
}

export interface RunningProcess {
  readonly log: Logger;
  readonly healthAddress: string;
  /** Stops every component in reverse order; resolves true if all stopped within the deadline. */
  shutdown(reason: string): Promise<boolean>;
}

/** Starts a role; on failure stops whatever had started and rethrows. */
export async function startProcess(opts: ProcessOptions): Promise<RunningProcess> {
  const log = createLogger(opts.logLevel, { role: opts.role }, opts.logDestination);
  const telemetry: Telemetry = initTelemetry({
    serviceName: `relaylease-${opts.role}`,
    log,
    spanProcessors: opts.spanProcessors,
  });
  const components: Component[] = [];
  // Not ready until start has finished: a ready mirror with its front doors not yet listening
  // would send an MTA to a closed port.
  let started = false;
  const checks: ReadinessCheck[] = [{ name: "start", ready: () => started }];
  const health = await startHealthServer(opts.metricsListen, telemetry.prometheus, () => checks);
  const deadlineMs = opts.shutdownDeadlineMs ?? 10_000;

  let stopping: Promise<boolean> | undefined;
  const shutdown = (reason: string): Promise<boolean> => {
    stopping ??= stopAll(log, reason, components, deadlineMs).finally(async () => {
      await health.close();
      await telemetry.shutdown();
    });
    return stopping;
  };

  const ctx: RoleContext = {
    log,
    add: (c) => {
      components.push(c);
      const ready = c.ready?.bind(c);
      if (ready !== undefined) checks.push({ name: c.name, ready });
    },
  };
  try {
    await opts.start(ctx);
  } catch (err) {
    await shutdown("start failed");
    throw err;
  }
  started = true;
  log.info({ health: health.address }, `${opts.role} started`);
  return { log, healthAddress: health.address, shutdown };
}

async function stopAll(
  log: Logger,
  reason: string,
  components: readonly Component[],
  deadlineMs: number,
): Promise<boolean> {
  log.info({ reason, deadlineMs }, "shutting down");
  const deadline = Date.now() + deadlineMs;
  let clean = true;
  for (const c of [...components].reverse()) {
    const left = Math.max(0, deadline - Date.now());
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => {
        resolve("timeout");
      }, left);
    });
    try {
      const result = await Promise.race([c.stop().then(() => "stopped" as const), timedOut]);
      if (result === "timeout") {
        clean = false;
        log.error({ component: c.name }, "component did not stop before the shutdown deadline");
      }
    } catch (err) {
      clean = false;
      log.error({ component: c.name, err: errorMessage(err) }, "component failed to stop");
    } finally {
      clearTimeout(timer);
    }
  }
  log.info({ clean }, "stopped");
  return clean;
}

/**
 * Runs a role as the whole process: SIGTERM/SIGINT start the graceful shutdown, a second signal
 * exits at once. Exit status: 0 after a clean shutdown, 1 otherwise.
 */
export async function runProcess(opts: ProcessOptions): Promise<void> {
  const running = await startProcess(opts);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (++signals > 1) process.exit(1);
    void running.shutdown(signal).then((clean) => {
      process.exit(clean ? 0 : 1);
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
