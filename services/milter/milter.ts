// The milter role: a mirror of the lease bucket and the front doors that answer from it: the
// Postfix policy service and, with RELAYLEASE_MILTER_LISTEN, the milter protocol. Each answer is a
// span linked to the span that granted the lease.
import { performance } from "node:perf_hooks";
import { jetstream } from "@nats-io/jetstream";
import { metrics, trace, type Histogram, type Link } from "@opentelemetry/api";
import type { ConfigOf } from "../../shared/config.ts";
import { connectForRole } from "../../shared/nats.ts";
import type { RoleContext } from "../../shared/process.ts";
import { verifyProvisioned } from "../../shared/provision.ts";
import { contextFromTraceparent, spansExported } from "../../shared/telemetry.ts";
import { decide, type Decision, type DecisionConfig, type RelayRequest } from "./decide.ts";
import { LeaseMirror, type LeaseLookup } from "./mirror.ts";
import type { PolicyRequest } from "./policy/codec.ts";
import { startPolicyServer, type PolicyServerStats } from "./policy/server.ts";
import { startMilterServer } from "./milter-protocol/server.ts";
import type { LeaseAnswer } from "./lease-answer.ts";
import { startSocketmapServer } from "./socketmap/server.ts";
import { startWhosonServer } from "./whoson/server.ts";
import type { ClientAddress } from "../../shared/address.ts";
import { decisionConfigOf, type milterSettings } from "./settings.ts";

export type MilterConfig = ConfigOf<typeof milterSettings>;

export interface Milter {
  readonly mirror: LeaseMirror;
  readonly policyAddress: string;
  /** Where the milter listens; undefined without RELAYLEASE_MILTER_LISTEN. */
  readonly milterAddress: string | undefined;
  readonly socketmapAddress: string | undefined;
  readonly whosonAddress: string | undefined;
}

export async function startMilter(config: MilterConfig, ctx: RoleContext): Promise<Milter> {
  const { nc } = await connectForRole(config, "milter", ctx);
  const js = jetstream(nc);
  await verifyProvisioned(js, config, { bucket: true });
  const mirror = new LeaseMirror(nc, config.bucket, ctx.log, {
    staleAfterMs: config.staleAfter,
    maxEntries: config.mirrorMax,
  });
  ctx.add({ name: "mirror", ready: () => mirror.ready(), stop: () => mirror.stop() });
  await mirror.start();
  const decider = new TracedDecider(mirror, decisionConfigOf(config, false), (now) =>
    mirror.stale(now),
  );
  const policy = await startPolicyServer({
    listen: config.policyListen,
    answer: (request) => policyAction(decider.decide("policy", policyRequest(request))),
    log: ctx.log,
  });
  ctx.add({ name: "policy-server", stop: () => policy.close() });
  observeFrontDoor("policy", policy.stats);
  let milterAddress: string | undefined;
  if (config.milterListen !== undefined) {
    const milter = await startMilterServer({
      listen: config.milterListen,
      decide: (request) => decider.decide("milter", request),
      acceptAt: config.acceptAt,
      rejectText: config.rejectText,
      log: ctx.log,
    });
    ctx.add({ name: "milter-server", stop: () => milter.close() });
    observeFrontDoor("milter", milter.stats);
    milterAddress = milter.address;
  }
  const lookup = (door: string) => (address: ClientAddress) =>
    leaseAnswer(decider.decide(door, { clientAddress: address.text, stage: "connect" }));
  let socketmapAddress: string | undefined;
  if (config.socketmapListen !== undefined) {
    const socketmap = await startSocketmapServer({
      listen: config.socketmapListen,
      lookup: lookup("socketmap"),
      log: ctx.log,
    });
    ctx.add({ name: "socketmap-server", stop: () => socketmap.close() });
    observeFrontDoor("socketmap", {
      ...socketmap.stats,
      answerErrors: socketmap.stats.lookupErrors,
    });
    socketmapAddress = socketmap.address;
  }
  let whosonAddress: string | undefined;
  if (config.whosonListen !== undefined) {
    const whoson = await startWhosonServer({
      listen: config.whosonListen,
      lookup: lookup("whoson"),
      allow: config.whosonAllow.length === 0 ? undefined : config.whosonAllow,
      log: ctx.log,
    });
    ctx.add({ name: "whoson-server", stop: () => whoson.close() });
    whosonAddress = whoson.address;
  }
  return { mirror, policyAddress: policy.address, milterAddress, socketmapAddress, whosonAddress };
}

