// The watcher role: login sources in, login events out, through a durable outbox. It starts and
// takes logins whether or not NATS is reachable: the outbox keeps them until it is, and publishes
// them in order (DESIGN.md "Login sources": a login is never lost to an outage or a restart).
import { hostname } from "node:os";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { metrics } from "@opentelemetry/api";
import type { ConfigOf } from "../../shared/config.ts";
import { ConfigError } from "../../shared/config.ts";
import { errorMessage } from "../../shared/errors.ts";
import { checkCapability, connectWhenPossible } from "../../shared/nats.ts";
import type { RoleContext } from "../../shared/process.ts";
import { maxTtl } from "../authorizer/policy.ts";
import { loadAllowList } from "./drac/allow-list.ts";
import { registerWithRpcbind } from "./drac/rpcbind-register.ts";
import { startDracServer } from "./drac/server.ts";
import { observeSource } from "./source-metrics.ts";
import { startDovecotPolicyServer } from "./dovecot-policy/server.ts";
import { startHttpSource } from "./http-source.ts";
import { LoginIntake } from "./intake.ts";
import type { LoginSink } from "./login-sink.ts";
import { startLogSources } from "./log-source.ts";
import { Outbox, type OutboxStats } from "./outbox.ts";
import { LoginPublisher } from "./publisher.ts";
import type { watcherSettings } from "./settings.ts";

export type WatcherConfig = ConfigOf<typeof watcherSettings>;

export interface Watcher {
  readonly httpAddress: string | undefined;
  readonly dovecotPolicyAddress: string | undefined;
  readonly dracAddress: string | undefined;
  readonly portmapAddress: string | undefined;
  readonly outbox: Outbox;
}

export async function startWatcher(config: WatcherConfig, ctx: RoleContext): Promise<Watcher> {
  const watcherId = config.watcherId ?? defaultWatcherId();
  const nats = natsInBackground(config, `watcher-${watcherId}`, ctx);
  const outbox = await Outbox.open(config.outboxDir, {
    publish: (event) => nats.publisher().publishEvent(event),
    log: ctx.log,
    maxEvents: config.outboxMaxEvents,
    maxAgeMs: maxTtl(config.leaseTtl, config.serviceTtls),
  });
  ctx.add({ name: "outbox", stop: () => outbox.close() });
  observeOutbox(() => outbox.stats());
  const intake = new LoginIntake(outbox, watcherId, ctx.log);
  const sink: LoginSink = {
    login: (report) => {
      intake.submit(report);
    },
  };

  let httpAddress: string | undefined;
  if (config.httpListen !== undefined) {
    const http = await startHttpSource(config.httpListen, intake, ctx.log, config.httpToken);
    ctx.add({ name: "http-source", stop: () => http.close() });
    httpAddress = http.address;
  }
  let dovecotPolicyAddress: string | undefined;
  if (config.dovecotPolicyListen !== undefined) {
    const policy = await startDovecotPolicyServer({
      listen: config.dovecotPolicyListen,
      apiHeader: config.dovecotPolicyApiHeader,
      basicAuth: config.dovecotPolicyBasicAuth,
      sink,
      log: ctx.log,
    });
    ctx.add({ name: "dovecot-policy", stop: () => policy.close() });
    observeSource("dovecot-policy", () => policy.stats);
    dovecotPolicyAddress = policy.address;
  }
  let drac: { address: string; portmapAddress: string | undefined } | undefined;
  if (config.dracListen !== undefined) {
    const allow = await loadAllowList(config.dracAllow);
    if (allow.errors.length > 0) {
      const lines = allow.errors.map((e) => `line ${e.line}: ${e.message}`).join("; ");
      throw new ConfigError(`RELAYLEASE_DRAC_ALLOW (${config.dracAllow}): ${lines}`);
    }
    if (allow.missing) {
      ctx.log.warn({ file: config.dracAllow }, "no dracd.allow: only this host may report logins");
    }
    const server = await startDracServer({
      listen: config.dracListen,
      portmapListen: config.portmapListen,
      allowList: allow.list,
      sink,
      log: ctx.log,
    });
    ctx.add({ name: "drac", stop: () => server.close() });
    observeSource("drac", () => server.stats);
    if (config.dracRpcbind) {
      const registration = await registerWithRpcbind(server.registrations);
      ctx.add({ name: "rpcbind-registration", stop: () => registration.unregister() });
    }
    drac = server;
  }
  await startLogSources(config, intake, ctx);
  return {
    httpAddress,
    dovecotPolicyAddress,
    dracAddress: drac?.address,
    portmapAddress: drac?.portmapAddress,
    outbox,
  };
}

/**
 * Connects to NATS without holding up the start: until the first connection, publish() fails
 * (and the outbox retries). Registered first, so the connection is drained last.
 */
function natsInBackground(
  config: WatcherConfig,
  name: string,
  ctx: RoleContext,
): { publisher(): LoginPublisher } {
  let nc: NatsConnection | undefined;
  let publisher: LoginPublisher | undefined;
  const watcherId = name.slice("watcher-".length);
  const abort = new AbortController();
  const connecting = connectWhenPossible(config, name, ctx.log, abort.signal).then(
    async (connection) => {
      if (connection === undefined) return;
      nc = connection;
      publisher = new LoginPublisher(jetstream(connection), watcherId);
      // The watcher only publishes; per-message TTL matters to the bucket, so an old server is
      // reported, not fatal, here.
      await checkCapability(connection, true, ctx.log).catch((err: unknown) => {
        ctx.log.warn({ err: errorMessage(err) }, "could not check the server's capability");
      });
    },
  );
  ctx.add({
    name: "nats",
    stop: async () => {
      abort.abort();
      await connecting;
      await nc?.drain().catch(() => nc?.close());
    },
  });
  return {
    publisher: () => {
      if (publisher === undefined) throw new Error("not connected to NATS yet");
      return publisher;
    },
  };
}

function observeOutbox(stats: () => OutboxStats): void {
  const meter = metrics.getMeter("relaylease-watcher");
  meter
    .createObservableGauge("relaylease_watcher_outbox_depth", {
      description: "Logins waiting in the outbox to be published.",
    })
    .addCallback((r) => {
      r.observe(stats().depth);
    });
  meter
    .createObservableGauge("relaylease_watcher_outbox_oldest_age_seconds", {
      description: "How long the oldest waiting login has waited (0 when empty).",
      unit: "s",
    })
    .addCallback((r) => {
      r.observe(stats().oldestAgeMs / 1000);
    });
  meter
    .createObservableCounter("relaylease_watcher_outbox_events", {
      description:
        "Outbox events by what became of them: published, refused at the bound, expired.",
    })
    .addCallback((r) => {
      const s = stats();
      r.observe(s.published, { outcome: "published" });
      r.observe(s.refused, { outcome: "refused" });
      r.observe(s.expired, { outcome: "expired" });
    });
}

/** The pod (host) name, made into a subject token. */
export function defaultWatcherId(): string {
  return (
    hostname()
      .replace(/[^-\w]/g, "_")
      .slice(0, 64) || "watcher"
  );
}
