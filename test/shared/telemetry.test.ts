// Trace context over NATS headers and lease values: what one role injects the next extracts,
// whatever case a foreign publisher gave the header name; installation happens once per process.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { context, trace, type Context, type Span } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { headers } from "@nats-io/transport-node";
import { createLogger } from "../../shared/log.ts";
import {
  contextFromTraceparent,
  extractTraceContext,
  initTelemetry,
  injectTraceContext,
  spansExported,
  traceparentOf,
  type Telemetry,
} from "../../shared/telemetry.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${SPAN_ID}-01`;

// Before installation (this test runs first): nothing takes spans, so leaf spans are skipped.
it("spansExported is false before telemetry is installed", () => {
  assert.equal(spansExported(), false);
});

describe("telemetry", () => {
  const exporter = new InMemorySpanExporter();
  let telemetry: Telemetry;

  before(() => {
    telemetry = initTelemetry({
      serviceName: "relaylease-test",
      log: createLogger("silent"),
      env: {},
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
  });
  after(() => telemetry.shutdown());

  /** A span started under the installed provider, and the context that holds it. */
  function started(name: string): { span: Span; ctx: Context } {
    const span = trace.getTracer("relaylease-test").startSpan(name);
    return { span, ctx: trace.setSpan(context.active(), span) };
  }

  it("installs once: a second call returns the first installation", () => {
    const again = initTelemetry({ serviceName: "other", log: createLogger("silent"), env: {} });
    assert.equal(again, telemetry);
  });

  it("spansExported once a processor takes spans", () => {
    assert.equal(spansExported(), true);
  });

  it("records spans through the given processors", () => {
    const { span } = started("recorded");
    span.end();
    assert.ok(exporter.getFinishedSpans().some((s) => s.name === "recorded"));
  });

  it("carries trace and span id through NATS headers", () => {
    const { span, ctx } = started("publish");
    const h = headers();
    injectTraceContext(ctx, h);
    span.end();
    assert.match(h.get("traceparent"), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const got = trace.getSpanContext(extractTraceContext(h));
    assert.ok(got !== undefined, "no span context extracted");
    assert.equal(got.traceId, span.spanContext().traceId);
    assert.equal(got.spanId, span.spanContext().spanId);
    assert.equal(got.isRemote, true);
  });

  const headerNames = ["traceparent", "Traceparent", "TRACEPARENT", "TraceParent"];
  for (const name of headerNames) {
    it(`extracts a traceparent header written as ${name}`, () => {
      const h = headers();
      h.set(name, TRACEPARENT);
      h.set(name.replace(/parent$/i, "state"), "vendor=opaque");
      assert.ok(h.keys().includes(name), `header name kept as written: ${h.keys().join(",")}`);
      const ctx = extractTraceContext(h);
      const got = trace.getSpanContext(ctx);
      assert.ok(got !== undefined, "no span context extracted");
      assert.equal(got.traceId, TRACE_ID);
      assert.equal(got.spanId, SPAN_ID);
      assert.equal(got.traceState?.get("vendor"), "opaque");
    });
  }

  const noContext: { name: string; headers: () => Parameters<typeof extractTraceContext>[0] }[] = [
    { name: "undefined headers", headers: () => undefined },
    { name: "headers without traceparent", headers: () => headers() },
    {
      name: "a malformed traceparent",
      headers: () => {
        const h = headers();
        h.set("traceparent", "00-zz-yy-01");
        return h;
      },
    },
  ];
  for (const c of noContext) {
    it(`extracts no span context from ${c.name}`, () => {
      assert.equal(trace.getSpanContext(extractTraceContext(c.headers())), undefined);
    });
  }

  it("traceparentOf and contextFromTraceparent round trip", () => {
    const { span, ctx } = started("grant");
    span.end();
    const tp = traceparentOf(ctx);
    assert.ok(tp !== undefined, "no traceparent");
    const { traceId, spanId } = span.spanContext();
    assert.equal(tp, `00-${traceId}-${spanId}-01`);
    const back = contextFromTraceparent(tp);
    assert.ok(back !== undefined);
    const got = trace.getSpanContext(back);
    assert.equal(got?.traceId, traceId);
    assert.equal(got.spanId, spanId);
    assert.equal(traceparentOf(back), tp);
  });

  it("traceparentOf a context without a span is undefined", () => {
    assert.equal(traceparentOf(context.active()), undefined);
  });

  it("contextFromTraceparent(undefined) is undefined", () => {
    assert.equal(contextFromTraceparent(undefined), undefined);
  });
});
