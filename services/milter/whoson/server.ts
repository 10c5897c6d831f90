/**
 * whoson server: WhosonSession over the shared socket layer (../stream-server.ts, which states
 * the rules every TCP connection keeps), and answerWhoson per UDP datagram.
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
 * - A datagram is answered before the next is read (the answer reads an in-memory mirror).
 * - `close()`: stop listening on both, flush TCP replies, end every connection;
 *   whatever is still open after `closeTimeoutMs` (2 s) is destroyed.
 */
import dgram from "node:dgram";
import { networkContains, tryParseAddress } from "../../../shared/address.ts";
import type { Network } from "../../../shared/address.ts";
import { formatListenAddress, parseListenAddress } from "../../../shared/listen-address.ts";
import { rateLimitedWarn, type Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import {
  newStreamServerStats,
  startStreamServer,
  type StreamServer,
  type StreamServerStats,
} from "../stream-server.ts";
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
  limits?: WhosonLimits;
}

/** Counters for the role's metrics; plain numbers, read them whenever. */
export interface WhosonServerStats extends StreamServerStats {
  /** Peers outside `allow`: TCP connections refused plus datagrams dropped. */
  denied: number;
  /** Datagrams received, whatever became of them. */
  datagrams: number;
  /** Requests answered, TCP and UDP, of every kind below. */
  requests: number;
  /** `+<user>`. */
  leased: number;
  /** `-Not Logged in`: no lease, or not an address. */
  notLoggedIn: number;
  /** `*`: the mirror is stale and does not know the address. */
  stale: number;
  /** `*`: `lookup` threw (logged as an error). */
  lookupErrors: number;
  /** `*`: LOGIN or LOGOUT. */
  refused: number;
  /** `*`: a verb that is not QUERY, LOGIN, LOGOUT or QUIT. */
  unknownCommands: number;
}

export interface WhosonServer {
  /** TCP address, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  /** UDP address, the same port as TCP; undefined when UDP is not served. */
  readonly udpAddress: string | undefined;
  readonly stats: Readonly<WhosonServerStats>;
  close(): Promise<void>;
}

/** Tries to find a port free for both TCP and UDP when port 0 was asked for. */
const PORT_ATTEMPTS = 5;
const ACCESS_DENIED = encodeWhosonReply({ status: WHOSON_ERROR, text: "Access denied" });

interface Settings {
  lookup: WhosonLookup;
  limits: WhosonLimits;
  stats: WhosonServerStats;
  allowed: (remoteAddress: string | undefined) => boolean;
  /** Warnings a remote peer can cause in bulk: at most one a minute. */
  warn: (obj: object, msg: string) => void;
}

export async function startWhosonServer(options: WhosonServerOptions): Promise<WhosonServer> {
  const log = options.log.child({ module: "whoson" });
  const stats: WhosonServerStats = {
    ...newStreamServerStats(),
    denied: 0,
    datagrams: 0,
    requests: 0,
    leased: 0,
    notLoggedIn: 0,
    stale: 0,
    lookupErrors: 0,
    refused: 0,
    unknownCommands: 0,
  };
  const settings: Settings = {
    lookup: options.lookup,
    limits: options.limits ?? DEFAULT_WHOSON_LIMITS,
    stats,
    allowed: allowList(options.allow),
    warn: rateLimitedWarn(log, 60_000),
  };
  const where = parseListenAddress(options.listen);
  const udpWanted = "port" in where && (options.udp ?? true);
  // Binds TCP, then (if wanted) UDP on the same address and port. With port 0 the kernel picks
  // the TCP port, which UDP may find taken: then both are given up and tried again.
  for (let attempt = 1; ; attempt++) {
    const tcp = await startTcp(options, settings);
    if (!udpWanted) return whosonServer(tcp, undefined, stats);
    try {
      const udp = await bindUdp(tcp.address);
      serveUdp(udp, settings, log);
      const udpAddress = formatListenAddress(udp.address());
      log.info({ address: udpAddress }, "whoson udp listening");
      return whosonServer(tcp, udp, stats);
    } catch (err) {
      await tcp.close();
      const retry = isErrno(err, "EADDRINUSE") && "port" in where && where.port === 0;
      if (!retry || attempt >= PORT_ATTEMPTS) throw err;
    }
  }
}

function startTcp(options: WhosonServerOptions, settings: Settings): Promise<StreamServer> {
  const { stats } = settings;
  return startStreamServer({
    name: "whoson",
    listen: options.listen,
    log: options.log,
    maxConnections: options.maxConnections,
    // gowhoson closes a session after 10 s without a request; whoson clients reconnect.
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    closeTimeoutMs: options.closeTimeoutMs,
    stats,
    refuse: (socket) => {
      if (settings.allowed(socket.remoteAddress)) return undefined;
      stats.denied++;
      settings.warn({ peer: socket.remoteAddress }, "whoson connection from a peer not allowed");
      return ACCESS_DENIED;
    },
    session: (connection) =>
      new WhosonSession({
        lookup: settings.lookup,
        limits: settings.limits,
        observe: (outcome) => {
          observe(stats, outcome, () => connection.log());
        },
      }),
  });
}

function whosonServer(
  tcp: StreamServer,
  udp: dgram.Socket | undefined,
  stats: WhosonServerStats,
): WhosonServer {
  let closing: Promise<void> | undefined;
  const close = async () => {
    const udpClosed = new Promise<void>((resolve) => {
      if (udp === undefined) resolve();
      else udp.close(resolve);
    });
    await Promise.all([tcp.close(), udpClosed]);
  };
  return {
    address: tcp.address,
    udpAddress: udp === undefined ? undefined : formatListenAddress(udp.address()),
    stats,
    close: () => (closing ??= close()),
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
function observe(stats: WhosonServerStats, outcome: WhosonOutcome, log: () => Logger): void {
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
      log().error({ err: outcome.error }, "whoson lookup failed; answered *");
      break;
    case "refused":
      stats.refused++;
      log().info({ verb: outcome.request.verb }, "whoson update refused");
      break;
    case "unknown-command":
      stats.unknownCommands++;
      break;
    case "quit":
      break;
  }
  const debug = log();
  if (debug.isLevelEnabled("debug")) {
    debug.debug(
      { request: outcome.request, reply: outcome.reply, reason: outcome.reason },
      "whoson reply",
    );
  }
}

/** UDP on the TCP server's address and port. */
function bindUdp(tcpAddress: string): Promise<dgram.Socket> {
  const where = parseListenAddress(tcpAddress);
  if (!("port" in where)) throw new Error(`whoson UDP needs a host:port, not ${tcpAddress}`);
  const socket = dgram.createSocket(where.host.includes(":") ? "udp6" : "udp4");
  return new Promise((resolve, reject) => {
    socket.once("error", (err) => {
      socket.close();
      reject(err);
    });
    socket.bind(where.port, where.host, () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/** Answers each datagram with one datagram to its source. */
function serveUdp(socket: dgram.Socket, settings: Settings, log: Logger): void {
  const { stats, warn } = settings;
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
    let peerLog: Logger | undefined;
    const logOf = () =>
      (peerLog ??= log.child({ peer: `${rinfo.address}:${rinfo.port}`, transport: "udp" }));
    const outcome = answerWhoson(request, settings.lookup);
    observe(stats, outcome, logOf);
    socket.send(encodeWhosonReply(outcome.reply), rinfo.port, rinfo.address, (err) => {
      if (err) logOf().debug({ err }, "whoson reply not sent");
    });
  });
}
