// relaylease milter: wires the milter role's config into the process skeleton.
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { runProcess } from "../../shared/process.ts";
import { startMilter } from "./milter.ts";
import { milterSettings } from "./settings.ts";

export const milterCommand: Command = {
  name: "milter",
  usage: "milter [settings]",
  summary:
    "Sidecar of an SMTP server: mirrors the lease bucket and answers 'may this client relay?' (Postfix policy service).",
  schema: milterSettings,
  run: async (args) => {
    const { config } = loadFromArgs(milterSettings, args);
    await runProcess({
      role: "milter",
      logLevel: config.logLevel,
      metricsListen: config.metricsListen,
      start: async (ctx) => {
        await startMilter(config, ctx);
      },
    });
  },
};
