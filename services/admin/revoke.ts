// relaylease revoke <ip> | --user <u>: removes leases at once and leaves a tombstone for one
// maximum TTL, so an event for a login before the revocation (late, redelivered or replayed)
// cannot bring the lease back; a login after it grants again as usual.
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { encodeRevocation } from "../../shared/bucket-value.ts";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { ConfigError } from "../../shared/config.ts";
import { kvSubject, userKey } from "../../shared/contract.ts";
import { createLogger } from "../../shared/log.ts";
import { checkCapability } from "../../shared/nats.ts";
import { USER_NAME } from "../../shared/schema.ts";
import { natsTtl } from "../authorizer/lease-writer.ts";
import { maxTtl } from "../authorizer/policy.ts";
import { authorizerSettings } from "../authorizer/settings.ts";
import { adminSettings } from "./admin-settings.ts";
import { readAddressEntries } from "./bucket.ts";
import { withNats } from "./connection.ts";

const revokeSettings = { ...adminSettings, ipv6Prefix: authorizerSettings.ipv6Prefix };

const options = {
  "--user": {
    kind: "value",
    doc: "Revoke every lease of this user, and refuse their older logins.",
  },
  "--by": { kind: "value", doc: "Who revokes, recorded in the tombstone (default: cli)." },
} as const;

export const revokeCommand: Command = {
  name: "revoke",
  usage: "revoke <ip> | --user <u> [settings]",
  summary:
    "Revokes the lease of an address, or every lease of a user, leaving a tombstone so that an older login cannot grant it again.",
  schema: revokeSettings,
  options,
  run: async (args) => {
    const { config, positional, options: opts } = loadFromArgs(revokeSettings, args, options);
    const user = opts.get("--user");
    if ((user === undefined) === (positional.length === 0) || positional.length > 1) {
      throw new ConfigError("revoke takes one address or --user <name>");
    }
    if (user !== undefined && !USER_NAME.test(user))
      throw new ConfigError("--user: not a valid user name");
    const by = opts.get("--by") ?? "cli";
    const revokedAt = Date.now();
    const tombstoneTtl = maxTtl(config.leaseTtl, config.serviceTtls);
    const lines = await withNats(config, "admin-revoke", async (nc) => {
      const capability = await checkCapability(
        nc,
        config.degradedTtl,
        createLogger(config.logLevel),
      );
      const js = jetstream(nc);
      const ttl = capability.perMessageTtl ? { ttl: natsTtl(tombstoneTtl) } : {};
      const tombstone = (key: string, forUser?: string) =>
        js.publish(
          kvSubject(config.bucket, key),
          encodeRevocation({ revokedAt, by, user: forUser }),
          ttl,
        );
      if (user === undefined) {
        const address = parseAddress(positional[0] ?? "");
        const key = leaseKey(address, config.ipv6Prefix);
        await tombstone(key);
        return [`revoked ${address.text} (key ${key})`];
      }
      const kv = await new Kvm(js).open(config.bucket);
      const theirs = (await readAddressEntries(kv)).filter(
        (e) => e.value.kind === "lease" && e.value.lease.user === user,
      );
      await tombstone(userKey(user), user);
      for (const e of theirs) await tombstone(e.key, user);
      return [
        `revoked user ${user}: ${theirs.length} lease(s)`,
        ...theirs.map(
          (e) => `  ${e.value.kind === "lease" ? e.value.lease.ip : ""} (key ${e.key})`,
        ),
      ];
    });
    process.stdout.write(lines.join("\n") + "\n");
  },
};
