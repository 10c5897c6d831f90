// Configuration: one schema per role is the single source of truth for each setting's
// environment variable, flag, default, parser and documentation. The README's settings table is
// generated from the same schema (scripts/settings-table.ts), so the two cannot drift.
//
// Precedence: flag > environment > config file (--config / RELAYLEASE_CONFIG, JSON keyed by the
// environment variable names) > default. A bad value is fatal at start: ConfigError names the
// setting and the accepted form, and the CLI exits with status 2.
import { readFileSync } from "node:fs";

export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface Setting<T> {
  /** The environment variable; the flag and the config-file key derive from it. */
  readonly env: string;
  readonly doc: string;
  /** The accepted form, as shown in error messages and the README. */
  readonly form: string;
  /** Default as text (parsed like any other value), or undefined for "unset". */
  readonly default: string | undefined;
  /** Parses a raw string; throws an Error whose message says what is wrong. */
  readonly parse: (raw: string) => T;
}

export type Schema = Readonly<Record<string, Setting<unknown>>>;
/** A setting without a default must be declared with a type that admits undefined. */
export type ConfigOf<S extends Schema> = {
  readonly [K in keyof S]: S[K] extends Setting<infer T> ? T : never;
};

export function setting<T>(s: Setting<T>): Setting<T> {
  return s;
}

/** `RELAYLEASE_LEASE_TTL` -> `--lease-ttl`; `LOG_LEVEL` -> `--log-level`. */
export function flagOf(env: string): string {
  return (
    "--" +
    env
      .replace(/^RELAYLEASE_/, "")
      .toLowerCase()
      .replaceAll("_", "-")
  );
}

export interface ConfigSources {
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Flag values already split by parseFlags. */
  readonly flags: ReadonlyMap<string, string>;
}

export function loadConfig<S extends Schema>(schema: S, sources: ConfigSources): ConfigOf<S> {
  const file = readConfigFile(sources);
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(schema)) {
    const flag = flagOf(s.env);
    const raw = sources.flags.get(flag) ?? sources.env[s.env] ?? file[s.env] ?? s.default;
    if (raw === undefined || raw === "") {
      out[key] = raw === "" && s.default !== undefined ? s.parse(s.default) : undefined;
      continue;
    }
    try {
      out[key] = s.parse(raw);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new ConfigError(
        `${s.env} (${flag}): ${JSON.stringify(raw)} is not valid: ${why}; expected ${s.form}`,
        { cause: err },
      );
    }
  }
  return out as ConfigOf<S>;
}

function readConfigFile(sources: ConfigSources): Record<string, string> {
  const path = sources.flags.get("--config") ?? sources.env["RELAYLEASE_CONFIG"];
  if (path === undefined || path === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ConfigError(`RELAYLEASE_CONFIG (--config): cannot read ${path}: ${String(err)}`, {
      cause: err,
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(`RELAYLEASE_CONFIG (--config): ${path} must hold a JSON object`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") {
      out[k] = String(v);
    } else {
      throw new ConfigError(`RELAYLEASE_CONFIG (--config): ${path}: ${k} must be a string`);
    }
  }
  return out;
}

/** An option of one command that is not a setting (`--json`, `--user alice`). */
export interface CommandOption {
  readonly kind: "switch" | "value";
  readonly doc: string;
}

/**
 * Splits `--name value` and `--name=value` flags from positional arguments. Only flags the schema
 * knows (plus --config) are accepted: a typo stops the process instead of being ignored.
 * A boolean setting may be given as a bare flag (`--degraded-ttl`).
 */
export function parseFlags(
  args: readonly string[],
  schema: Schema,
  options: Readonly<Record<string, CommandOption>> = {},
): { flags: Map<string, string>; positional: string[] } {
  const known = new Map<string, Setting<unknown> | CommandOption>(Object.entries(options));
  for (const s of Object.values(schema)) known.set(flagOf(s.env), s);
  const flags = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? "";
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg : arg.slice(0, eq);
    const s = known.get(name);
    if (name !== "--config" && s === undefined) throw new ConfigError(`unknown option ${name}`);
    const isSwitch =
      s !== undefined && ("kind" in s ? s.kind === "switch" : s.form === BOOLEAN_FORM);
    if (eq !== -1) {
      flags.set(name, arg.slice(eq + 1));
    } else if (isSwitch && !isBooleanWord(args[i + 1])) {
      flags.set(name, "true");
    } else {
      const value = args[++i];
      if (value === undefined) throw new ConfigError(`option ${name} needs a value`);
      flags.set(name, value);
    }
  }
  return { flags, positional };
}

// ---- parsers ------------------------------------------------------------------------------

const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
export const DURATION_FORM = "a duration such as 90s, 30m, 1h30m or 1500ms (bare number = seconds)";

/** Parses a duration into milliseconds. */
export function parseDuration(raw: string): number {
  const text = raw.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const parts = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(text)
    ? text.match(/\d+(?:\.\d+)?(?:ms|s|m|h)/g)
    : null;
  if (parts === null) throw new Error("not a duration");
  let ms = 0;
  for (const p of parts) {
    const unit = /(?:ms|s|m|h)$/.exec(p)?.[0] ?? "s";
    ms += Number(p.slice(0, p.length - unit.length)) * (DURATION_UNITS_MS[unit] ?? 1000);
  }
  return Math.round(ms);
}

export function durationSetting(
  env: string,
  doc: string,
  def: string | undefined,
  min: number,
): Setting<number> {
  return {
    env,
    doc,
    default: def,
    form: `${DURATION_FORM}, at least ${formatDuration(min)}`,
    parse: (raw) => {
      const ms = parseDuration(raw);
      if (ms < min) throw new Error(`shorter than ${formatDuration(min)}`);
      return ms;
    },
  };
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export function integerSetting(
  env: string,
  doc: string,
  def: string | undefined,
  min: number,
  max: number,
): Setting<number> {
  return {
    env,
    doc,
    default: def,
    form: `a whole number from ${min} to ${max}`,
    parse: (raw) => {
      if (!/^\d+$/.test(raw.trim())) throw new Error("not a whole number");
      const n = Number(raw);
      if (n < min || n > max) throw new Error("out of range");
      return n;
    },
  };
}

export const BOOLEAN_FORM = "true or false";
function isBooleanWord(s: string | undefined): boolean {
  return s !== undefined && /^(true|false|yes|no|1|0|on|off)$/i.test(s);
}
export function booleanSetting(env: string, doc: string, def: string): Setting<boolean> {
  return {
    env,
    doc,
    default: def,
    form: BOOLEAN_FORM,
    parse: (raw) => {
      if (!isBooleanWord(raw)) throw new Error("not a boolean");
      return /^(true|yes|1|on)$/i.test(raw);
    },
  };
}

export function stringSetting(
  env: string,
  doc: string,
  def: string | undefined,
  form: string,
  pattern: RegExp,
): Setting<string> {
  return {
    env,
    doc,
    default: def,
    form,
    parse: (raw) => {
      if (!pattern.test(raw)) throw new Error("does not match");
      return raw;
    },
  };
}

export function enumSetting<T extends string>(
  env: string,
  doc: string,
  def: T,
  values: readonly T[],
): Setting<T> {
  return {
    env,
    doc,
    default: def,
    form: `one of ${values.join(", ")}`,
    parse: (raw) => {
      const v = values.find((x) => x === raw.trim().toLowerCase());
      if (v === undefined) throw new Error("not one of the accepted values");
      return v;
    },
  };
}
