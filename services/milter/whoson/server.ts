/**
 * whoson server: the socket layer over WhosonSession (TCP) and answerWhoson (UDP).
 *
 * Accepts `QUERY <address>` from whoson clients (libwhoson's wso_query, so Exim's built-in
 * `${lookup whoson {$sender_host_address}}`; ZMailer; gowhoson's client) at
 * RELAYLEASE_WHOSON_LISTEN: for `host:port` over TCP and over UDP on the same port (whosond and
 * gowhoson serve both; 9876 is gowhoson's default), for a unix socket path over a stream socket
 * only. Every answer is read-only; LOGIN and LOGOUT are refused (session.ts).
 *
 * Budget and limits, and what happens at each:
 * - `allow` (default: everyone who can reach the port): a whoson answer names the user behind an
 *   address, so restrict it where the port is reachable from more than the SMTP hosts. whosond's
 *   own default is to deny all. TCP peers outside get `*Access denied` and are closed; UDP
 *   datagrams from outside are dropped without a reply (a spoofed source must not be answered).
 *   Both count in `stats.denied`, with a warning at most once a minute.
 * - `maxConnections` (1000) TCP connections: one beyond is closed at once (`stats.rejected`, one
 *   warning per episode); wso_query then fails (-1) and Exim defers.
 * - `idleTimeoutMs` (60 s) per TCP connection: gowhoson closes a session after 10 s without a
 *   request, so whoson clients already reconnect after an idle close; we wait longer.
 * - `limits` (codec.ts, 512 bytes per line): a broken or oversized request is a ProtocolError:
 *   warning, `stats.protocolErrors`, TCP connection closed; a bad datagram is dropped (warning
 *   at most once a minute: UDP sources can be forged in bulk).
 * - `maxPendingDatagrams` (1000): datagrams whose answer is still being looked up; more are
 *   dropped (`stats.datagramsDropped`) and the client's own timeout retries or defers.
 * - Back-pressure on TCP: a connection is not read while its replies are pending or unflushed.
 * - `close()`: stop listening on both, let pending TCP replies flush, end every connection;
 *   whatever is still open after `closeTimeoutMs` (2 s) is destroyed.
 */
