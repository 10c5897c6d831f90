// relaylease doctor: checks everything relaylease depends on, from where it runs, with the
// identity it is given: connectivity, the server's version and JetStream API level, the shape of
// the stream, consumer and bucket against the configuration, what the credentials may do, the
// authorizers' heartbeat, and this host's clock against the server's.
// Exit status 0 when nothing failed (warnings allowed), 1 otherwise.
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { nanos, nuid, type NatsConnection } from "@nats-io/transport-node";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { formatDuration } from "../../shared/config.ts";
import {
  AUTHORIZER_DURABLE,
  HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_KEY,
  LOGIN_SUBJECTS,
  kvSubject,
} from "../../shared/contract.ts";
import { errorMessage } from "../../shared/errors.ts";
import { kvStreamName } from "../../shared/provision.ts";
import { maxTtl } from "../authorizer/policy.ts";
import { adminSettings } from "./admin-settings.ts";
import { withNats } from "./connection.ts";

type Status = "ok" | "warn" | "FAIL";
interface Finding {
  readonly check: string;
  readonly status: Status;
  readonly detail: string;
}
type Config = ReturnType<typeof loadFromArgs<typeof adminSettings>>["config"];

/** Clocks further apart than this skew lease lifetimes noticeably (TTLs count from loginAt). */
const MAX_SKEW_MS = 2000;

const options = { "--json": { kind: "switch", doc: "Print the findings as JSON." } } as const;

export const doctorCommand: Command = {
  name: "doctor",
  usage: "doctor [--json] [settings]",
  summary:
    "Checks connectivity, server version and API level, the stream, consumer and bucket against the settings, permissions, the authorizers' heartbeat and clock skew. Exit status 1 if a check failed.",
  schema: adminSettings,
  options,
  run: async (args) => {
    const { config, options: opts } = loadFromArgs(adminSettings, args, options);
    const findings: Finding[] = [];
    const add = (check: string, status: Status, detail: string) => {
      findings.push({ check, status, detail });
    };
    try {
      await withNats(config, "admin-doctor", (nc) => examine(nc, config, add));
    } catch (err) {
      add("connection", "FAIL", `${config.natsUrl.join(",")}: ${errorMessage(err)}`);
    }
    if (opts.get("--json") === "true") {
      process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
    } else {
      const width = Math.max(...findings.map((f) => f.check.length));
      for (const f of findings) {
        process.stdout.write(`${f.status.padEnd(4)}  ${f.check.padEnd(width)}  ${f.detail}\n`);
      }
    }
    process.exitCode = findings.some((f) => f.status === "FAIL") ? 1 : 0;
  },
};

type Add = (check: string, status: Status, detail: string) => void;

async function examine(nc: NatsConnection, config: Config, add: Add): Promise<void> {
  const rtt = await nc.rtt();
  add("connection", "ok", `${nc.getServer()} (round trip ${rtt.toFixed(2)} ms)`);
  const jsm = await jetstreamManager(nc);
  const level = (await jsm.getAccountInfo()).api.level ?? 0;
  const version = nc.info?.version ?? "unknown";
  if (level >= 1) add("server", "ok", `nats-server ${version}, JetStream API level ${level}`);
  else
    add(
      "server",
      config.degradedTtl ? "warn" : "FAIL",
      `nats-server ${version} has no per-message TTL (needs >= 2.11.2)${config.degradedTtl ? "; degraded mode allowed" : ""}`,
    );
  await checkStream(jsm, config, add);
  await checkConsumer(jsm, config, add);
  await checkBucket(jsm, config, level >= 1, add);
  await checkHeartbeat(nc, config, add);
  await checkWriteAndClock(nc, config, add);
}

async function checkStream(jsm: JetStreamManager, config: Config, add: Add): Promise<void> {
  try {
    const c = (await jsm.streams.info(config.stream)).config;
    const problems: string[] = [];
    if (!c.subjects.includes(LOGIN_SUBJECTS)) problems.push(`subjects ${c.subjects.join(",")}`);
    if (c.storage !== "file") problems.push(`${c.storage} storage`);
    add(
      "stream",
      problems.length === 0 ? "ok" : "FAIL",
      `${config.stream}: ${problems.length === 0 ? `${c.num_replicas} replica(s)` : problems.join("; ")}`,
    );
  } catch (err) {
    add("stream", "FAIL", `${config.stream}: ${errorMessage(err)} (run relaylease setup)`);
  }
}

