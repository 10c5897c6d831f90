/**
 * Socketmap server: SocketmapSession over the shared socket layer (../stream-server.ts, which
 * states the rules every connection keeps).
 *
 * Accepts connections from Sendmail (`Kdrac socket inet:PORT@HOST`, `unix:/path`) and Postfix
 * (`socketmap:inet:host:port:drac`, `socketmap:unix:/path:drac`) on a TCP address or a unix
 * socket (RELAYLEASE_SOCKETMAP_LISTEN), and answers each lookup from `lookup` (session.ts).
 *
 * Budget and limits, and what happens at each:
 * - `maxConnections` (1000): Sendmail holds one connection per SMTP child for the child's life,
 *   Postfix one per smtpd process (100 by default) until 10 s idle. A connection beyond the limit
 *   is closed at once (`stats.rejected`, one warning per episode): Postfix retries the lookup once,
 *   then defers the client; Sendmail answers that lookup as a temporary failure. Never a grant.
 * - `idleTimeoutMs` (3660 s): Postfix closes an idle socketmap connection itself after 10 s
 *   (dict_sockmap.c DICT_SOCKMAP_DEF_MAX_IDLE). Sendmail keeps it while the SMTP session lasts and
 *   does not retry when it finds it closed: that lookup fails temporarily. So we wait longer than
 *   Sendmail's default command timeout (Timeout.command, 1 h) between two RCPTs of one session,
 *   and only a peer dead that long is dropped.
 * - `limits` (codec.ts, 1 KiB per request): an oversized or broken netstring is a ProtocolError:
 *   warning, `stats.protocolErrors`, connection closed without a reply (no request boundary is
 *   left to answer at).
 * - `close()`: stop listening, flush replies, end every connection; whatever is still
 *   open after `closeTimeoutMs` (2 s) is destroyed. A Sendmail child's next lookup on a connection
 *   closed this way fails temporarily (it reopens the map on the lookup after).

 */
import type { Logger } from "../../../shared/log.ts";
import {
  newStreamServerStats,
  startStreamServer,
  type StreamConnection,
  type StreamServerStats,
} from "../stream-server.ts";
import type { SocketmapLimits } from "./codec.ts";
import { SocketmapSession } from "./session.ts";
import type { SocketmapLookup, SocketmapOutcome } from "./session.ts";

export interface SocketmapServerOptions {
  /** "host:port", "[ipv6]:port" or a unix socket path (parseListenAddress). */
  listen: string;
  lookup: SocketmapLookup;
  log: Logger;
  /** Map names served (e.g. ["drac"]); another name gets PERM. Default: any name. */
  mapNames?: readonly string[] | undefined;
  maxConnections?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  limits?: SocketmapLimits;
}

/** Counters for the role's metrics; plain numbers, read them whenever. */
export interface SocketmapServerStats extends StreamServerStats {
  /** Requests answered, of every kind below. */
  requests: number;
  /** OK <expiry>. */
  leased: number;
  /** NOTFOUND: no lease, or a key that is not an address (host names). */
  notFound: number;
  /** TEMP: the mirror is stale and does not know the address. */
  stale: number;
  /** TEMP: `lookup` threw (logged as an error). */
  lookupErrors: number;
  /** PERM: not `<mapname> <key>`, or a map name not served. */
  malformed: number;
}

export interface SocketmapServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<SocketmapServerStats>;
  close(): Promise<void>;
}

export async function startSocketmapServer(
  options: SocketmapServerOptions,
): Promise<SocketmapServer> {
  const stats: SocketmapServerStats = {
    ...newStreamServerStats(),
    requests: 0,
    leased: 0,
    notFound: 0,
    stale: 0,
    lookupErrors: 0,
    malformed: 0,
  };
  const server = await startStreamServer({
    name: "socketmap",
    listen: options.listen,
    log: options.log,
    maxConnections: options.maxConnections,
    idleTimeoutMs: options.idleTimeoutMs ?? 3_660_000,
    closeTimeoutMs: options.closeTimeoutMs,
    stats,
    session: (connection) => {
      const observe = observer(connection, stats);
      return new SocketmapSession({
        lookup: options.lookup,
        mapNames: options.mapNames,
        limits: options.limits,
        observe,
      });
    },
  });
  return { address: server.address, stats, close: () => server.close() };
}

/** Counts each reply by kind; logs failures, and a refused request once per connection. */
function observer(
  connection: StreamConnection,
  stats: SocketmapServerStats,
): (outcome: SocketmapOutcome) => void {
  let warned = false;
  return (outcome) => {
    stats.requests++;
    switch (outcome.reason) {
      case "leased":
        stats.leased++;
        break;
      case "not-leased":
      case "not-an-address":
        stats.notFound++;
        break;
      case "stale":
        stats.stale++;
        break;
      case "lookup-failed":
        stats.lookupErrors++;
        connection.log().error({ err: outcome.error }, "socketmap lookup failed; answered TEMP");
        break;
      case "unknown-map":
      case "malformed":
        stats.malformed++;
        // Warn once per connection: a peer repeating a bad request would flood the log.
        connection
          .log()
          [warned ? "debug" : "warn"](
            { request: outcome.request },
            "socketmap request refused; answered PERM",
          );
        warned = true;
        break;
    }
    if (connection.debug) {
      connection
        .log()
        .debug(
          { request: outcome.request, reply: outcome.reply, reason: outcome.reason },
          "socketmap reply",
        );
    }
  };
}