/**
 * What socketmap and whoson say of a client: leased (with expiry and user), unknown, or stale.
 * A lease counts whatever the verdict: with RELAYLEASE_ACCEPT_AT=rcpt a leased client's CONNECT
 * decision is `continue leased`, and these doors still must say leased.
 */
export function leaseAnswer(d: Decision): LeaseAnswer {
  if (d.reason === "leased") {
    return { kind: "leased", expiresAt: d.lease.expiresAt, user: d.lease.user };
  }
  return d.reason === "stale" ? { kind: "stale" } : { kind: "not-leased" };
}

/** Exposes a front door's connection counters as metrics. */
function observeFrontDoor(door: string, stats: Readonly<PolicyServerStats>): void {
  const meter = metrics.getMeter("relaylease-milter");
  meter
    .createObservableGauge("relaylease_frontdoor_connections_open", {
      description: "Open MTA connections, by front door.",
    })
    .addCallback((r) => {
      r.observe(stats.connections, { door });
    });
  meter
    .createObservableCounter("relaylease_frontdoor_connection_events", {
      description:
        "MTA connections accepted, refused at the connection limit, closed for a protocol error or a failed answer, by front door.",
    })
    .addCallback((r) => {
      r.observe(stats.accepted, { door, event: "accepted" });
      r.observe(stats.rejected, { door, event: "refused_at_limit" });
      r.observe(stats.protocolErrors, { door, event: "protocol_error" });
      r.observe(stats.answerErrors, { door, event: "answer_error" });
    });
}

/** In smtpd_relay_restrictions the state is RCPT; elsewhere only the client is asked about. */
export function policyRequest(request: PolicyRequest): RelayRequest {
  return {
    clientAddress: request.get("client_address"),
    stage: request.get("protocol_state")?.toUpperCase() === "RCPT" ? "rcpt" : "connect",
    recipient: request.get("recipient"),
    authenticated: request.get("sasl_username"),
  };
}

export const POLICY_DEFER_ACTION =
  "DEFER_IF_REJECT 4.7.1 Relay check temporarily unavailable, try again later";

/**
 * Postfix policy actions: OK lets the relay restriction pass; DUNNO leaves it to the next rule
 * (reject_unauth_destination decides locality itself: no recipient-level reject here).
 * Tempfail (stale mirror, unknown client) is DEFER_IF_REJECT: a recipient Postfix would then
 * reject as a relay attempt is deferred (450 4.7.1) instead, a local one still passes.
 * DEFER_IF_PERMIT would do the opposite: defer local mail and hard-reject the relay attempt.
 */
export function policyAction(d: Decision): string {
  switch (d.verdict) {
    case "accept":
      return "OK";
    case "tempfail":
      return POLICY_DEFER_ACTION;
    default:
      return "DUNNO";
  }
}

/**
 * Wraps the pure decision with its span, counter and latency histogram. The span is a leaf (it
 * links to the grant, nothing continues it), so it is made only when spans are exported: at
 * Postfix's pace a span with its link and attributes was a fifth of a policy request's CPU.
 * The SDK's instruments hash their attributes on every call (sort, JSON.stringify): about 15 000
 * of a milter connection's 240 000 instructions (under valgrind, as bench/milter-instructions.ts
 * counts them). So decisions are counted here as plain numbers, reported by an observable counter
 * when metrics are read, and the latency histogram, one for every door (the decision is one
 * function), takes no attributes and its values in batches (LatencyBatch).
 */
export class TracedDecider {
  readonly #leases: LeaseLookup;
  readonly #fresh: DecisionConfig;
  readonly #stale: DecisionConfig;
  readonly #isStale: (now: number) => boolean;
  readonly #tracer = trace.getTracer("relaylease-milter");
  readonly #traced = spansExported();
  /** door -> verdict -> reason -> decisions so far. */
  readonly #counts = new Map<string, Map<string, Map<string, number>>>();
  readonly #latency: LatencyBatch;