async function checkConsumer(jsm: JetStreamManager, config: Config, add: Add): Promise<void> {
  try {
    const info = await jsm.consumers.info(config.stream, AUTHORIZER_DURABLE);
    const ok = info.config.ack_policy === "explicit";
    add(
      "consumer",
      ok ? "ok" : "FAIL",
      `${config.stream}/${AUTHORIZER_DURABLE}: ${info.num_pending} pending, ${info.num_ack_pending} unacknowledged${ok ? "" : `; ack policy ${info.config.ack_policy}`}`,
    );
  } catch (err) {
    add("consumer", "FAIL", `${config.stream}/${AUTHORIZER_DURABLE}: ${errorMessage(err)}`);
  }
}

async function checkBucket(
  jsm: JetStreamManager,
  config: Config,
  perMessageTtl: boolean,
  add: Add,
): Promise<void> {
  try {
    const info = await jsm.streams.info(kvStreamName(config.bucket));
    const c = info.config;
    const problems: string[] = [];
    if (c.max_msgs_per_subject !== 1) problems.push(`history ${c.max_msgs_per_subject} (want 1)`);
    const longest = maxTtl(config.leaseTtl, config.serviceTtls);
    if (c.max_age !== 0 && c.max_age < nanos(longest)) {
      problems.push(
        `max_age ${formatDuration(c.max_age / 1e6)} is shorter than the longest lease ${formatDuration(longest)}`,
      );
    }
    if (perMessageTtl && c.allow_msg_ttl !== true) problems.push("per-message TTL off");
    if (perMessageTtl && !(c.subject_delete_marker_ttl ?? 0)) problems.push("no expiry markers");
    add(
      "bucket",
      problems.length === 0 ? "ok" : "FAIL",
      `${config.bucket}: ${problems.length === 0 ? `${info.state.messages} entries, ${c.num_replicas} replica(s)` : problems.join("; ")}`,
    );
  } catch (err) {
    add("bucket", "FAIL", `${config.bucket}: ${errorMessage(err)} (run relaylease setup)`);
  }
}

async function checkHeartbeat(nc: NatsConnection, config: Config, add: Add): Promise<void> {
  try {
    const kv = await new Kvm(jetstream(nc)).open(config.bucket);
    const e = await kv.get(HEARTBEAT_KEY);
    if (e?.operation !== "PUT") {
      add("authorizers", "warn", "no heartbeat in the bucket: no authorizer has run");
      return;
    }
    const age = Date.now() - e.created.getTime();
    const alive = age < 3 * HEARTBEAT_INTERVAL_MS + MAX_SKEW_MS;
    add(
      "authorizers",
      alive ? "ok" : "warn",
      `last heartbeat ${(age / 1000).toFixed(1)}s ago from ${(JSON.parse(e.string()) as { authorizer?: string }).authorizer ?? "?"}`,
    );
  } catch (err) {
    add("authorizers", "warn", `cannot read the heartbeat: ${errorMessage(err)}`);
  }
}

/** Writes a probe key that expires in a second; its server timestamp gives the clock skew. */
async function checkWriteAndClock(nc: NatsConnection, config: Config, add: Add): Promise<void> {
  const js = jetstream(nc);
  const key = `doctor.${nuid.next()}`;
  try {
    const before = Date.now();
    const ack = await js.publish(kvSubject(config.bucket, key), "probe", { ttl: "1s" });
    const after = Date.now();
    add("permissions", "ok", "this identity may write the bucket (authorizer or admin)");
    const msg = await (
      await jetstreamManager(nc)
    ).streams.getMessage(kvStreamName(config.bucket), {
      seq: ack.seq,
    });
    if (msg === null) return;
    const skew = Date.parse(msg.timestamp) - (before + after) / 2;
    add(
      "clock",
      Math.abs(skew) <= MAX_SKEW_MS ? "ok" : "FAIL",
      `this host is ${Math.abs(skew)} ms ${skew > 0 ? "behind" : "ahead of"} the server (limit ${MAX_SKEW_MS} ms)`,
    );
  } catch (err) {
    add(
      "permissions",
      "warn",
      `this identity may not write the bucket (${errorMessage(err)}): right for a watcher or milter`,
    );
  }
}
