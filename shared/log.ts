// pino JSON logs. One root logger per process; modules and connections take child loggers
// (`{role, module, conn, peer}`). Untrusted strings go under keys we choose, never as the message.
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, bindings: Record<string, string> = {}): Logger {
  return pino({
    level,
    base: bindings,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: ["password", "*.password", "token", "*.token"], censor: "[redacted]" },
  });
}
