// The health and metrics listener every role runs (RELAYLEASE_METRICS_LISTEN):
//   GET /metrics  Prometheus text exposition of the process's OpenTelemetry metrics
//   GET /healthz  200 while the process runs (liveness)
//   GET /readyz   200 when every component reports ready, else 503 naming the ones that are not
// It accepts only GET and HEAD and reads no request body.
import { createServer, type Server } from "node:http";
import type { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { listen, type ListeningServer } from "./listen.ts";

export interface ReadinessCheck {
  readonly name: string;
  ready(): boolean;
}

export async function startHealthServer(
  address: string,
  prometheus: PrometheusExporter,
  checks: () => readonly ReadinessCheck[],
): Promise<ListeningServer> {
  const server: Server = createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      prometheus.getMetricsRequestHandler(req, res);
    } else if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const waiting = checks()
        .filter((c) => !c.ready())
        .map((c) => c.name);
      res
        .writeHead(waiting.length === 0 ? 200 : 503, { "content-type": "text/plain" })
        .end(waiting.length === 0 ? "ready\n" : `not ready: ${waiting.join(", ")}\n`);
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  return listen(server, address);
}
