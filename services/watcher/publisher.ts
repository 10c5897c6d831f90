// Publishes login events to the login stream, one PRODUCER span per event whose context rides in
// the message headers. `Nats-Msg-Id` is the event id, so a retried publish is stored once.
import { headers } from "@nats-io/transport-node";
import type { JetStreamClient } from "@nats-io/jetstream";
import { SpanKind, SpanStatusCode, context, metrics, trace } from "@opentelemetry/api";
import { loginSubject } from "../../shared/contract.ts";
import { encodeLoginEvent, newEventId, type LoginEvent } from "../../shared/login-event.ts";
import { contextFromTraceparent, injectTraceContext } from "../../shared/telemetry.ts";
import { errorMessage } from "../../shared/errors.ts";

export interface LoginReport {
  /** Canonical address text. */
  readonly ip: string;
  readonly user?: string | undefined;
  readonly service: string;
  readonly source: string;
  readonly loginAt?: number;
}

function instruments() {
  const meter = metrics.getMeter("relaylease-watcher");
  return {
    published: meter.createCounter("relaylease_watcher_events_published", {
      description: "Login events acknowledged by the login stream, by source.",
    }),
    duplicates: meter.createCounter("relaylease_watcher_events_duplicate", {
      description: "Publishes the stream recognised as a retry of an event it already had.",
    }),
    failures: meter.createCounter("relaylease_watcher_publish_failures", {
      description: "Publishes that failed (NATS unreachable, timeout, permission), by source.",
    }),
  };
}

export function newLoginEvent(
  report: LoginReport,
  watcher: string,
  id: string = newEventId(),
  trace?: string,
): LoginEvent {
  return {
    id,
    ip: report.ip,
    user: report.user,
    service: report.service,
    source: report.source,
    watcher,
    loginAt: report.loginAt ?? Date.now(),
    trace,
  };
}

export class LoginPublisher {
  readonly #js: JetStreamClient;
  readonly #watcherId: string;
  readonly #subject: string;
  // Created after telemetry is installed: a meter taken earlier would stay a no-op.
  readonly #tracer = trace.getTracer("relaylease-watcher");
  readonly #metrics = instruments();

  constructor(js: JetStreamClient, watcherId: string) {
    this.#js = js;
    this.#watcherId = watcherId;
    this.#subject = loginSubject(watcherId);
  }

  get watcherId(): string {
    return this.#watcherId;
  }

  /** Publishes a login and resolves with the event once the stream has stored it. */
  async publish(report: LoginReport, id: string = newEventId()): Promise<LoginEvent> {
    const event = newLoginEvent(report, this.#watcherId, id);
    await this.publishEvent(event);
    return event;
  }

  /**
   * Publishes an event made earlier (kept in the outbox meanwhile); its `trace`, if any, is the
   * parent of the send span, so the trace starts where the login was reported.
   */
  async publishEvent(event: LoginEvent): Promise<void> {
    const parent = contextFromTraceparent(event.trace) ?? context.active();
    const span = this.#tracer.startSpan(
      `send ${this.#subject}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          "messaging.system": "nats",
          "messaging.operation.type": "send",
          "messaging.operation.name": "send",
          "messaging.destination.name": this.#subject,
          "messaging.destination.template": "relaylease.login.{watcher}",
          "messaging.message.id": event.id,
          "relaylease.source": event.source,
        },
      },
      parent,
    );
    const h = headers();
    injectTraceContext(trace.setSpan(parent, span), h);
    try {
      const ack = await this.#js.publish(this.#subject, encodeLoginEvent(event), {
        msgID: event.id,
        headers: h,
      });
      this.#metrics.published.add(1, { source: event.source });
      if (ack.duplicate) this.#metrics.duplicates.add(1, { source: event.source });
    } catch (err) {
      this.#metrics.failures.add(1, { source: event.source });
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      throw err;
    } finally {
      span.end();
    }
  }
}
