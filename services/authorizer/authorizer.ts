// The authorizer role: consumes login events from the shared durable consumer and turns each into
// a lease with its own TTL. Replicas share the consumer, so any of them may see any event, and a
// redelivered or reordered event is harmless: the lease writer never shortens a lease.
//   malformed event            -> term (never redelivered), logged and counted
//   never-lease address        -> ack, nothing written; logged and counted with the reason
//   expired on arrival         -> ack, nothing written (loginAt + TTL has passed)
//   revoked / shared address   -> ack, nothing written; logged and counted
//   write failed               -> nak with back-off (leader election, timeout, ...): retried
//                                 until it succeeds or the event has expired
// Up to MAX_IN_FLIGHT events are handled at once; events for one key wait for each other, which
// spares the compare-and-set retries (correctness does not depend on it).
// Each event is processed in a CONSUMER span whose parent is the watcher's span, carried in the
// message headers, so one trace shows the login and the lease it granted.
import { hostname } from "node:os";
import { jetstream, type JsMsg } from "@nats-io/jetstream";
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
import { verifyProvisioned } from "../../shared/provision.ts";
import { SchemaError } from "../../shared/schema.ts";
import { extractTraceContext, traceparentOf } from "../../shared/telemetry.ts";
import { startHeartbeat } from "./heartbeat.ts";
import { KeyedLimiter } from "./keyed-limiter.ts";
import { LeaseWriter } from "./lease-writer.ts";
import {
  DEFAULT_NEVER_LEASE,
  configuredNeverLease,
  neverLeaseReason,
  ttlFor,
  type LeasePolicy,
} from "./policy.ts";
import type { authorizerSettings } from "./settings.ts";

export type AuthorizerConfig = ConfigOf<typeof authorizerSettings>;

/** Redelivery delays after a failed write, by delivery count; the last repeats. */
const NAK_BACKOFF_MS = [250, 1000, 5000, 15_000];
/** Events handled at once by one replica; each costs one or two KV round trips. */
const MAX_IN_FLIGHT = 64;

export function policyOf(config: AuthorizerConfig): LeasePolicy {
  return {
    defaultTtlMs: config.leaseTtl,
    serviceTtlMs: config.serviceTtls,
    neverLease:
      config.neverLease === undefined
        ? DEFAULT_NEVER_LEASE
        : configuredNeverLease(config.neverLease),
    ipv6Prefix: config.ipv6Prefix,
    maxUsersPerIp: config.maxUsersPerIp,
    usersWindowMs: config.usersWindow,
    refuseSharedAddress: config.refuseShared,
  };
}

export async function startAuthorizer(config: AuthorizerConfig, ctx: RoleContext): Promise<void> {
  const log = ctx.log.child({ module: "authorizer" });
  const id = `${hostname()}-${process.pid}`;
  const { nc, capability } = await connectForRole(config, "authorizer", ctx);
  const js = jetstream(nc);
  await verifyProvisioned(js, config, { consumer: true, bucket: true });
  const kv = await new Kvm(js).open(config.bucket);
  const policy = policyOf(config);
  const writer = new LeaseWriter(js, kv, config.bucket, capability.perMessageTtl, policy);
  const consumer = await js.consumers.get(config.stream, AUTHORIZER_DURABLE);
  const messages = await consumer.consume({ max_messages: 2 * MAX_IN_FLIGHT });
  const handler = new EventHandler(writer, policy, log);
  const limiter = new KeyedLimiter(MAX_IN_FLIGHT, (err: unknown) => {
    log.error({ err: errorMessage(err) }, "event handler failed");
  });
  const loop = (async () => {
    for await (const m of messages) {
      const parsed = handler.parse(m);
      await limiter.run(parsed instanceof Error ? `seq-${m.seq}` : parsed.ip, () =>
        handler.handle(m, parsed),
      );
    }
    await limiter.drain();
  })();
  ctx.add({
    name: "login-consumer",
    stop: async () => {
      // close() stops pulling; events already pulled are finished and acked before it resolves.
      await messages.close();
      await loop;
    },
  });
  ctx.add(startHeartbeat(kv, id, log));
  log.info({ stream: config.stream, bucket: config.bucket, id }, "consuming login events");
}

type Outcome =
  | "created"
  | "extended"
  | "recorded"
  | "kept"
  | "expired"
  | "malformed"
  | "never-lease"
  | "revoked"
  | "user-revoked"
  | "shared-address"
  | "failed";

