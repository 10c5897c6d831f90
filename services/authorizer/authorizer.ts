// The authorizer role: consumes login events from the shared durable consumer and turns each into
// a lease with its own TTL. Replicas share the consumer, so any of them may see any event, and a
// redelivered or reordered event is harmless: the lease writer never shortens a lease.
//   malformed event   -> term (never redelivered), logged and counted
//   expired on arrival (loginAt + TTL has passed) -> ack, nothing written
//   write failed      -> nak with back-off: transient (leader election, timeout) or not, the
//                        event is retried until it expires
// Each event is processed in a CONSUMER span whose parent is the watcher's span, carried in the
// message headers, so one trace shows the login and the lease it granted.
import { jetstream, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { SpanKind, SpanStatusCode, metrics, trace, type Span } from "@opentelemetry/api";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import type { ConfigOf } from "../../shared/config.ts";
import { AUTHORIZER_DURABLE, watcherOfSubject } from "../../shared/contract.ts";
import { errorMessage } from "../../shared/errors.ts";
import { leaseFromEvent } from "../../shared/lease.ts";
import type { Logger } from "../../shared/log.ts";
import { decodeLoginEvent, type LoginEvent } from "../../shared/login-event.ts";
import { connectForRole } from "../../shared/nats.ts";
import type { RoleContext } from "../../shared/process.ts";
import { SchemaError } from "../../shared/schema.ts";
import { extractTraceContext, traceparentOf } from "../../shared/telemetry.ts";
import { verifyProvisioned } from "../../shared/provision.ts";
import { LeaseWriter, type WriteOutcome } from "./lease-writer.ts";
import type { authorizerSettings } from "./settings.ts";

export type AuthorizerConfig = ConfigOf<typeof authorizerSettings>;

/** Redelivery delays after a failed write, by delivery count; the last repeats. */
const NAK_BACKOFF_MS = [250, 1000, 5000, 15_000];

export async function startAuthorizer(config: AuthorizerConfig, ctx: RoleContext): Promise<void> {
  const log = ctx.log.child({ module: "authorizer" });
  const { nc, capability } = await connectForRole(config, "authorizer", ctx);
  const js = jetstream(nc);
  await verifyProvisioned(js, config, { consumer: true, bucket: true });
  const kv = await new Kvm(js).open(config.bucket);
  const writer = new LeaseWriter(js, kv, config.bucket, capability.perMessageTtl);
  const consumer = await js.consumers.get(config.stream, AUTHORIZER_DURABLE);
  const messages = await consumer.consume({ max_messages: 256 });
  const handler = new EventHandler(writer, config.leaseTtl, log);
  const loop = (async () => {
    for await (const m of messages) await handler.handle(m);
  })();
  ctx.add({
    name: "login-consumer",
    stop: async () => {
      await stopConsuming(messages);
      await loop;
    },
  });
  log.info({ stream: config.stream, bucket: config.bucket }, "consuming login events");
}

async function stopConsuming(messages: ConsumerMessages): Promise<void> {
  // close() lets messages already pulled be handled; their acks still reach the server.
  await messages.close();
}

function instruments() {
  const meter = metrics.getMeter("relaylease-authorizer");
  return {
    events: meter.createCounter("relaylease_authorizer_events", {
      description:
        "Login events handled, by outcome (created, extended, kept, expired, malformed, failed).",
    }),
    lag: meter.createHistogram("relaylease_authorizer_event_age_seconds", {
      description: "Time from login to lease write.",
      unit: "s",
    }),
  };
}

class EventHandler {
  readonly #writer: LeaseWriter;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #tracer = trace.getTracer("relaylease-authorizer");
  readonly #metrics = instruments();

  constructor(writer: LeaseWriter, ttlMs: number, log: Logger) {
    this.#writer = writer;
    this.#ttlMs = ttlMs;
    this.#log = log;
  }

  async handle(m: JsMsg): Promise<void> {
    const span = this.#tracer.startSpan(
      `process ${m.subject}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": "nats",
          "messaging.operation.type": "process",
          "messaging.operation.name": "process",
          "messaging.destination.name": m.subject,
          "messaging.consumer.group.name": AUTHORIZER_DURABLE,
          "messaging.message.body.size": m.data.length,
        },
      },
      extractTraceContext(m.headers),
    );
    try {
      const outcome = await this.#process(m, span);
      span.setAttribute("relaylease.outcome", outcome);
      this.#metrics.events.add(1, { outcome });
    } finally {
      span.end();
    }
  }

  async #process(m: JsMsg, span: Span): Promise<WriteOutcome | "expired" | "malformed" | "failed"> {
    let event: LoginEvent;
    try {
      event = this.#eventOf(m);
    } catch (err) {
      const reason = errorMessage(err);
      this.#log.warn({ subject: m.subject, seq: m.seq, reason }, "malformed login event dropped");
      span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
      m.term(reason.slice(0, 200));
      return "malformed";
    }
    span.setAttribute("messaging.message.id", event.id);
    const now = Date.now();
    if (event.loginAt + this.#ttlMs <= now) {
      m.ack();
      return "expired";
    }
    const key = leaseKey(parseAddress(event.ip));
    const lease = leaseFromEvent(
      event,
      this.#ttlMs,
      traceparentOf(trace.setSpan(extractTraceContext(m.headers), span)),
    );
    try {
      const outcome = await this.#writer.write(key, lease, now);
      m.ack();
      this.#metrics.lag.record((Date.now() - event.loginAt) / 1000);
      this.#log.debug({ key, event: event.id, outcome }, "lease written");
      return outcome;
    } catch (err) {
      const delay =
        NAK_BACKOFF_MS[Math.min(m.info.deliveryCount, NAK_BACKOFF_MS.length) - 1] ?? 1000;
      this.#log.warn(
        { key, event: event.id, err: errorMessage(err), retryInMs: delay },
        "lease write failed",
      );
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      m.nak(delay);
      return "failed";
    }
  }

  /** Decodes the body; the watcher is the subject's token, whatever the body says. */
  #eventOf(m: JsMsg): LoginEvent {
    const watcher = watcherOfSubject(m.subject);
    if (watcher === undefined) throw new SchemaError(`subject ${m.subject} names no watcher`);
    const event = decodeLoginEvent(m.data);
    if (event.watcher !== watcher) {
      this.#log.warn(
        { subject: m.subject, claimed: event.watcher },
        "event claims another watcher; using the subject's",
      );
      return { ...event, watcher };
    }
    return event;
  }
}
