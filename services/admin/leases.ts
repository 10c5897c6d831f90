// relaylease leases: the live leases in the bucket, as a table or JSON, filtered by user,
// address or source.
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { parseAddress } from "../../shared/address.ts";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import type { Lease } from "../../shared/lease.ts";
import { adminSettings } from "./admin-settings.ts";
import { readAddressEntries } from "./bucket.ts";
import { withNats } from "./connection.ts";

const options = {
  "--json": { kind: "switch", doc: "Print a JSON array instead of a table." },
  "--user": { kind: "value", doc: "Only leases of this user." },
  "--ip": { kind: "value", doc: "Only the lease of this address." },
  "--source": { kind: "value", doc: "Only leases granted through this source (http, drac, ...)." },
} as const;

export const leasesCommand: Command = {
  name: "leases",
  usage: "leases [--json] [--user U] [--ip A] [--source S] [settings]",
  summary: "Lists the live relay leases.",
  schema: adminSettings,
  options,
  run: async (args) => {
    const { config, options: opts } = loadFromArgs(adminSettings, args, options);
    const user = opts.get("--user");
    const ipText = opts.get("--ip");
    const ip = ipText === undefined ? undefined : parseAddress(ipText).text;
    const source = opts.get("--source");
    const now = Date.now();
    const leases = await withNats(config, "admin-leases", async (nc) => {
      const kv = await new Kvm(jetstream(nc)).open(config.bucket);
      return (await readAddressEntries(kv)).flatMap((e) =>
        e.value.kind === "lease" && e.value.lease.expiresAt > now
          ? [{ key: e.key, lease: e.value.lease }]
          : [],
      );
    });
    const shown = leases
      .filter(({ lease }) => matches(lease, user, ip, source))
      .sort((a, b) => a.lease.expiresAt - b.lease.expiresAt);
    if (opts.get("--json") === "true") {
      process.stdout.write(
        JSON.stringify(
          shown.map(({ key, lease }) => jsonOf(key, lease)),
          null,
          2,
        ) + "\n",
      );
    } else {
      process.stdout.write(
        table(
          shown.map(({ lease }) => lease),
          now,
        ),
      );
    }
  },
};

function matches(l: Lease, user?: string, ip?: string, source?: string): boolean {
  return (
    (user === undefined || l.user === user) &&
    (ip === undefined || l.ip === ip) &&
    (source === undefined || l.source === source)
  );
}

function jsonOf(key: string, l: Lease): object {
  return {
    key,
    ip: l.ip,
    user: l.user ?? null,
    service: l.service,
    source: l.source,
    watcher: l.watcher,
    loginAt: new Date(l.loginAt).toISOString(),
    expiresAt: new Date(l.expiresAt).toISOString(),
    event: l.event,
  };
}

function table(leases: readonly Lease[], now: number): string {
  if (leases.length === 0) return "no leases\n";
  const rows = [
    ["ADDRESS", "USER", "SERVICE", "SOURCE", "WATCHER", "EXPIRES", "LEFT"],
    ...leases.map((l) => [
      l.ip,
      l.user ?? "-",
      l.service,
      l.source,
      l.watcher,
      new Date(l.expiresAt).toISOString().replace(/\.\d+Z$/, "Z"),
      `${Math.round((l.expiresAt - now) / 1000)}s`,
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}
