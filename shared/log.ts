// pino JSON logs. One root logger per process; modules and connections take child loggers
// (`{role, module, conn, peer}`). Untrusted strings go under keys we choose, never as the message.
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger };

/** `destination` defaults to stdout; tests pass a stream to read what was logged. */
export function createLogger(
  level: string,
  bindings: Record<string, string> = {},
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: bindings,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: ["password", "*.password", "token", "*.token"], censor: "[redacted]" },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
