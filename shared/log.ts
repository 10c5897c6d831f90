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

/**
 * A warning a remote peer can cause in bulk (bad datagrams, refused peers): logged at most once
 * per `intervalMs`, carrying how many were left out before it.
 */
export function rateLimitedWarn(
  log: Logger,
  intervalMs: number,
): (fields: object, msg: string) => void {
  let last = -Infinity;
  let suppressed = 0;
  return (fields, msg) => {
    const now = performance.now();
    if (now - last < intervalMs) {
      suppressed++;
      return;
    }
    log.warn({ ...fields, suppressed }, msg);
    last = now;
    suppressed = 0;
  };
}
