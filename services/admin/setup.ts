// relaylease setup: creates or updates the login stream, the authorizers' durable consumer and
// the lease bucket, idempotently, with an admin identity; prints what it changed.
import { connect } from "@nats-io/transport-node";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { createLogger } from "../../shared/log.ts";
import { checkCapability, connectOptions } from "../../shared/nats.ts";
import { provision } from "../../shared/provision.ts";
import { setupSettings } from "./admin-settings.ts";
import { maxTtl } from "../authorizer/policy.ts";

export const setupCommand: Command = {
  name: "setup",
  usage: "setup [settings]",
  summary:
    "Creates or updates the stream, the authorizer's durable consumer and the lease bucket. Run it with an admin identity (a Helm hook Job in a cluster).",
  schema: setupSettings,
  run: async (args) => {
    const { config } = loadFromArgs(setupSettings, args);
    const log = createLogger(config.logLevel, { role: "setup" });
    const nc = await connect(connectOptions(config, "setup", false));
    try {
      const capability = await checkCapability(nc, config.degradedTtl, log);
      const changes = await provision(nc, {
        stream: config.stream,
        bucket: config.bucket,
        replicas: config.replicas,
        maxLeaseTtlMs: maxTtl(config.leaseTtl, config.serviceTtls),
        perMessageTtl: capability.perMessageTtl,
        ackWaitMs: config.ackWait,
      });
      process.stdout.write(
        changes.length === 0 ? "nothing to change\n" : changes.map((c) => c + "\n").join(""),
      );
    } finally {
      await nc.close();
    }
  },
};
