/**
 * ONC RPC server: the socket layer under the DRAC program and the portmapper. One listen address
 * `host:port` serves UDP (one call per datagram, what every libdrac client uses) and TCP (record
 * marking) on the same port, as rpcbind and rpc.dracd do.
 *
 * `onOutcome` runs only once the reply has been handed to the kernel (the send or write callback),
 * so whatever an outcome triggers (a login handed on to the publisher) never delays the caller: a
 * libdrac client blocks its POP/IMAP login until the reply arrives (drac-rpc.md 2.6).
 *
 * Budget and limits, and what happens at each:
 * - `limits.maxRecordBytes` (8 KiB): a larger datagram is dropped; a larger TCP record, or one
 *   with more than `limits.maxFragments` fragments, closes the connection.
 * - A message that is not a decodable CALL: the datagram is dropped without reply (libtirpc's
 *   svc_dg does the same), the TCP connection closed. Warned at most once per WARN_INTERVAL_MS.
 * - `maxConnections` (64): TCP connections beyond it are closed at once (`stats.rejected`).
 *   libdrac uses UDP; TCP is for the odd client, so a small budget suffices.
 * - `idleTimeoutMs` (60 s): a TCP connection with no traffic is closed.
 * - `recordTimeoutMs` (10 s): a TCP record begun must be complete within this, so a peer cannot
 *   hold a connection by trickling a record.
 * - Back-pressure: a TCP connection is not read while its replies wait for the kernel to drain.
 * - `close()`: stops both listeners, ends every connection; whatever is open after
 *   `closeTimeoutMs` (2 s) is destroyed.
 */
