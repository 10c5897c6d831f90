// relaylease check <ip>: what relaylease would answer for a client address, read straight from the
// bucket. Exit status 0 when the address holds a live lease, 1 when it does not.
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { ConfigError } from "../../shared/config.ts";
import { decodeLease, type Lease } from "../../shared/lease.ts";
import { connectOptions } from "../../shared/nats.ts";
import { DEFAULT_DECISION_CONFIG, decide } from "../milter/decide.ts";
import { policyAction } from "../milter/milter.ts";
import { adminSettings } from "./admin-settings.ts";

export const checkCommand: Command = {
  name: "check",
  usage: "check <ip> [settings]",
  summary:
    "Shows whether an address holds a relay lease and what the Postfix policy service answers for it. Exit status 0 if leased, 1 if not.",
  schema: adminSettings,
  run: async (args) => {
    const { config, positional } = loadFromArgs(adminSettings, args);
    const ip = positional[0];
    if (ip === undefined || positional.length > 1) throw new ConfigError("check takes one address");
    const key = leaseKey(parseAddress(ip));
    const nc = await connect(connectOptions(config, "check", false));
    try {
      const kv = await new Kvm(jetstream(nc)).open(config.bucket);
      const entry = await kv.get(key);
      const lease = entry?.operation === "PUT" ? decodeLease(entry.value) : undefined;
      const lookup = {
        lookup: (k: string, now: number) =>
          k === key && lease !== undefined && lease.expiresAt > now ? lease : undefined,
      };
      const request = { clientAddress: ip, stage: "connect" } as const;
      const d = decide(lookup, request, Date.now(), DEFAULT_DECISION_CONFIG);
      process.stdout.write(
        describe(ip, key, d.reason === "leased" ? d.lease : undefined) +
          `policy: ${policyAction(d)}\n`,
      );
      process.exitCode = d.verdict === "accept" ? 0 : 1;
    } finally {
      await nc.close();
    }
  },
};

function describe(ip: string, key: string, lease: Lease | undefined): string {
  if (lease === undefined) return `${ip} (key ${key}): no lease\n`;
  const who = lease.user === undefined ? "" : ` user ${lease.user},`;
  return (
    `${ip} (key ${key}): leased until ${new Date(lease.expiresAt).toISOString()}` +
    ` (${Math.round((lease.expiresAt - Date.now()) / 1000)}s left;${who} ${lease.service} via ${lease.source} on ${lease.watcher})\n`
  );
}