function instruments() {
  const meter = metrics.getMeter("relaylease-authorizer");
  return {
    events: meter.createCounter("relaylease_authorizer_events", {
      description:
        "Login events handled, by outcome: created, extended, recorded, kept, expired, malformed, never-lease, revoked, user-revoked, shared-address, failed.",
    }),
    refusals: meter.createCounter("relaylease_authorizer_refusals", {
      description:
        "Leases refused, by reason (loopback, cgnat, configured, revoked, shared-address, ...).",
    }),
    redeliveries: meter.createCounter("relaylease_authorizer_redeliveries", {
      description: "Events delivered again (a replica died or timed out holding them, or a nak).",
    }),
    shared: meter.createCounter("relaylease_authorizer_shared_address_flags", {
      description:
        "Logins from an address with more distinct users than RELAYLEASE_MAX_USERS_PER_IP.",
    }),
    lag: meter.createHistogram("relaylease_authorizer_event_age_seconds", {
      description: "Time from login to lease write.",
      unit: "s",
    }),
  };
}

class EventHandler {
  readonly #writer: LeaseWriter;
  readonly #policy: LeasePolicy;
  readonly #log: Logger;
  readonly #tracer = trace.getTracer("relaylease-authorizer");
  readonly #metrics = instruments();

  constructor(writer: LeaseWriter, policy: LeasePolicy, log: Logger) {
    this.#writer = writer;
    this.#policy = policy;
    this.#log = log;
  }

  /** The event, or why it is malformed. */
  parse(m: JsMsg): LoginEvent | Error {
    try {
      return this.#eventOf(m);
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  async handle(m: JsMsg, parsed: LoginEvent | Error): Promise<void> {
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
    if (m.redelivered) this.#metrics.redeliveries.add(1);
    try {
      const outcome = await this.#process(m, parsed, span);
      span.setAttribute("relaylease.outcome", outcome);
      this.#metrics.events.add(1, { outcome });
    } finally {
      span.end();
    }
  }

  async #process(m: JsMsg, event: LoginEvent | Error, span: Span): Promise<Outcome> {
    if (event instanceof Error) {
      const reason = event.message;
      this.#log.warn({ subject: m.subject, seq: m.seq, reason }, "malformed login event dropped");
      span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
      m.term(reason.slice(0, 200));
      return "malformed";
    }
    span.setAttribute("messaging.message.id", event.id);
    const address = parseAddress(event.ip);
    const never = neverLeaseReason(this.#policy, address);
    if (never !== undefined) return this.#refuse(m, event, "never-lease", never);
    const ttl = ttlFor(this.#policy, event.service);
    const now = Date.now();
    if (event.loginAt + ttl <= now) {
      m.ack();
      return "expired";
    }
    const key = leaseKey(address, this.#policy.ipv6Prefix);
    const trace_ = traceparentOf(trace.setSpan(extractTraceContext(m.headers), span));
    try {
      const grant = await this.#writer.write(key, leaseFromEvent(event, ttl, trace_), now);
      if (this.#policy.maxUsersPerIp > 0 && grant.distinctUsers > this.#policy.maxUsersPerIp) {
        this.#metrics.shared.add(1);
        this.#log.warn(
          { ip: event.ip, distinctUsers: grant.distinctUsers, limit: this.#policy.maxUsersPerIp },
          "address shared by more users than allowed",
        );
      }
      if (grant.action === "refuse") return this.#refuse(m, event, grant.outcome, grant.outcome);
      m.ack();
      this.#metrics.lag.record((Date.now() - event.loginAt) / 1000);
      this.#log.debug({ key, event: event.id, outcome: grant.outcome }, "lease written");
      return grant.outcome;
    } catch (err) {
      const delay = NAK_BACKOFF_MS[Math.min(m.info.deliveryCount, NAK_BACKOFF_MS.length) - 1];
      this.#log.warn(
        { key, event: event.id, err: errorMessage(err), retryInMs: delay },
        "lease write failed",
      );
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      m.nak(delay);
      return "failed";
    }
  }

  #refuse<O extends Outcome>(m: JsMsg, event: LoginEvent, outcome: O, reason: string): O {
    m.ack();
    this.#metrics.refusals.add(1, { reason });
    this.#log.info({ ip: event.ip, user: event.user, event: event.id, reason }, "lease refused");
    return outcome;
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