import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import net from "node:net";
import { tryParseAddress } from "../../../shared/address.ts";
import { parseListenAddress } from "../../../shared/listen-address.ts";
import { rateLimitedWarn, type Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { DEFAULT_RECORD_LIMITS, type RecordLimits } from "./record-marking.ts";
import { RpcStreamSession, dispatch } from "./session.ts";
import type { CallContext, CallOutcome, RpcProgram } from "./session.ts";

export interface RpcServerOptions {
  /** "host:port" or "[ipv6]:port"; a host name is resolved once, at start. */
  listen: string;
  programs: readonly RpcProgram[];
  log: Logger;
  /** Runs after the reply to each answered call has reached the kernel (or failed). Must not throw. */
  onOutcome?: (outcome: CallOutcome, ctx: CallContext) => void;
  maxConnections?: number;
  idleTimeoutMs?: number;
  recordTimeoutMs?: number;
  closeTimeoutMs?: number;
  limits?: RecordLimits;
}

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface RpcServerStats {
  udpMessages: number;
  tcpMessages: number;
  /** Messages that were not a decodable CALL or were over the limits. */
  protocolErrors: number;
  /** TCP connections open now, accepted in all, refused at maxConnections, timed out. */
  connections: number;
  accepted: number;
  rejected: number;
  timeouts: number;
  /** Answered calls by outcome: "added", "denied", "getport", "prog-mismatch", ... */
  readonly events: Record<string, number>;
}

export interface RpcServer {
  /** "host:port" actually bound (the real port even if 0 was asked), the same for UDP and TCP. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** True for 0.0.0.0 and ::, where the host says nothing about where clients should connect. */
  readonly wildcard: boolean;
  readonly stats: Readonly<RpcServerStats>;
  close(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS = 64;
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_RECORD_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;
/** How often a flood of bad datagrams may produce a warning line. */
const WARN_INTERVAL_MS = 10_000;
/** Attempts to find a port free for both UDP and TCP when port 0 is asked for. */
const PORT_ATTEMPTS = 10;

interface Shared {
  programs: readonly RpcProgram[];
  log: Logger;
  onOutcome: (outcome: CallOutcome, ctx: CallContext) => void;
  limits: RecordLimits;
  stats: RpcServerStats;
  warn: (fields: object, msg: string) => void;
  localHost: string | undefined;
}

export async function startRpcServer(options: RpcServerOptions): Promise<RpcServer> {
  const where = parseListenAddress(options.listen);
  if ("path" in where) {
    throw new Error(
      `invalid listen address ${JSON.stringify(options.listen)}: ONC RPC needs host:port (UDP has no unix socket)`,
    );
  }
  const { address: host, family } = await lookup(where.host);
  const wildcard = host === "0.0.0.0" || host === "::";
  const stats: RpcServerStats = {
    udpMessages: 0,
    tcpMessages: 0,
    protocolErrors: 0,
    connections: 0,
    accepted: 0,
    rejected: 0,
    timeouts: 0,
    events: {},
  };
  const shared: Shared = {
    programs: options.programs,
    log: options.log,
    onOutcome: options.onOutcome ?? (() => undefined),
    limits: options.limits ?? DEFAULT_RECORD_LIMITS,
    stats,
    warn: rateLimitedWarn(options.log, WARN_INTERVAL_MS),
    localHost: wildcard ? undefined : host,
  };
  const { udp, tcp, port } = await bindBoth(host, family === 6 ? "udp6" : "udp4", where.port);
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  serveUdp(udp, shared);
  const connections = serveTcp(tcp, shared, {
    maxConnections,
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    recordTimeoutMs: options.recordTimeoutMs ?? DEFAULT_RECORD_TIMEOUT_MS,
  });
  const address = family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  options.log.info({ address, maxConnections }, "RPC server listening (UDP and TCP)");
  let closing: Promise<void> | undefined;
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  return {
    address,
    host,
    port,
    wildcard,
    stats,
    close: () => (closing ??= shutdown(udp, tcp, connections, closeTimeoutMs)),
  };
}

async function bindBoth(
  host: string,
  type: "udp4" | "udp6",
  port: number,
): Promise<{ udp: dgram.Socket; tcp: net.Server; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const udp = dgram.createSocket({ type, ipv6Only: false });
    await new Promise<void>((resolve, reject) => {
      udp.once("error", (err) => {
        udp.close();
        reject(err);
      });
      udp.bind({ address: host, port, exclusive: true }, () => {
        udp.removeAllListeners("error");
        resolve();
      });
    });
    const bound = udp.address().port;
    const tcp = net.createServer({ allowHalfOpen: false });
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen({ host, port: bound, exclusive: true }, () => {
          tcp.off("error", reject);
          resolve();
        });
      });
      return { udp, tcp, port: bound };
    } catch (err) {
      udp.close();
      const inUse = (err as NodeJS.ErrnoException).code === "EADDRINUSE";
      if (port !== 0 || !inUse || attempt >= PORT_ATTEMPTS) throw err;
    }
  }
}

function count(stats: RpcServerStats, event: string): void {
  stats.events[event] = (stats.events[event] ?? 0) + 1;
}

function serveUdp(udp: dgram.Socket, shared: Shared): void {
  const { stats, limits, log } = shared;
  udp.on("message", (msg, rinfo) => {
    stats.udpMessages++;
    const peer = `${rinfo.address}:${rinfo.port}`;
    if (msg.length > limits.maxRecordBytes) {
      stats.protocolErrors++;
      shared.warn({ peer, bytes: msg.length }, "RPC datagram over the size limit; dropped");
      return;
    }
    const ctx: CallContext = {
      caller: tryParseAddress(rinfo.address),
      transport: "udp",
      localHost: shared.localHost,
    };
    let answered;
    try {
      answered = dispatch(msg, shared.programs, ctx);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      stats.protocolErrors++;
      shared.warn({ peer, err: err.message }, "RPC datagram is not a valid call; dropped");
      return;
    }
    count(stats, answered.outcome.event);
    const { outcome } = answered;
    // The outcome runs once the kernel has the reply: the caller is released first.
    udp.send(answered.reply, rinfo.port, rinfo.address, (err) => {
      if (err) log.debug({ peer, err }, "RPC reply not sent");
      shared.onOutcome(outcome, ctx);
    });
  });
  udp.on("error", (err) => {
    log.error({ err }, "RPC UDP socket error");
  });
}