import dgram from "node:dgram";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { networkContains, tryParseAddress } from "../../../shared/address.ts";
import type { Network } from "../../../shared/address.ts";
import { parseListenAddress } from "../../../shared/listen-address.ts";
import { bind } from "../../../shared/listen.ts";
import type { Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import {
  DEFAULT_WHOSON_LIMITS,
  WHOSON_ERROR,
  decodeWhosonDatagram,
  encodeWhosonReply,
} from "./codec.ts";
import type { WhosonLimits, WhosonRequest } from "./codec.ts";
import { WhosonSession, answerWhoson } from "./session.ts";
import type { WhosonLookup, WhosonOutcome } from "./session.ts";

export interface WhosonServerOptions {
  /** "host:port" / "[ipv6]:port" (TCP and UDP), or a unix socket path (stream only). */
  listen: string;
  lookup: WhosonLookup;
  log: Logger;
  /** Also serve UDP on the TCP port (default true; ignored for a unix socket). */
  udp?: boolean;
  /** Peers allowed to ask (shared/address.ts parseNetworkList); default: any peer. */
  allow?: readonly Network[] | undefined;
  maxConnections?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxPendingDatagrams?: number;
  limits?: WhosonLimits;
}

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface WhosonServerStats {
  /** TCP connections open now. */
  connections: number;
  accepted: number;
  /** TCP connections closed at once because `maxConnections` were open. */
  rejected: number;
  /** Peers outside `allow`: TCP connections refused plus datagrams dropped. */
  denied: number;
  /** Datagrams received, whatever became of them. */
  datagrams: number;
  /** Datagrams dropped because `maxPendingDatagrams` answers were pending. */
  datagramsDropped: number;
  /** Requests answered, TCP and UDP, of every kind below. */
  requests: number;
  /** `+<user>`. */
  leased: number;
  /** `-Not Logged in`: no lease, or not an address. */
  notLoggedIn: number;
  /** `*`: the mirror is stale and does not know the address. */
  stale: number;
  /** `*`: `lookup` threw or rejected (logged as an error). */
  lookupErrors: number;
  /** `*`: LOGIN or LOGOUT. */
  refused: number;
  /** `*`: a verb that is not QUERY, LOGIN, LOGOUT or QUIT. */
  unknownCommands: number;
  /** Broken or oversized requests: TCP connections closed, datagrams dropped. */
  protocolErrors: number;
}

export interface WhosonServer {
  /** TCP address, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  /** UDP address, the same port as TCP; undefined when UDP is not served. */
  readonly udpAddress: string | undefined;
  readonly stats: Readonly<WhosonServerStats>;
  close(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS = 1000;
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;
const DEFAULT_MAX_PENDING_DATAGRAMS = 1000;
/** Tries to find a port free for both TCP and UDP when port 0 was asked for. */
const PORT_ATTEMPTS = 5;
const ACCESS_DENIED = encodeWhosonReply({ status: WHOSON_ERROR, text: "Access denied" });

interface Settings {
  lookup: WhosonLookup;
  limits: WhosonLimits;
  idleTimeoutMs: number;
  log: Logger;
  stats: WhosonServerStats;
  allowed: (remoteAddress: string | undefined) => boolean;
  observe: (outcome: WhosonOutcome, log: Logger) => void;
  /** Warnings a remote peer can cause in bulk: at most one a minute. */
  warn: (obj: object, msg: string) => void;
}

export async function startWhosonServer(options: WhosonServerOptions): Promise<WhosonServer> {
  const log = options.log.child({ module: "whoson" });
  const stats = newStats();
  const settings: Settings = {
    lookup: options.lookup,
    limits: options.limits ?? DEFAULT_WHOSON_LIMITS,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    log: options.log,
    stats,
    allowed: allowList(options.allow),
    observe: (outcome, connLog) => {
      observe(stats, outcome, connLog);
    },
    warn: rateLimited(log, 60_000),
  };
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const where = parseListenAddress(options.listen);
  const udpPort = "port" in where && (options.udp ?? true) ? where.port : undefined;
  const { server, connections, address, udp } = await listenBoth(
    options.listen,
    udpPort,
    maxConnections,
    settings,
    log,
  );
  let udpAddress: string | undefined;
  if (udp !== undefined) {
    udpAddress = formatUdp(udp.address());
    serveUdp(udp, settings, options.maxPendingDatagrams ?? DEFAULT_MAX_PENDING_DATAGRAMS, log);
  }
  log.info({ address, udpAddress, maxConnections }, "whoson server listening");

  let closing: Promise<void> | undefined;
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  return {
    address,
    udpAddress,
    stats,
    close: () => (closing ??= shutdown(server, connections, udp, closeTimeoutMs)),
  };
}

function newStats(): WhosonServerStats {
  return {
    connections: 0,
    accepted: 0,
    rejected: 0,
    denied: 0,
    datagrams: 0,
    datagramsDropped: 0,
    requests: 0,
    leased: 0,
    notLoggedIn: 0,
    stale: 0,
    lookupErrors: 0,
    refused: 0,
    unknownCommands: 0,
    protocolErrors: 0,
  };
}

function allowList(allow: readonly Network[] | undefined): Settings["allowed"] {
  if (allow === undefined) return () => true;
  return (remoteAddress) => {
    if (remoteAddress === undefined) return true; // a unix socket: its file mode decides
    const address = tryParseAddress(remoteAddress);
    return address !== undefined && allow.some((net) => networkContains(net, address));
  };
}

/** Counts one answered request, TCP or UDP, and logs what needs a log line. */
function observe(stats: WhosonServerStats, outcome: WhosonOutcome, log: Logger): void {
  stats.requests++;
  switch (outcome.reason) {
    case "leased":
      stats.leased++;
      break;
    case "not-leased":
    case "not-an-address":
      stats.notLoggedIn++;
      break;
    case "stale":
      stats.stale++;
      break;
    case "lookup-failed":
      stats.lookupErrors++;
      log.error({ err: outcome.error }, "whoson lookup failed; answered *");
      break;
    case "refused":
      stats.refused++;
      log.info({ verb: outcome.request.verb }, "whoson update refused");
      break;
    case "unknown-command":
      stats.unknownCommands++;
      break;
    case "quit":
      break;
  }
  if (log.isLevelEnabled("debug")) {
    log.debug(
      { request: outcome.request, reply: outcome.reply, reason: outcome.reason },
      "whoson reply",
    );
  }
}

interface Bound {
  server: net.Server;
  connections: Set<WhosonConnection>;
  address: string;
  udp: dgram.Socket | undefined;
}

/**
 * Binds TCP, then (unless `udpPort` is undefined) UDP on the same address and port. With port 0
 * the kernel picks the TCP port, which UDP may find taken: then both are given up and tried again.
 */
async function listenBoth(
  listen: string,
  udpPort: number | undefined,
  maxConnections: number,
  settings: Settings,
  log: Logger,
): Promise<Bound> {
  for (let attempt = 1; ; attempt++) {
    const server = net.createServer({ allowHalfOpen: true });
    server.maxConnections = maxConnections;
    const connections = track(server, settings, log);
    const address = await bind(server, listen);
    server.on("error", (err) => {
      log.error({ err }, "whoson server error");
    });
    if (udpPort === undefined) return { server, connections, address, udp: undefined };
    const tcp = server.address() as AddressInfo;
    try {
      return { server, connections, address, udp: await bindUdp(tcp) };
    } catch (err) {
      await new Promise((resolve) => server.close(resolve));
      const retry = isErrno(err, "EADDRINUSE") && udpPort === 0 && attempt < PORT_ATTEMPTS;
      if (!retry) throw err;
    }
  }
}

function bindUdp(tcp: AddressInfo): Promise<dgram.Socket> {
  const socket = dgram.createSocket(tcp.family === "IPv6" ? "udp6" : "udp4");
  return new Promise((resolve, reject) => {
    socket.once("error", (err) => {
      socket.close();
      reject(err);
    });
    socket.bind(tcp.port, tcp.address, () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}

function formatUdp(address: AddressInfo): string {
  return address.family === "IPv6"
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** Answers each datagram with one datagram to its source. */
function serveUdp(socket: dgram.Socket, settings: Settings, maxPending: number, log: Logger): void {
  const { stats, warn } = settings;
  let pending = 0;
  socket.on("error", (err) => {
    log.error({ err }, "whoson udp socket error");
  });
  socket.on("message", (msg, rinfo) => {
    stats.datagrams++;
    if (!settings.allowed(rinfo.address)) {
      stats.denied++;
      warn({ peer: rinfo.address }, "whoson datagram from a peer not allowed; dropped");
      return;
    }
    if (pending >= maxPending) {
      stats.datagramsDropped++;
      warn({ maxPending }, "whoson datagrams pending at the limit; dropped");
      return;
    }
    let request: WhosonRequest;
    try {
      request = decodeWhosonDatagram(msg, settings.limits);
    } catch (err) {
      if (err instanceof ProtocolError) {
        stats.protocolErrors++;
        warn({ err, peer: rinfo.address }, "whoson protocol error in a datagram; dropped");
      } else {
        log.error({ err }, "whoson datagram decoder failed"); // our bug; one datagram lost
      }
      return;
    }
    pending++;
    const peerLog = log.child({ peer: `${rinfo.address}:${rinfo.port}`, transport: "udp" });
    void answerWhoson(request, settings.lookup)
      .then((outcome) => {
        settings.observe(outcome, peerLog);
        socket.send(encodeWhosonReply(outcome.reply), rinfo.port, rinfo.address, (err) => {
          if (err) peerLog.debug({ err }, "whoson reply not sent");
        });
      })
      .catch((err: unknown) => {
        peerLog.error({ err }, "whoson reply failed");
      })
      .finally(() => {
        pending--;
      });
  });
}

/** A warning at most once per `intervalMs`, carrying how many were left out before it. */
function rateLimited(log: Logger, intervalMs: number): (obj: object, msg: string) => void {
  let last = -Infinity;
  let suppressed = 0;
  return (obj, msg) => {
    const now = performance.now();
    if (now - last < intervalMs) {
      suppressed++;
      return;
    }
    log.warn({ ...obj, suppressed }, msg);
    last = now;
    suppressed = 0;
  };
}

/** Serves each accepted socket and keeps the set of open ones; counts what maxConnections drops. */
function track(server: net.Server, settings: Settings, log: Logger): Set<WhosonConnection> {
  const { stats } = settings;
  const connections = new Set<WhosonConnection>();
  let atLimit = false;
  let next = 0;
  server.on("connection", (socket) => {
    if (!settings.allowed(socket.remoteAddress)) {
      stats.denied++;
      settings.warn({ peer: socket.remoteAddress }, "whoson connection from a peer not allowed");
      socket.on("error", () => undefined);
      socket.end(ACCESS_DENIED);
      return;
    }
    stats.accepted++;
    stats.connections++;
    const conn = new WhosonConnection(socket, ++next, settings);
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
    log.warn({ maxConnections, peer: info?.remoteAddress }, "whoson connection limit reached");
  });
  return connections;
}

async function shutdown(
  server: net.Server,
  connections: Set<WhosonConnection>,
  udp: dgram.Socket | undefined,
  closeTimeoutMs: number,
): Promise<void> {
  const udpClosed = new Promise<void>((resolve) => {
    if (udp === undefined) resolve();
    else udp.close(resolve);
  });
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
  await Promise.all([closed, udpClosed]);
  clearTimeout(deadline);
}

/** One accepted TCP or unix socket: feeds the session, writes replies, keeps the socket's rules. */
class WhosonConnection {
  readonly #socket: net.Socket;
  readonly #session: WhosonSession;
  readonly #log: Logger;
  readonly #stats: WhosonServerStats;
  /** Chunks handed to the session whose replies are not written yet. */
  #pending = 0;
  /** The kernel buffer is full; wait for "drain" before reading more. */
  #blocked = false;
  /** Peer ended its side, or the server is closing: finish pending replies, then end. */
  #ending = false;

  constructor(socket: net.Socket, id: number, settings: Settings) {
    this.#socket = socket;
    this.#stats = settings.stats;
    this.#log = settings.log.child({ module: "whoson", conn: id, peer: peerOf(socket) });
    this.#session = new WhosonSession({
      lookup: settings.lookup,
      limits: settings.limits,
      observe: (outcome) => {
        settings.observe(outcome, this.#log);
      },
    });
    socket.setTimeout(settings.idleTimeoutMs);
    socket.on("data", (chunk: Buffer) => void this.#receive(chunk));
    socket.on("end", () => {
      this.#endWhenIdle();
    });
    socket.on("timeout", () => {
      this.#log.debug("whoson connection idle; closing");
      socket.destroy();
    });
    socket.on("error", (err) => {
      this.#log.debug({ err }, "whoson socket error");
    });
    socket.on("close", () => {
      this.#log.debug("whoson connection closed");
    });
    this.#log.debug("whoson connection opened");
  }

  /** Server shutdown: answer what was asked, then end. */
  shutdown(): void {
    this.#socket.pause();
    this.#endWhenIdle();
  }

  destroy(): void {
    this.#socket.destroy();
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
      this.#log.warn({ err }, "whoson protocol error; closing connection");
    } else {
      this.#log.error({ err }, "whoson reply failed; closing connection");
    }
    this.#socket.destroySoon(); // flush replies already written, then close
  }

  #resumeOrEnd(): void {
    if (this.#pending > 0 || this.#blocked || this.#session.failed) return;
    if (this.#ending || this.#session.quit) this.#socket.destroySoon();
    else this.#socket.resume();
  }

  #endWhenIdle(): void {
    this.#ending = true;
    this.#resumeOrEnd();
  }
}

function peerOf(socket: net.Socket): string {
  const { remoteAddress, remotePort } = socket;
  if (remoteAddress === undefined) return "unix";
  return remoteAddress.includes(":")
    ? `[${remoteAddress}]:${remotePort ?? 0}`
    : `${remoteAddress}:${remotePort ?? 0}`;
}
