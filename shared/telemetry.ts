// OpenTelemetry bootstrap and trace-context carriage over NATS headers.
//
// Traces are exported over OTLP/HTTP only when the standard variables ask for it
// (OTEL_TRACES_EXPORTER=otlp, or an OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT); otherwise spans are still
// created, so trace context still flows from login to lease to decision, but go nowhere. A span
// nothing depends on (a leaf, like a relay decision) may be skipped when `spansExported()` says so. Metrics
// are always readable as Prometheus text (served by the process's health server) and pushed over
// OTLP when OTEL_METRICS_EXPORTER=otlp. Telemetry never throws into the request path.
import {
  context,
  diag,
  metrics,
  propagation,
  trace,
  type Context,
  type DiagLogger,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import {
  detectResources,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
} from "@opentelemetry/resources";
import {
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricReader,
} from "@opentelemetry/sdk-metrics";
import { BatchSpanProcessor, TracerProvider, type SpanProcessor } from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { MsgHdrs } from "@nats-io/transport-node";
import type { Logger } from "./log.ts";

export interface Telemetry {
  /** Prometheus text exposition of the process's metrics, for GET /metrics. */
  readonly prometheus: PrometheusExporter;
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  readonly serviceName: string;
  readonly log: Logger;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Extra span processors (tests use SimpleSpanProcessor(InMemorySpanExporter)). */
  readonly spanProcessors?: SpanProcessor[];
}

let installed: Telemetry | undefined;
/** Whether the installed tracer provider hands spans to any processor. */
let exported = false;

/**
 * Whether spans go anywhere (an exporter or a test's processor). Leaf spans, which propagate no
 * context, cost a hot path for nothing when they do not; false before initTelemetry.
 */
export function spansExported(): boolean {
  return exported;
}

/**
 * Installs the global tracer and meter providers, context manager and W3C propagator, once per
 * process: a later call (the `dev` role starts three roles in one process) gets the first
 * installation. Tracers and meters must be taken after this call; a meter taken before stays a
 * no-op.
 */
export function initTelemetry(opts: TelemetryOptions): Telemetry {
  installed ??= install(opts);
  return installed;
}

function install(opts: TelemetryOptions): Telemetry {
  const env = opts.env ?? process.env;
  diag.setLogger(diagLogger(opts.log));
  const resource = resourceFromAttributes({
    [ATTR_SERVICE_NAME]: env["OTEL_SERVICE_NAME"] ?? opts.serviceName,
    [ATTR_SERVICE_VERSION]: "0.1.0",
  }).merge(detectResources({ detectors: [resourceAttributesEnvDetector] }));

  const spanProcessors = [...(opts.spanProcessors ?? [])];
  if (wantsOtlp(env, "TRACES"))
    spanProcessors.push(new BatchSpanProcessor({ exporter: new OTLPTraceExporter() }));
  const tracerProvider = new TracerProvider({ resource, spanProcessors });
  exported = spanProcessors.length > 0;

  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const readers: MetricReader[] = [prometheus];
  if (wantsOtlp(env, "METRICS")) {
    readers.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter() }));
  }
  const meterProvider = new MeterProvider({ resource, readers });

  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(tracerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());

  return {
    prometheus,
    shutdown: async () => {
      await Promise.allSettled([tracerProvider.shutdown(), meterProvider.shutdown()]);
    },
  };
}

function wantsOtlp(env: Readonly<Record<string, string | undefined>>, signal: string): boolean {
  const exporter = env[`OTEL_${signal}_EXPORTER`];
  if (exporter !== undefined) return exporter.split(",").includes("otlp");
  return (
    (env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? env[`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`] ?? "") !==
    ""
  );
}

function diagLogger(log: Logger): DiagLogger {
  const child = log.child({ module: "otel" });
  return {
    error: (m, ...a) => {
      child.error({ args: a }, m);
    },
    warn: (m, ...a) => {
      child.warn({ args: a }, m);
    },
    info: (m) => {
      child.debug(m);
    },
    debug: () => undefined,
    verbose: () => undefined,
  };
}

const headerSetter: TextMapSetter<MsgHdrs> = {
  set: (h, k, v) => {
    h.set(k, v);
  },
};

// NATS header lookups are case-sensitive by default; foreign publishers may differ in case.
const headerGetter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (h) => (h === undefined ? [] : h.keys()),
  get: (h, k) => {
    if (h === undefined) return undefined;
    for (const key of h.keys()) if (key.toLowerCase() === k) return h.get(key) || undefined;
    return undefined;
  },
};

/** Writes the trace context of `ctx` into NATS message headers (traceparent, tracestate). */
export function injectTraceContext(ctx: Context, headers: MsgHdrs): void {
  propagation.inject(ctx, headers, headerSetter);
}

/** Reads a trace context from NATS message headers; the active context if there is none. */
export function extractTraceContext(headers: MsgHdrs | undefined): Context {
  return propagation.extract(context.active(), headers, headerGetter);
}

/** The W3C traceparent of a context, to be stored in a lease value (KV entries carry no headers). */
export function traceparentOf(ctx: Context): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier["traceparent"];
}

/** The span context stored in a lease value, for a span link from a relay decision. */
export function contextFromTraceparent(traceparent: string | undefined): Context | undefined {
  if (traceparent === undefined) return undefined;
  return propagation.extract(context.active(), { traceparent });
}
