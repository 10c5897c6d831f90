/**
 * Postfix policy delegation server: PolicySession over the shared socket layer
 * (../stream-server.ts, which states the rules every connection keeps).
 *
 * Accepts connections from Postfix smtpd (`check_policy_service inet:host:port` or `unix:/path`)
 * on a TCP address or a unix socket, and answers each request with `answer`'s action.
 *
 * Limits, and why these values:
 * - `maxConnections` (1000): Postfix holds one connection per smtpd process per policy service,
 *   and its default process limit is 100; a connection beyond the limit is closed at once and
 *   Postfix retries it later.
 * - `idleTimeoutMs` (330 s): Postfix closes an idle policy connection itself after
 *   `smtpd_policy_service_max_idle` (300 s); waiting a little longer lets Postfix, not us, end it,
 *   so a request never races our close. A dead peer is dropped after this.
 * - `limits` (codec.ts): a request over them is a ProtocolError: warning, `stats.protocolErrors`,
 *   connection closed (SMTPD_POLICY_README: "log a warning and disconnect").
 * - `close()`: stop listening, flush replies, end every connection; whatever is still open after
 *   `closeTimeoutMs` (2 s) is destroyed.
 */
import type { Logger } from "../../../shared/log.ts";
import {
  newStreamServerStats,
  startStreamServer,
  type StreamServerStats,
} from "../stream-server.ts";
import { DEFAULT_POLICY_LIMITS } from "./codec.ts";
import type { PolicyLimits, PolicyRequest } from "./codec.ts";
import { PolicySession } from "./session.ts";
import type { PolicyAnswer } from "./session.ts";

export interface PolicyServerOptions {
  /** "host:port", "[ipv6]:port" or a unix socket path (parseListenAddress). */
  listen: string;
  answer: PolicyAnswer;
  log: Logger;
  maxConnections?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  limits?: PolicyLimits;
}

/** Counters for the role's metrics; plain numbers, read them whenever. */
export interface PolicyServerStats extends StreamServerStats {
  requests: number;
}

export interface PolicyServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<PolicyServerStats>;
  close(): Promise<void>;
}

export async function startPolicyServer(options: PolicyServerOptions): Promise<PolicyServer> {
  const limits = options.limits ?? DEFAULT_POLICY_LIMITS;
  const stats: PolicyServerStats = { ...newStreamServerStats(), requests: 0 };
  const server = await startStreamServer({
    name: "policy",
    listen: options.listen,
    log: options.log,
    maxConnections: options.maxConnections,
    idleTimeoutMs: options.idleTimeoutMs ?? 330_000,
    closeTimeoutMs: options.closeTimeoutMs,
    session: (connection) =>
      new PolicySession((request) => {
        stats.requests++;
        const action = options.answer(request);
        if (connection.debug) {
          connection.log().debug({ request: pick(request), action }, "policy reply");
        }
        return action;
      }, limits),
    stats,
  });
  return { address: server.address, stats, close: () => server.close() };
}

/** The attributes worth a debug line, nested under "request" by the caller. */
function pick(request: PolicyRequest): Record<string, string | undefined> {
  return {
    protocol_state: request.get("protocol_state"),
    client_address: request.get("client_address"),
    instance: request.get("instance"),
  };
}
