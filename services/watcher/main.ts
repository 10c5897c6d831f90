// relaylease watcher: wires the watcher's config into the process skeleton.
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { runProcess } from "../../shared/process.ts";
import { watcherSettings } from "./settings.ts";
import { startWatcher } from "./watcher.ts";

export const watcherCommand: Command = {
  name: "watcher",
  usage: "watcher [settings]",
  summary:
    "Sidecar of a POP/IMAP server: turns successful logins into login events on NATS JetStream.",
  schema: watcherSettings,
  run: async (args) => {
    const { config } = loadFromArgs(watcherSettings, args);
    await runProcess({
      role: "watcher",
      logLevel: config.logLevel,
      metricsListen: config.metricsListen,
      start: async (ctx) => {
        await startWatcher(config, ctx);
      },
    });
  },
};
