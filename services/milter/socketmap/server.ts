/**
 * Socketmap server: the socket layer over SocketmapSession.
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
 * - Back-pressure: a connection is not read while its replies are pending or not yet flushed, so
 *   a peer that pipelines without reading costs one chunk plus one unfinished request.
 * - `close()`: stop listening, let pending replies flush, end every connection; whatever is still
 *   open after `closeTimeoutMs` (2 s) is destroyed. A Sendmail child's next lookup on a connection
 *   closed this way fails temporarily (it reopens the map on the lookup after).
 */
import net from "node:net";
import type { Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { bind } from "../../../shared/listen.ts";
import { DEFAULT_SOCKETMAP_LIMITS } from "./codec.ts";
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

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface SocketmapServerStats {
  /** Open now. */
  connections: number;
  accepted: number;
  /** Closed at once because `maxConnections` were open. */
  rejected: number;
  /** Requests answered, of every kind below. */
  requests: number;
  /** OK <expiry>. */
  leased: number;
  /** NOTFOUND: no lease, or a key that is not an address (host names). */
  notFound: number;
  /** TEMP: the mirror is stale and does not know the address. */
  stale: number;
  /** TEMP: `lookup` threw or rejected (logged as an error). */
  lookupErrors: number;
  /** PERM: not `<mapname> <key>`, or a map name not served. */
  malformed: number;
  /** Broken framing or an oversized request; the connection was closed. */
  protocolErrors: number;
}

export interface SocketmapServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<SocketmapServerStats>;
  close(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS = 1000;
const DEFAULT_IDLE_TIMEOUT_MS = 3_660_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;

interface Settings {
  lookup: SocketmapLookup;
  mapNames: readonly string[] | undefined;
  limits: SocketmapLimits;
  idleTimeoutMs: number;
  log: Logger;
  stats: SocketmapServerStats;
}

export async function startSocketmapServer(
  options: SocketmapServerOptions,
): Promise<SocketmapServer> {
  const log = options.log.child({ module: "socketmap" });
  const stats: SocketmapServerStats = {
    connections: 0,
    accepted: 0,
    rejected: 0,
    requests: 0,
    leased: 0,
    notFound: 0,
    stale: 0,
    lookupErrors: 0,
    malformed: 0,
    protocolErrors: 0,
  };
  const settings: Settings = {
    lookup: options.lookup,
    mapNames: options.mapNames,
    limits: options.limits ?? DEFAULT_SOCKETMAP_LIMITS,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    log: options.log,
    stats,
  };
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  // allowHalfOpen: a peer that half-closes after its request still gets the reply.
  const server = net.createServer({ allowHalfOpen: true });
  server.maxConnections = maxConnections;
  const connections = track(server, settings, log);

  const address = await bind(server, options.listen);
  server.on("error", (err) => {
    log.error({ err }, "socketmap server error");
  });
  log.info({ address, maxConnections, mapNames: options.mapNames }, "socketmap server listening");

  let closing: Promise<void> | undefined;
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  return {
    address,
    stats,
    close: () => (closing ??= shutdown(server, connections, closeTimeoutMs)),
  };
}

/** Serves each accepted socket and keeps the set of open ones; counts what maxConnections drops. */
function track(server: net.Server, settings: Settings, log: Logger): Set<SocketmapConnection> {
  const { stats } = settings;
  const connections = new Set<SocketmapConnection>();
  let atLimit = false;
  let next = 0;
  server.on("connection", (socket) => {
    stats.accepted++;
    stats.connections++;
    const conn = new SocketmapConnection(socket, ++next, settings);
    connections.add(conn);
    socket.once("close", () => {
      connections.delete(conn);
      stats.connections--;
      atLimit = false;
    });
  });
  // Node closes a connection beyond server.maxConnections before we see it, then emits "drop".
  server.on("drop", (info) => {
    stats.rejected++;
    if (atLimit) return; // one warning per episode, not one per refused connection
    atLimit = true;
    const { maxConnections } = server;
    log.warn({ maxConnections, peer: info?.remoteAddress }, "socketmap connection limit reached");
  });
  return connections;
}

async function shutdown(
  server: net.Server,
  connections: Set<SocketmapConnection>,
  closeTimeoutMs: number,
): Promise<void> {
  // server.close() calls back once the last connection is gone (or at once with an error if it
  // was not listening, which changes nothing here).
  const closed = new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  for (const conn of connections) conn.shutdown();
  const deadline = setTimeout(() => {
    for (const conn of connections) conn.destroy();
  }, closeTimeoutMs);
  await closed;
  clearTimeout(deadline);
}

/** One accepted socket: feeds the session, writes replies, keeps the socket's rules. */
class SocketmapConnection {
  readonly #socket: net.Socket;
  readonly #session: SocketmapSession;
  readonly #log: Logger;
  readonly #stats: SocketmapServerStats;
  /** Chunks handed to the session whose replies are not written yet. */
  #pending = 0;
  /** The kernel buffer is full; wait for "drain" before reading more. */
  #blocked = false;
  /** Peer ended its side, or the server is closing: finish pending replies, then end. */
  #ending = false;
  /** A PERM reply was already logged as a warning on this connection. */
  #warned = false;

  constructor(socket: net.Socket, id: number, settings: Settings) {
    this.#socket = socket;
    this.#stats = settings.stats;
    this.#log = settings.log.child({ module: "socketmap", conn: id, peer: peerOf(socket) });
    this.#session = new SocketmapSession({
      lookup: settings.lookup,
      mapNames: settings.mapNames,
      limits: settings.limits,
      observe: (outcome) => {
        this.#observe(outcome);
      },
    });
    socket.setTimeout(settings.idleTimeoutMs);
    socket.on("data", (chunk: Buffer) => void this.#receive(chunk));
    socket.on("end", () => {
      this.#onPeerEnd();
    });
    socket.on("timeout", () => {
      this.#onIdle();
    });
    socket.on("error", (err) => {
      this.#log.debug({ err }, "socketmap socket error");
    });
    socket.on("close", () => {
      this.#log.debug("socketmap connection closed");
    });
    this.#log.debug("socketmap connection opened");
  }

  /** Server shutdown: answer what was asked, then end. */
  shutdown(): void {
    this.#socket.pause();
    this.#endWhenIdle();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #observe(outcome: SocketmapOutcome): void {
    const stats = this.#stats;
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
        this.#log.error({ err: outcome.error }, "socketmap lookup failed; answered TEMP");
        break;
      case "unknown-map":
      case "malformed":
        stats.malformed++;
        // Warn once per connection: a peer repeating a bad request would flood the log.
        this.#log[this.#warned ? "debug" : "warn"](
          { request: outcome.request },
          "socketmap request refused; answered PERM",
        );
        this.#warned = true;
        break;
    }
    if (this.#log.isLevelEnabled("debug")) {
      this.#log.debug(
        { request: outcome.request, reply: outcome.reply, reason: outcome.reason },
        "socketmap reply",
      );
    }
  }

  async #receive(chunk: Buffer): Promise<void> {
    this.#pending++;
    this.#socket.pause();
    try {
      this.#write(await this.#session.receive(chunk));
    } catch (err) {
      this.#fail(err);
    } finally {
      this.#pending--;
      this.#resumeOrEnd();
    }
  }

  #write(reply: Buffer): void {
    if (reply.length === 0 || !this.#socket.writable) return;
    if (!this.#socket.write(reply)) {
      this.#blocked = true;
      this.#socket.once("drain", () => {
        this.#blocked = false;
        this.#resumeOrEnd();
      });
    }
  }

  #fail(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.#stats.protocolErrors++;
      this.#log.warn({ err }, "socketmap protocol error; closing connection");
    } else {
      this.#log.error({ err }, "socketmap reply failed; closing connection");
    }
    this.#socket.destroySoon(); // flush replies already written, then close
  }

  #resumeOrEnd(): void {
    if (this.#pending > 0 || this.#blocked || this.#session.failed) return;
    if (this.#ending) this.#socket.destroySoon();
    else this.#socket.resume();
  }

  #onPeerEnd(): void {
    if (this.#session.buffered > 0) {
      this.#log.debug({ bytes: this.#session.buffered }, "peer closed mid-request");
    }
    this.#endWhenIdle();
  }

  #endWhenIdle(): void {
    this.#ending = true;
    this.#resumeOrEnd();
  }

  #onIdle(): void {
    this.#log.debug("socketmap connection idle; closing");
    this.#socket.destroy();
  }
}

function peerOf(socket: net.Socket): string {
  const { remoteAddress, remotePort } = socket;
  if (remoteAddress === undefined) return "unix";
  return remoteAddress.includes(":")
    ? `[${remoteAddress}]:${remotePort ?? 0}`
    : `${remoteAddress}:${remotePort ?? 0}`;
}
