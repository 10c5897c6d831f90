// relaylease authorizer: wires the authorizer's config into the process skeleton.
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { runProcess } from "../../shared/process.ts";
import { startAuthorizer } from "./authorizer.ts";
import { authorizerSettings } from "./settings.ts";

export const authorizerCommand: Command = {
  name: "authorizer",
  usage: "authorizer [settings]",
  summary: "Turns login events into relay leases in the NATS KV bucket. Run two or more replicas.",
  schema: authorizerSettings,
  run: async (args) => {
    const { config } = loadFromArgs(authorizerSettings, args);
    await runProcess({
      role: "authorizer",
      logLevel: config.logLevel,
      metricsListen: config.metricsListen,
      start: (ctx) => startAuthorizer(config, ctx),
    });
  },
};
