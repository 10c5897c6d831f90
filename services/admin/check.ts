// relaylease check <ip> [--rcpt ADDRESS]: what each front door would answer for a client, and
// why, from the lease read straight out of the bucket and the milter role's decision settings
// (trusted networks, local domains, remote mailers). Exit status 0 when the client may relay
// (leased or trusted), 1 when it may not.
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { ConfigError } from "../../shared/config.ts";
import type { Lease } from "../../shared/lease.ts";
import { valueOf } from "../authorizer/lease-writer.ts";
import { authorizerSettings } from "../authorizer/settings.ts";
import { decide, type Decision } from "../milter/decide.ts";
import { leaseAnswer, policyAction } from "../milter/milter.ts";
import { decisionConfigOf, milterSettings } from "../milter/settings.ts";
import { adminSettings } from "./admin-settings.ts";
import { withNats } from "./connection.ts";

const checkSettings = {
  ...milterSettings,
  ...adminSettings,
  ipv6Prefix: authorizerSettings.ipv6Prefix,
};

const options = {
  "--rcpt": {
    kind: "value",
    doc: "The recipient to judge at RCPT (default: postmaster@remote.example, a remote one).",
  },
} as const;

export const checkCommand: Command = {
  name: "check",
  usage: "check <ip> [--rcpt ADDRESS] [settings]",
  summary:
    "Shows an address's lease and what each front door (policy, milter, socketmap, whoson) would answer for it, and why. Exit status 0 if it may relay, 1 if not.",
  schema: checkSettings,
  options,
  run: async (args) => {
    const { config, positional, options: opts } = loadFromArgs(checkSettings, args, options);
    if (positional.length !== 1) throw new ConfigError("check takes one address");
    const ip = parseAddress(positional[0] ?? "").text;
    const rcpt = opts.get("--rcpt") ?? "postmaster@remote.example";
    const keys = [leaseKey(parseAddress(ip)), leaseKey(parseAddress(ip), 64)];
    const leases = await withNats(config, "admin-check", async (nc) => {
      const kv = await new Kvm(jetstream(nc)).open(config.bucket);
      const found = new Map<string, Lease>();
      for (const key of new Set(keys)) {
        const v = valueOf(await kv.get(key));
        if (v?.kind === "lease") found.set(key, v.lease);
      }
      return found;
    });
    const now = Date.now();
    const lookup = {
      lookup: (k: string, at: number) => {
        const l = leases.get(k);
        return l !== undefined && l.expiresAt > at ? l : undefined;
      },
    };
    const decisionConfig = decisionConfigOf(config, false);
    const atConnect = decide(lookup, { clientAddress: ip, stage: "connect" }, now, decisionConfig);
    const atRcpt = decide(
      lookup,
      { clientAddress: ip, stage: "rcpt", recipient: rcpt },
      now,
      decisionConfig,
    );
    const lease =
      atRcpt.reason === "leased"
        ? (leases.get(keys[0] ?? "") ?? leases.get(keys[1] ?? ""))
        : undefined;
    process.stdout.write(
      [
        describe(ip, keys[0] ?? "", lease, now),
        row("policy", policyAction(atRcpt), atRcpt, `RCPT ${rcpt}`),
        row("milter", milterReply(atConnect, config.rejectText), atConnect, "connect"),
        row("milter", milterReply(atRcpt, config.rejectText), atRcpt, `RCPT ${rcpt}`),
        row("socketmap", socketmapReply(atConnect), atConnect, "lookup"),
        row("whoson", whosonReply(atConnect), atConnect, "QUERY"),
      ].join(""),
    );
    process.exitCode = atRcpt.verdict === "accept" ? 0 : 1;
  },
};

function describe(ip: string, key: string, lease: Lease | undefined, now: number): string {
  if (lease === undefined) return `${ip} (key ${key}): no lease\n`;
  const who = lease.user === undefined ? "" : ` user ${lease.user},`;
  return (
    `${ip} (key ${key}): leased until ${new Date(lease.expiresAt).toISOString()}` +
    ` (${Math.round((lease.expiresAt - now) / 1000)}s left;${who} ${lease.service} via ${lease.source} on ${lease.watcher})\n`
  );
}

function row(door: string, answer: string, d: Decision, asked: string): string {
  return `${door.padEnd(10)} ${asked.padEnd(36)} ${answer.padEnd(28)} ${d.verdict} ${d.reason}\n`;
}

function milterReply(d: Decision, rejectText: string): string {
  switch (d.verdict) {
    case "accept":
      return "ACCEPT";
    case "continue":
      return "CONTINUE";
    case "reject":
      return `550 5.7.1 ${rejectText}`.slice(0, 28);
    case "tempfail":
      return "451 4.7.1";
  }
}

function socketmapReply(d: Decision): string {
  const a = leaseAnswer(d);
  if (a.kind === "leased") return `OK ${Math.floor(a.expiresAt / 1000)}`;
  return a.kind === "stale" ? "TEMP" : "NOTFOUND";
}

function whosonReply(d: Decision): string {
  const a = leaseAnswer(d);
  if (a.kind === "leased") return `+${a.user ?? ""}`;
  return a.kind === "stale" ? "*" : "-Not Logged in";
}
