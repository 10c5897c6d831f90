// relaylease events [--since D] [--follow] [--json]: the login stream, readable. Reads through an
// ordered consumer of its own (the authorizers' durable consumer is never touched); without
// --follow it stops once it has caught up with the stream.
import { DeliverPolicy, jetstream, type JsMsg } from "@nats-io/jetstream";
import type { Command } from "../../shared/cli.ts";
import { loadFromArgs } from "../../shared/cli.ts";
import { ConfigError, DURATION_FORM, parseDuration } from "../../shared/config.ts";
import { LOGIN_SUBJECTS } from "../../shared/contract.ts";
import { errorMessage } from "../../shared/errors.ts";
import { decodeLoginEvent } from "../../shared/login-event.ts";
import { adminSettings } from "./admin-settings.ts";
import { withNats } from "./connection.ts";

const options = {
  "--since": { kind: "value", doc: `Start this long ago (default 1h). Accepts ${DURATION_FORM}.` },
  "--follow": { kind: "switch", doc: "Keep printing new events until interrupted." },
  "--json": { kind: "switch", doc: "One JSON object per line." },
} as const;

export const eventsCommand: Command = {
  name: "events",
  usage: "events [--since D] [--follow] [--json] [settings]",
  summary: "Prints the login events in the stream, oldest first.",
  schema: adminSettings,
  options,
  run: async (args) => {
    const { config, options: opts } = loadFromArgs(adminSettings, args, options);
    let sinceMs: number;
    try {
      sinceMs = parseDuration(opts.get("--since") ?? "1h");
    } catch {
      throw new ConfigError(`--since: expected ${DURATION_FORM}`);
    }
    const follow = opts.get("--follow") === "true";
    const json = opts.get("--json") === "true";
    await withNats(config, "admin-events", async (nc) => {
      const js = jetstream(nc);
      const consumer = await js.consumers.get(config.stream, {
        filter_subjects: [LOGIN_SUBJECTS],
        deliver_policy: DeliverPolicy.StartTime,
        opt_start_time: new Date(Date.now() - sinceMs).toISOString(),
      });
      if (!follow && (await consumer.info()).num_pending === 0) return;
      const messages = await consumer.consume();
      const stop = () => {
        void messages.close();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      for await (const m of messages) {
        process.stdout.write(format(m, json) + "\n");
        if (!follow && m.info.pending === 0) break;
      }
    });
  },
};

function format(m: JsMsg, json: boolean): string {
  const at = new Date(m.info.timestampNanos / 1e6).toISOString();
  try {
    const e = decodeLoginEvent(m.data);
    if (json) {
      return JSON.stringify({
        seq: m.seq,
        publishedAt: at,
        subject: m.subject,
        id: e.id,
        ip: e.ip,
        user: e.user ?? null,
        service: e.service,
        source: e.source,
        watcher: e.watcher,
        loginAt: new Date(e.loginAt).toISOString(),
      });
    }
    const login = new Date(e.loginAt).toISOString().replace(/\.\d+Z$/, "Z");
    return [login, e.watcher, e.ip, e.user ?? "-", e.service, e.source, e.id].join("  ");
  } catch (err) {
    const why = errorMessage(err);
    return json
      ? JSON.stringify({ seq: m.seq, publishedAt: at, subject: m.subject, malformed: why })
      : `${at}  ${m.subject}  malformed: ${why}`;
  }
}