interface TcpSettings {
  maxConnections: number;
  idleTimeoutMs: number;
  recordTimeoutMs: number;
}

function serveTcp(tcp: net.Server, shared: Shared, settings: TcpSettings): Set<net.Socket> {
  const { stats, log } = shared;
  const connections = new Set<net.Socket>();
  tcp.maxConnections = settings.maxConnections;
  let next = 0;
  tcp.on("connection", (socket) => {
    stats.accepted++;
    stats.connections++;
    connections.add(socket);
    socket.once("close", () => {
      connections.delete(socket);
      stats.connections--;
    });
    serveConnection(socket, ++next, shared, settings);
  });
  tcp.on("drop", (info) => {
    stats.rejected++;
    shared.warn(
      { peer: info?.remoteAddress, maxConnections: settings.maxConnections },
      "RPC TCP connection limit reached",
    );
  });
  tcp.on("error", (err) => {
    log.error({ err }, "RPC TCP server error");
  });
  return connections;
}

function serveConnection(
  socket: net.Socket,
  id: number,
  shared: Shared,
  settings: TcpSettings,
): void {
  const { stats } = shared;
  const peer = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`;
  const log = shared.log.child({ conn: id, peer });
  const ctx: CallContext = {
    caller: tryParseAddress(socket.remoteAddress ?? ""),
    transport: "tcp",
    localHost: shared.localHost ?? socket.localAddress,
  };
  const session = new RpcStreamSession(shared.programs, ctx, shared.limits);
  let recordTimer: NodeJS.Timeout | undefined;
  const timedOut = (what: string) => () => {
    stats.timeouts++;
    log.debug(`RPC connection ${what}; closing`);
    socket.destroy();
  };
  socket.setTimeout(settings.idleTimeoutMs, timedOut("idle"));
  socket.on("data", (chunk: Buffer) => {
    let received;
    try {
      received = session.receive(chunk);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      stats.protocolErrors++;
      shared.warn({ peer, err: err.message }, "RPC record is not a valid call; closing connection");
      socket.destroy();
      return;
    }
    if (session.buffered === 0) {
      clearTimeout(recordTimer);
      recordTimer = undefined;
    } else {
      recordTimer ??= setTimeout(timedOut("record timeout"), settings.recordTimeoutMs);
    }
    const { outcomes } = received;
    stats.tcpMessages += outcomes.length;
    for (const outcome of outcomes) count(stats, outcome.event);
    if (received.reply.length === 0) return;
    // The outcomes run once the replies are flushed (or failed to be): the caller is released first.
    const flushed = socket.write(received.reply, () => {
      for (const outcome of outcomes) shared.onOutcome(outcome, ctx);
    });
    if (!flushed) {
      socket.pause();
      socket.once("drain", () => socket.resume());
    }
  });
  socket.on("close", () => {
    clearTimeout(recordTimer);
  });
  socket.on("error", (err) => {
    log.debug({ err }, "RPC socket error");
  });
}

async function shutdown(
  udp: dgram.Socket,
  tcp: net.Server,
  connections: Set<net.Socket>,
  closeTimeoutMs: number,
): Promise<void> {
  const udpClosed = new Promise<void>((resolve) => {
    udp.close(() => {
      resolve();
    });
  });
  const tcpClosed = new Promise<void>((resolve) => {
    tcp.close(() => {
      resolve();
    });
  });
  for (const socket of connections) socket.end();
  const deadline = setTimeout(() => {
    for (const socket of connections) socket.destroy();
  }, closeTimeoutMs);
  await Promise.all([udpClosed, tcpClosed]);
  clearTimeout(deadline);
}
