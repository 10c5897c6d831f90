// What every subcommand of the `relaylease` CLI shares: loading a schema from flags, environment
// and config file, and help text generated from the same schema.
import {
  flagOf,
  loadConfig,
  parseFlags,
  type CommandOption,
  type ConfigOf,
  type Schema,
} from "./config.ts";

export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly schema: Schema;
  /** Options of this command that are not settings. */
  readonly options?: Readonly<Record<string, CommandOption>>;
  run(args: readonly string[]): Promise<void>;
}

export function wantsHelp(args: readonly string[]): boolean {
  return args.includes("--help") || args.includes("-h");
}

/** Loads a role's config; throws ConfigError naming the setting on a bad value. */
export function loadFromArgs<S extends Schema>(
  schema: S,
  args: readonly string[],
  options: Readonly<Record<string, CommandOption>> = {},
  env: Readonly<Record<string, string | undefined>> = process.env,
): { config: ConfigOf<S>; positional: string[]; options: ReadonlyMap<string, string> } {
  const { flags, positional } = parseFlags(args, schema, options);
  return { config: loadConfig(schema, { env, flags }), positional, options: flags };
}

export function helpText(command: Command): string {
  const lines = [`Usage: relaylease ${command.usage}`, "", command.summary, ""];
  const options = Object.entries(command.options ?? {});
  if (options.length > 0) {
    lines.push("Options:");
    for (const [name, o] of options) {
      lines.push(`  ${name}${o.kind === "value" ? " VALUE" : ""}`, `      ${o.doc}`);
    }
    lines.push("");
  }
  const settings = Object.values(command.schema);
  if (settings.length > 0) {
    lines.push("Settings (flag, or environment variable, or key of the --config JSON file):");
    for (const s of settings) {
      const def = s.default === undefined ? "" : ` [default: ${s.default}]`;
      lines.push(`  ${flagOf(s.env)}  ${s.env}${def}`, `      ${s.doc} Accepts ${s.form}.`);
    }
    lines.push(
      "  --config FILE  RELAYLEASE_CONFIG",
      "      JSON file of settings keyed by variable name.",
    );
  }
  return lines.join("\n") + "\n";
}
