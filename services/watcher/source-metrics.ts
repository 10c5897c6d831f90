// Exposes the login sources' own counters (requests, ignored by reason, refused callers, bad
// input, ...) as one Prometheus counter, relaylease_watcher_source_events{source, event}.
import { metrics } from "@opentelemetry/api";

type Counters = object;

const sources: [string, () => Counters][] = [];
let registered = false;

/** Registers a source's stats object; numeric fields become events, nested records flatten. */
export function observeSource(source: string, stats: () => Counters): void {
  sources.push([source, stats]);
  if (registered) return;
  registered = true;
  metrics
    .getMeter("relaylease-watcher")
    .createObservableCounter("relaylease_watcher_source_events", {
      description:
        "What each login source saw, by source and event: requests, logins, ignored reports by reason, refused callers, malformed input.",
    })
    .addCallback((r) => {
      for (const [name, read] of sources) {
        for (const [event, value] of flatten(read())) r.observe(value, { source: name, event });
      }
    });
}

function flatten(stats: Counters, prefix = ""): [string, number][] {
  const out: [string, number][] = [];
  for (const [k, v] of Object.entries(stats)) {
    if (typeof v === "number") out.push([prefix + k, v]);
    else if (typeof v === "object" && v !== null)
      out.push(...flatten(v as Counters, `${prefix}${k}_`));
  }
  return out;
}
