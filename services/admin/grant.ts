// relaylease grant <ip>: writes a lease by hand (source "admin"), through the same compare-and-set
// and never-lease rules as the authorizer, so it never shortens a lease and never opens a relay
// for an address that can never be one client. Exit status 1 when refused.
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { ConfigError, formatDuration, parseDuration, DURATION_FORM } from "../../shared/config.ts";
import { LABEL, USER_NAME } from "../../shared/schema.ts";
import { createLogger } from "../../shared/log.ts";
import { newEventId } from "../../shared/login-event.ts";
import { checkCapability } from "../../shared/nats.ts";
import { policyOf } from "../authorizer/authorizer.ts";
import { LeaseWriter } from "../authorizer/lease-writer.ts";
import { neverLeaseReason, ttlFor } from "../authorizer/policy.ts";
import { authorizerSettings } from "../authorizer/settings.ts";
import { adminSettings } from "./admin-settings.ts";
import { withNats } from "./connection.ts";

export const grantSettings = {
  ...authorizerSettings,
  ...adminSettings,
};

const options = {
  "--ttl": {
    kind: "value",
    doc: `How long (default: the service's TTL). Accepts ${DURATION_FORM}.`,
  },
  "--user": { kind: "value", doc: "The user the lease is for." },
  "--service": { kind: "value", doc: "The service label (default: admin)." },
} as const;

export const grantCommand: Command = {
  name: "grant",
  usage: "grant <ip> [--ttl D] [--user U] [--service S] [settings]",
  summary:
    "Grants an address a relay lease by hand, as a login would (never shortening one, never for a never-lease address).",
  schema: grantSettings,
  options,
  run: async (args) => {
    const { config, positional, options: opts } = loadFromArgs(grantSettings, args, options);
    if (positional.length !== 1) throw new ConfigError("grant takes one address");
    const address = parseAddress(positional[0] ?? "");
    const policy = policyOf(config);
    const service = checked(opts.get("--service") ?? "admin", LABEL, "--service");
    const user = opts.has("--user")
      ? checked(opts.get("--user") ?? "", USER_NAME, "--user")
      : undefined;
    const ttlText = opts.get("--ttl");
    const ttl = ttlText === undefined ? ttlFor(policy, service) : parseTtl(ttlText);
    const never = neverLeaseReason(policy, address);
    if (never !== undefined) {
      process.stderr.write(`refused: ${address.text} is ${never}; it can never hold a lease\n`);
      process.exitCode = 1;
      return;
    }
    const key = leaseKey(address, policy.ipv6Prefix);
    const now = Date.now();
    const grant = await withNats(config, "admin-grant", async (nc) => {
      const capability = await checkCapability(
        nc,
        config.degradedTtl,
        createLogger(config.logLevel),
      );
      const js = jetstream(nc);
      const kv = await new Kvm(js).open(config.bucket);
      const writer = new LeaseWriter(js, kv, config.bucket, capability.perMessageTtl);
      return writer.write(
        key,
        {
          ip: address.text,
          user,
          service,
          source: "admin",
          watcher: "admin",
          loginAt: now,
          expiresAt: now + ttl,
          event: newEventId(),
        },
        now,
      );
    });
    if (grant.action === "refuse") {
      process.stderr.write(`refused: ${address.text}: ${grant.outcome}\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(
      `${address.text} (key ${key}): ${grant.outcome}, lease of ${formatDuration(ttl)}\n`,
    );
  },
};

function checked(value: string, pattern: RegExp, option: string): string {
  if (!pattern.test(value))
    throw new ConfigError(`${option}: ${JSON.stringify(value)} is not valid`);
  return value;
}

function parseTtl(text: string): number {
  try {
    const ms = parseDuration(text);
    if (ms >= 1000) return ms;
  } catch {
    // fall through to the error below
  }
  throw new ConfigError(
    `--ttl: ${JSON.stringify(text)} is not valid; expected ${DURATION_FORM}, at least 1s`,
  );
}
