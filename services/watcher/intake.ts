// Where every login source hands its logins: each becomes a login event (its id, login time and a
// span fixed now), is appended to the durable outbox, and is published from there in order
// (services/watcher/outbox.ts). accept() resolves once the event is on disk, which is when a
// source may tell its client "done"; submit() is for sources that must answer before that
// (DRAC, Dovecot's auth policy): it never throws, and a refused event is logged and counted.
import { SpanKind, context, metrics, trace } from "@opentelemetry/api";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { LoginEvent } from "../../shared/login-event.ts";
import { traceparentOf } from "../../shared/telemetry.ts";
import type { Outbox } from "./outbox.ts";
import { newLoginEvent, type LoginReport } from "./publisher.ts";

export class LoginIntake {
  readonly #outbox: Outbox;
  readonly #watcherId: string;
  readonly #log: Logger;
  readonly #tracer = trace.getTracer("relaylease-watcher");
  readonly #received = metrics
    .getMeter("relaylease-watcher")
    .createCounter("relaylease_watcher_logins", {
      description: "Logins reported by the sources, by source and outcome (stored, refused).",
    });

  constructor(outbox: Outbox, watcherId: string, log: Logger) {
    this.#outbox = outbox;
    this.#watcherId = watcherId;
    this.#log = log.child({ module: "intake" });
  }

  /** Stores the login durably; rejects (OutboxFullError, OutboxWriteError) if it cannot. */
  async accept(report: LoginReport): Promise<LoginEvent> {
    const span = this.#tracer.startSpan(`create relaylease.login.${this.#watcherId}`, {
      kind: SpanKind.PRODUCER,
      attributes: {
        "messaging.system": "nats",
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
        "relaylease.source": report.source,
        "client.address": report.ip,
      },
    });
    const event = newLoginEvent(
      report,
      this.#watcherId,
      undefined,
      traceparentOf(trace.setSpan(context.active(), span)),
    );
    span.setAttribute("messaging.message.id", event.id);
    try {
      await this.#outbox.append(event);
      this.#received.add(1, { source: report.source, outcome: "stored" });
      return event;
    } catch (err) {
      this.#received.add(1, { source: report.source, outcome: "refused" });
      this.#log.warn(
        { source: report.source, ip: report.ip, err: errorMessage(err) },
        "login not stored",
      );
      throw err;
    } finally {
      span.end();
    }
  }

  /** accept() for sources that cannot wait or refuse: failures are logged and counted. */
  submit(report: LoginReport): void {
    this.accept(report).catch(() => undefined);
  }
}
