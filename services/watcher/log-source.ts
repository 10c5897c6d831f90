// The log login source: a followed log file (RELAYLEASE_DOVECOT_LOG) and/or syslog datagrams
// (RELAYLEASE_SYSLOG_LISTEN), parsed into logins and logouts. Logins go to the intake; both feed
// the session tracker, which renews the lease of an address whose POP/IMAP session is still open
// before the lease runs out (an IMAP client stays connected for hours).
// The follower waits for each login to be stored before reading on, so the log file itself is
// the buffer when the outbox is full: nothing is skipped while the watcher runs. (Stopping while
// the outbox is full gives up on the line being retried.) A syslog datagram cannot be read again:
// if the outbox refuses it, it is logged and counted by the intake.
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../../shared/log.ts";
import type { RoleContext } from "../../shared/process.ts";
import type { LoginIntake } from "./intake.ts";
import { OutboxClosedError } from "./outbox.ts";
import { followLog } from "./log/follow.ts";
import { parseLogLine, type LogRecord } from "./log/parse.ts";
import { SessionTracker } from "./log/sessions.ts";
import { startSyslogServer } from "./log/syslog.ts";
import { observeSource } from "./source-metrics.ts";

export interface LogSourceConfig {
  readonly dovecotLog: string | undefined;
  readonly syslogListen: string | undefined;
  readonly outboxDir: string;
  readonly leaseTtl: number;
}

/** How often open sessions are checked for renewal; a small fraction of any sane TTL. */
const RENEW_CHECK_MS = 10_000;
/** After a refused store, the follower retries the same line after this long. */
const RETRY_STORE_MS = 1000;

export async function startLogSources(
  config: LogSourceConfig,
  intake: LoginIntake,
  ctx: RoleContext,
): Promise<void> {
  if (config.dovecotLog === undefined && config.syslogListen === undefined) return;
  const log = ctx.log.child({ module: "log-source" });
  const sessions = new SessionTracker({ leaseTtlMs: config.leaseTtl });
  let stopping = false;
  const store = async (record: LogRecord, retry: boolean): Promise<void> => {
    sessions.record(record, Date.now());
    if (record.kind !== "login") return;
    const report = {
      ip: record.ip,
      user: record.user,
      service: record.service,
      source: `${record.server}-log`,
      loginAt: record.at === undefined ? undefined : Math.min(record.at, Date.now()),
    };
    for (;;) {
      try {
        await intake.accept(report);
        return;
      } catch (err) {
        // A syslog datagram cannot be read again (the intake logged and counted it); a closed
        // outbox means shutdown: the position is not saved past this line, so it comes again.
        if (!retry || stopping || err instanceof OutboxClosedError) return;
        await sleep(RETRY_STORE_MS);
      }
    }
  };
  if (config.dovecotLog !== undefined) {
    const follower = await followLog({
      path: config.dovecotLog,
      statePath: join(config.outboxDir, "log-position.json"),
      onLine: (text, start, end) => {
        const record = parseLogLine(text, Date.now, start, end);
        return record === undefined ? undefined : store(record, true);
      },
      log,
    });
    ctx.add({ name: "log-follower", stop: () => follower.stop() });
    observeSource("log-file", () => follower.stats);
  }
  if (config.syslogListen !== undefined) {
    const syslog = await startSyslogServer({
      listen: config.syslogListen,
      onRecord: (record) => {
        void store(record, false);
      },
      log,
    });
    ctx.add({ name: "syslog", stop: () => syslog.close() });
    observeSource("syslog", () => syslog.stats);
  }
  // Registered last, so stopped first: a store waiting for room in the outbox gives up.
  ctx.add({
    name: "log-store-retries",
    stop: () => {
      stopping = true;
      return Promise.resolve();
    },
  });
  observeSource("sessions", () => sessions.stats);
  const renewals = setInterval(() => {
    renewDue(sessions, intake, log);
  }, RENEW_CHECK_MS);
  renewals.unref();
  ctx.add({
    name: "session-renewal",
    stop: () => {
      clearInterval(renewals);
      return Promise.resolve();
    },
  });
}

function renewDue(sessions: SessionTracker, intake: LoginIntake, log: Logger): void {
  for (const r of sessions.due(Date.now())) {
    log.debug({ ip: r.ip }, "renewing the lease of an open session");
    intake.submit({ ip: r.ip, user: r.user, service: r.service, source: "session-renewal" });
  }
}
