// NATS connection for every role: server list, creds file or user/password, TLS, reconnect
// forever with jittered back-off, every status change logged. Also the start-up capability check:
// per-message TTL needs JetStream API level >= 1 (nats-server >= 2.11.2); older servers accept the
// TTL settings and silently ignore them, so a lease would never expire on the server.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import {
  connect,
  credsAuthenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { ConfigOf } from "./config.ts";
import { ConfigError } from "./config.ts";
import { errorMessage } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { natsSettings } from "./settings.ts";

export type NatsConfig = ConfigOf<typeof natsSettings>;

export class CapabilityError extends Error {
  override name = "CapabilityError";
}

/**
 * Options for a long-running role (`persistent`: wait for a first server however long, reconnect
 * forever) or a one-shot admin command (fail at once when no server answers).
 */
export function connectOptions(
  config: NatsConfig,
  name: string,
  persistent = true,
): NodeConnectionOptions {
  const opts: NodeConnectionOptions = {
    servers: config.natsUrl,
    name,
    maxReconnectAttempts: persistent ? -1 : 0,
    reconnectTimeWait: 1000,
    reconnectJitter: 500,
    waitOnFirstConnect: persistent,
    timeout: persistent ? 20_000 : 5_000,
    // Each role's reply inboxes live under its own prefix so server permissions can be narrow.
    inboxPrefix: `_INBOX_${name.replace(/[^-\w]/g, "_")}`,
  };
  if (config.natsCreds !== undefined) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(config.natsCreds);
    } catch (err) {
      throw new ConfigError(`RELAYLEASE_NATS_CREDS: cannot read ${config.natsCreds}`, {
        cause: err,
      });
    }
    opts.authenticator = credsAuthenticator(creds);
  }
  if (config.natsUser !== undefined) opts.user = config.natsUser;
  if (config.natsPassword !== undefined) opts.pass = config.natsPassword;
  const { natsTlsCa: caFile, natsTlsCert: certFile, natsTlsKey: keyFile } = config;
  if (caFile !== undefined || certFile !== undefined || keyFile !== undefined) {
    if ((certFile === undefined) !== (keyFile === undefined)) {
      throw new ConfigError("RELAYLEASE_NATS_TLS_CERT and RELAYLEASE_NATS_TLS_KEY go together");
    }
    opts.tls = { caFile, certFile, keyFile };
  }
  return opts;
}

/** Connects (waiting for a first server however long it takes) and logs status changes. */
export async function connectNats(
  config: NatsConfig,
  name: string,
  log: Logger,
): Promise<NatsConnection> {
  const natsLog = log.child({ module: "nats" });
  natsLog.info({ servers: config.natsUrl }, "connecting to NATS");
  const nc = await connect(connectOptions(config, name));
  natsLog.info({ server: nc.getServer(), version: nc.info?.version }, "connected to NATS");
  void logStatus(nc, natsLog);
  return nc;
}

async function logStatus(nc: NatsConnection, log: Logger): Promise<void> {
  try {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "ping":
        case "reconnecting":
          break;
        case "disconnect":
        case "staleConnection":
        case "slowConsumer":
          log.warn({ status: s.type, detail: statusDetail(s) }, "NATS connection trouble");
          break;
        case "error":
          log.error({ status: s.type, detail: statusDetail(s) }, "NATS error");
          break;
        default:
          log.info({ status: s.type, detail: statusDetail(s) }, "NATS status");
      }
    }
  } catch (err) {
    log.error({ err: errorMessage(err) }, "NATS status loop ended");
  }
}

function statusDetail(s: object): string {
  return JSON.stringify(s, (_k, v: unknown) => (v instanceof Error ? v.message : v));
}

export interface Capability {
  readonly serverVersion: string;
  readonly apiLevel: number;
  readonly perMessageTtl: boolean;
}

/**
 * Refuses to run against a server without per-message TTL unless degraded mode is asked for.
 * The API level is absent (undefined) on servers before 2.11.
 */
export async function checkCapability(
  nc: NatsConnection,
  degradedAllowed: boolean,
  log: Logger,
  jsm?: JetStreamManager,
): Promise<Capability> {
  const manager = jsm ?? (await jetstreamManager(nc));
  const info = await manager.getAccountInfo();
  const apiLevel = info.api.level ?? 0;
  const serverVersion = nc.info?.version ?? "unknown";
  const capability = { serverVersion, apiLevel, perMessageTtl: apiLevel >= 1 };
  if (!capability.perMessageTtl) {
    const what = `nats-server ${serverVersion} (JetStream API level ${apiLevel}) has no per-message TTL; relaylease needs nats-server >= 2.11.2 (API level >= 1)`;
    if (!degradedAllowed) {
      throw new CapabilityError(
        `${what}. Upgrade the server, or set RELAYLEASE_DEGRADED_TTL=true to run with bucket-wide expiry only`,
      );
    }
    log.warn(
      { serverVersion, apiLevel },
      `DEGRADED MODE: ${what}; leases expire by bucket max_age and the mirrors' own clocks`,
    );
  }
  return capability;
}

/**
 * Connects, checks the server's capability, and registers the connection with the process so it
 * is drained last on shutdown.
 */
export async function connectForRole(
  config: NatsConfig,
  name: string,
  ctx: { log: Logger; add(c: { name: string; stop(): Promise<void> }): void },
): Promise<{ nc: NatsConnection; capability: Capability }> {
  const nc = await connectNats(config, name, ctx.log);
  ctx.add({
    name: "nats",
    stop: async () => {
      await nc.drain().catch(() => nc.close());
    },
  });
  const capability = await checkCapability(nc, config.degradedTtl, ctx.log);
  return { nc, capability };
}

/**
 * For a role that must work while NATS is away (the watcher): tries to connect until it succeeds
 * or `signal` aborts (resolving undefined then), with back-off, logging the first failure of a
 * streak; once connected, the connection reconnects forever on its own.
 */
export async function connectWhenPossible(
  config: NatsConfig,
  name: string,
  log: Logger,
  signal: AbortSignal,
): Promise<NatsConnection | undefined> {
  const natsLog = log.child({ module: "nats" });
  const options = { ...connectOptions(config, name), waitOnFirstConnect: false };
  let delay = 250;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      const nc = await connect(options);
      natsLog.info({ server: nc.getServer(), version: nc.info?.version }, "connected to NATS");
      void logStatus(nc, natsLog);
      return nc;
    } catch (err) {
      if (attempt === 1) {
        natsLog.warn(
          { servers: config.natsUrl, err: errorMessage(err) },
          "NATS unreachable; retrying",
        );
      }
      await sleep(delay, undefined, { signal }).catch(() => undefined);
      delay = Math.min(delay * 2, 5000);
    }
  }
  return undefined;
}