  /**
   * `isStale` is the mirror's view at a time (epoch ms; RELAYLEASE_STALE_AFTER); it picks the
   * config's `stale`.
   */
  constructor(
    leases: LeaseLookup,
    config: DecisionConfig,
    isStale: (now: number) => boolean = () => false,
  ) {
    this.#leases = leases;
    this.#fresh = { ...config, stale: false };
    this.#stale = { ...config, stale: true };
    this.#isStale = isStale;
    const meter = metrics.getMeter("relaylease-milter");
    meter
      .createObservableCounter("relaylease_decisions", {
        description: "Relay decisions, by front door, verdict and reason.",
      })
      .addCallback((r) => {
        // Callbacks run before the meter's synchronous instruments are read (sdk-metrics
        // MeterSharedState.collect), so the histogram read next holds every decision counted here.
        this.#latency.flush();
        for (const [door, verdicts] of this.#counts) {
          for (const [verdict, reasons] of verdicts) {
            for (const [reason, n] of reasons) r.observe(n, { door, verdict, reason });
          }
        }
      });
    this.#latency = new LatencyBatch(
      meter.createHistogram("relaylease_decision_duration_seconds", {
        description: "Time to decide, inside the process, all front doors.",
        unit: "s",
        advice: { explicitBucketBoundaries: [1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2] },
      }),
    );
  }

  decide(door: string, request: RelayRequest): Decision {
    const started = performance.now();
    const now = Date.now();
    const config = this.#isStale(now) ? this.#stale : this.#fresh;
    const d = decide(this.#leases, request, now, config);
    if (this.#traced) this.#span(door, request, d);
    this.#count(door, d.verdict, d.reason);
    this.#latency.record((performance.now() - started) / 1000);
    return d;
  }

  #count(door: string, verdict: string, reason: string): void {
    let verdicts = this.#counts.get(door);
    if (verdicts === undefined) {
      verdicts = new Map<string, Map<string, number>>();
      this.#counts.set(door, verdicts);
    }
    let reasons = verdicts.get(verdict);
    if (reasons === undefined) {
      reasons = new Map<string, number>();
      verdicts.set(verdict, reasons);
    }
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }

  #span(door: string, request: RelayRequest, d: Decision): void {
    const links: Link[] = [];
    if (d.reason === "leased") {
      const granted = contextFromTraceparent(d.lease.trace);
      const spanContext = granted === undefined ? undefined : trace.getSpanContext(granted);
      if (spanContext !== undefined) links.push({ context: spanContext });
    }
    this.#tracer
      .startSpan(`relay decision ${door}`, {
        links,
        attributes: {
          "relaylease.door": door,
          "relaylease.verdict": d.verdict,
          "relaylease.reason": d.reason,
          "client.address": request.clientAddress,
        },
      })
      .end();
  }
}

/**
 * Values for a histogram, handed to it `size` at a time and whenever `flush` is called (before
 * metrics are read). Under Postfix every decision wakes the process alone, with Postfix's own
 * processes' data in the CPU's caches, so what a decision costs grows with the code and data it
 * touches more than with its instructions. The SDK's record path (the instrument, its storage,
 * the attribute map and its hashing, the histogram's buckets) is about ten functions; here it runs
 * once per batch, in a loop that keeps it cached, and a decision only stores a number.
 */
export class LatencyBatch {
  readonly #histogram: Histogram;
  readonly #values: Float64Array;
  #count = 0;

  constructor(histogram: Histogram, size = 256) {
    this.#histogram = histogram;
    this.#values = new Float64Array(size);
  }

  record(value: number): void {
    this.#values[this.#count++] = value;
    if (this.#count === this.#values.length) this.flush();
  }

  flush(): void {
    const values = this.#values;
    const count = this.#count;
    this.#count = 0;
    for (let i = 0; i < count; i++) this.#histogram.record(values[i] ?? 0);
  }
}
