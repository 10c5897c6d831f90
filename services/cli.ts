#!/usr/bin/env node
// relaylease <command>: one binary, one subcommand per role plus the admin commands.
// Exit status: 0 success, 1 failure at run time, 2 bad usage or configuration.
import { checkCommand } from "./admin/check.ts";
import { doctorCommand } from "./admin/doctor.ts";
import { eventsCommand } from "./admin/events.ts";
import { grantCommand } from "./admin/grant.ts";
import { leasesCommand } from "./admin/leases.ts";
import { revokeCommand } from "./admin/revoke.ts";
import { setupCommand } from "./admin/setup.ts";
import { authorizerCommand } from "./authorizer/main.ts";
import { devCommand } from "./dev/dev.ts";
import { milterCommand } from "./milter/main.ts";
import { watcherCommand } from "./watcher/main.ts";
import { helpText, wantsHelp, type Command } from "../shared/cli.ts";
import { ConfigError } from "../shared/config.ts";
import { errorMessage } from "../shared/errors.ts";
import { AddressError } from "../shared/address.ts";

export const commands: readonly Command[] = [
  watcherCommand,
  authorizerCommand,
  milterCommand,
  devCommand,
  setupCommand,
  leasesCommand,
  grantCommand,
  revokeCommand,
  checkCommand,
  eventsCommand,
  doctorCommand,
];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "Usage: relaylease <command> [settings]",
    "",
    "POP-before-SMTP relay leases for mail clusters, over NATS JetStream.",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Every setting is a flag, a RELAYLEASE_* environment variable, or a key of a --config JSON file.",
    "`relaylease <command> --help` lists a command's settings.",
    "",
  ].join("\n");
}

async function main(argv: readonly string[]): Promise<void> {
  const [name, ...args] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage());
    return;
  }
  const command = commands.find((c) => c.name === name);
  if (command === undefined) {
    process.stderr.write(`relaylease: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  if (wantsHelp(args)) {
    process.stdout.write(helpText(command));
    return;
  }
  try {
    await command.run(args);
  } catch (err) {
    const usageError = err instanceof ConfigError || err instanceof AddressError;
    process.stderr.write(`relaylease ${command.name}: ${errorMessage(err)}\n`);
    process.exit(usageError ? 2 : 1);
  }
}

await main(process.argv.slice(2));
