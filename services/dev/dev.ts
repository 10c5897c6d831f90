// relaylease dev: everything on one laptop. Starts a nats-server of its own (through
// scripts/nats-server.sh, in a temp store) unless RELAYLEASE_NATS_URL names one, provisions the
// stream and bucket, runs the authorizer, a watcher and a milter in one process on local ports,
// and prints how to try it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { formatDuration, type ConfigOf, type Setting } from "../../shared/config.ts";
import { checkCapability, connectOptions } from "../../shared/nats.ts";
import { runProcess, type RoleContext } from "../../shared/process.ts";
import { provision } from "../../shared/provision.ts";
import { natsSettings, replicasSetting } from "../../shared/settings.ts";
import { startAuthorizer } from "../authorizer/authorizer.ts";
import { maxTtl } from "../authorizer/policy.ts";
import { authorizerSettings } from "../authorizer/settings.ts";
import { startMilter } from "../milter/milter.ts";
import { milterSettings } from "../milter/settings.ts";
import { startWatcher } from "../watcher/watcher.ts";
import { watcherSettings } from "../watcher/settings.ts";
import { resolveNatsServerBinary, startNatsServer } from "./nats-server.ts";

export const devSettings = {
  ...watcherSettings,
  ...authorizerSettings,
  ...milterSettings,
  replicas: replicasSetting,
  natsUrl: {
    ...natsSettings.natsUrl,
    doc: "NATS servers to use; unset, dev starts a nats-server of its own.",
    default: undefined,
    parse: (raw: string): string[] | undefined => natsSettings.natsUrl.parse(raw),
  } satisfies Setting<string[] | undefined>,
  httpListen: { ...watcherSettings.httpListen, default: "127.0.0.1:8391" },
  outboxDir: {
    ...watcherSettings.outboxDir,
    doc: "The watcher's outbox directory; unset, a temporary one.",
    default: undefined,
    parse: (raw: string): string | undefined => raw,
  } satisfies Setting<string | undefined>,
};
type DevConfig = ConfigOf<typeof devSettings>;

export const devCommand: Command = {
  name: "dev",
  usage: "dev [settings]",
  summary:
    "Runs a whole relaylease on this machine: a nats-server of its own (unless --nats-url), the stream and bucket, the authorizer, a watcher (HTTP login API) and a milter (Postfix policy service).",
  schema: devSettings,
  run: async (args) => {
    const { config } = loadFromArgs(devSettings, args);
    await runProcess({
      role: "dev",
      logLevel: config.logLevel,
      metricsListen: config.metricsListen,
      start: (ctx) => startDev(config, ctx),
    });
  },
};

async function startDev(config: DevConfig, ctx: RoleContext): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), "relaylease-dev-"));
  ctx.add({ name: "scratch", stop: () => rm(scratch, { recursive: true, force: true }) });
  const natsUrl = config.natsUrl ?? [await startOwnNatsServer(join(scratch, "jetstream"), ctx)];
  const roleConfig = { ...config, natsUrl, outboxDir: config.outboxDir ?? join(scratch, "outbox") };
  const nc = await connect(connectOptions(roleConfig, "dev-setup", false));
  try {
    const capability = await checkCapability(nc, config.degradedTtl, ctx.log);
    await provision(nc, {
      stream: config.stream,
      bucket: config.bucket,
      replicas: config.replicas,
      maxLeaseTtlMs: maxTtl(config.leaseTtl, config.serviceTtls),
      perMessageTtl: capability.perMessageTtl,
    });
  } finally {
    await nc.close();
  }
  await startAuthorizer(roleConfig, ctx);
  const milter = await startMilter(roleConfig, ctx);
  const watcher = await startWatcher({ ...roleConfig, watcherId: config.watcherId ?? "dev" }, ctx);
  process.stdout.write(
    nextSteps(natsUrl.join(","), watcher.httpAddress ?? "", milter.policyAddress, config),
  );
}

async function startOwnNatsServer(storeDir: string, ctx: RoleContext): Promise<string> {
  const server = await startNatsServer({ binary: await resolveNatsServerBinary(), storeDir });
  ctx.add({ name: "nats-server", stop: () => server.stop() });
  ctx.log.info({ url: server.url, store: storeDir }, "started a nats-server for dev");
  return server.url;
}

function nextSteps(natsUrl: string, http: string, policy: string, config: DevConfig): string {
  const ip = "203.0.113.5";
  return `
relaylease dev is running (Ctrl-C stops it).
  NATS             ${natsUrl}
  login API        http://${http}/v1/logins
  policy service   ${policy}   (Postfix: check_policy_service inet:${policy})
  metrics/health   http://${config.metricsListen}/metrics  /healthz  /readyz

Report a login, which grants ${ip} a lease of ${formatDuration(config.leaseTtl)}:
  curl -s -X POST http://${http}/v1/logins -H 'content-type: application/json' \\
       -d '{"ip":"${ip}","user":"alice","service":"imap"}'
Check it (exit status 0 while leased):
  RELAYLEASE_NATS_URL=${natsUrl} node services/cli.ts check ${ip}
Ask the policy service as Postfix would:
  printf 'request=smtpd_access_policy\\nclient_address=${ip}\\n\\n' | nc ${policy.replace(/:(\d+)$/, " $1")}

`;
}
