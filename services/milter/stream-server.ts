/**
 * The socket layer the request/reply front doors share (Postfix policy, socketmap, milter,
 * whoson over TCP): listen on a TCP address or a unix socket, hand each connection's bytes to its
 * session, write the replies, and keep the rules below. A session is a synchronous state machine over bytes (the decision
 * reads an in-memory mirror): one `receive` per chunk, its replies written at once, no promise
 * and no pause per request; at an MTA's pace this layer is most of what a request costs.
 *
 * Budget and limits, and what happens at each:
 * - `maxConnections` (1000 unless a door says otherwise): a connection beyond it is closed at once (counted in `stats.rejected`,
 *   logged once per episode); the MTA retries later or fails closed.
 * - `idleTimeoutMs`: a connection that sends nothing this long is closed (a dead peer, or an MTA
 *   that forgot it); each door picks a time longer than its MTA's own idle close. A session may
 *   name another time for its present phase (`timeoutMs`: the milter's negotiation and frames).
 *   One sweep per server finds the silent connections, up to a fifth of the shortest time late:
 *   a Node socket timeout is a timer re-armed on every read and write, about 30 000 of a milter
 *   connection's 230 000 instructions (under valgrind, as bench/milter-instructions.ts counts).
 *   The sweep also keeps the clock a connection reads when it hears from its peer, so a chunk
 *   costs no clock reading.
 * - A session that is over (`closed`: a milter or whoson QUIT) ends the connection after its
 *   replies.
 * - A door may turn a peer away at once (`refuse`: whoson's allow list) with a last reply.
 * - A session throwing ProtocolError (bad framing, a limit) or anything else (an answer that
 *   failed): warning or error, `stats.protocolErrors` or `stats.answerErrors`, replies already
 *   written flushed, that connection closed; the others are unaffected.
 * - Back-pressure: while a write waits for the kernel, the connection is not read, so a peer
 *   that pipelines without reading costs one chunk plus one unfinished request.
 * - A peer that half-closes after its request still gets the reply: it is written as the request
 *   is read, before the end is seen; the connection then closes once what is written is flushed.
 * - `close()`: stop listening, end every connection once its replies are flushed; whatever is
 *   still open after `closeTimeoutMs` is destroyed.
 */
import net from "node:net";
import { performance } from "node:perf_hooks";
import { bind } from "../../shared/listen.ts";
import type { Logger } from "../../shared/log.ts";
import { ProtocolError } from "../../shared/protocol-error.ts";
import { OpenConnections } from "./open-connections.ts";

/** One connection's protocol state, without the socket. */
export interface StreamSession {
  /**
   * The replies for every request `chunk` completes (empty if none). Throws ProtocolError on
   * input that breaks the protocol, anything else when an answer failed: the connection closes.
   */
  receive(chunk: Buffer): Buffer;
  /** Bytes held of an unfinished request. */
  readonly buffered: number;
  /** True once the session is over: the connection ends after its replies. */
  readonly closed?: boolean;
  /** How long the connection may now stay silent, when the phase decides; else idleTimeoutMs. */
  timeoutMs?(): number;
}

/** What a session may know of its connection; `log()` makes its logger on first use. */
export interface StreamConnection {
  readonly id: number;
  /** Whether its logger takes debug lines: asked of pino once per server, not per request. */
  readonly debug: boolean;
  log(): Logger;
}

export interface StreamServerOptions {
  /** The door's name, for log lines and the logger's module: "policy", "socketmap". */
  name: string;
  /** "host:port", "[ipv6]:port" or a unix socket path (parseListenAddress). */
  listen: string;
  log: Logger;
  /** Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number | undefined;
  idleTimeoutMs: number;
  /** Default DEFAULT_CLOSE_TIMEOUT_MS. */
  closeTimeoutMs?: number | undefined;
  /**
   * SO_KEEPALIVE on each TCP connection (not on a unix socket's), with the kernel's timers
   * (net.ipv4.tcp_keepalive_time, which a pod may set), as libmilter does: one system call, made
   * by the server as it accepts. Node's own delay would take four.
   */
  keepAlive?: boolean;
  /**
   * Turns a peer away at once: the bytes returned are written and the connection ended, with no
   * session and not counted as accepted (the door counts its refusals itself).
   */
  refuse?: (socket: net.Socket) => Buffer | undefined;
  session: (connection: StreamConnection) => StreamSession;
  /** Counted into, if given: a door's own stats object, which may hold more counters. */
  stats?: StreamServerStats;
}

/** Counters for the role's metrics; plain numbers, read them whenever. */
export interface StreamServerStats {
  /** Open now. */
  connections: number;
  accepted: number;
  /** Closed at once because `maxConnections` were open. */
  rejected: number;
  protocolErrors: number;
  /** The session failed to answer; the connection was closed. */
  answerErrors: number;
}

export interface StreamServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<StreamServerStats>;
  close(): Promise<void>;
}

/** Every door's budget unless it sets its own: MTAs hold one connection per process at most. */
export const DEFAULT_MAX_CONNECTIONS = 1000;
export const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;

export function newStreamServerStats(): StreamServerStats {
  return { connections: 0, accepted: 0, rejected: 0, protocolErrors: 0, answerErrors: 0 };
}

export async function startStreamServer(options: StreamServerOptions): Promise<StreamServer> {
  const log = options.log.child({ module: options.name });
  const stats = options.stats ?? newStreamServerStats();
  // Half-open: the peer's end is ours to answer (#peerEnded), with a close and no shutdown.
  const server = net.createServer({ allowHalfOpen: true, keepAlive: options.keepAlive === true });
  const debug = log.isLevelEnabled("debug");
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  server.maxConnections = maxConnections;
  const connections = new OpenConnections<Connection>();
  const silence = new SilenceSweep(connections);
  let atLimit = false;
  let next = 0;
  server.on("connection", (socket) => {
    const refusal = options.refuse?.(socket);
    if (refusal !== undefined) {
      socket.on("error", () => undefined);
      socket.end(refusal);
      return;
    }
    stats.accepted++;
    stats.connections++;
    const connection = new Connection(socket, ++next, options, log, stats, silence, debug);
    connections.add(connection);
    socket.on("close", () => {
      connections.delete(connection);
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
    log.warn(
      { maxConnections, peer: info?.remoteAddress },
      `${options.name} connection limit reached`,
    );
  });
  const address = await bind(server, options.listen);
  server.on("error", (err) => {
    log.error({ err }, `${options.name} server error`);
  });
  log.info({ address, maxConnections }, `${options.name} server listening`);
  let closing: Promise<void> | undefined;
  return {
    address,
    stats,
    close: () =>
      (closing ??= shutdown(
        server,
        connections,
        options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
      ).finally(() => {
        silence.stop();
      })),
  };
}

async function shutdown(
  server: net.Server,
  connections: OpenConnections<Connection>,
  closeTimeoutMs: number,
): Promise<void> {
  // server.close() calls back once the last connection is gone.
  const closed = new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  for (const connection of connections.list()) connection.end();
  const deadline = setTimeout(() => {
    for (const connection of connections.list()) connection.destroy();
  }, closeTimeoutMs);
  await closed;
  clearTimeout(deadline);
}

/**
 * Closes connections silent past their time; runs every tenth of the shortest time seen, and
 * reads the clock for the connections then (performance.now() ms).
 */
class SilenceSweep {
  readonly #connections: OpenConnections<Connection>;
  #everyMs = Infinity;
  #now = performance.now();
  #timer: NodeJS.Timeout | undefined;

  constructor(connections: OpenConnections<Connection>) {
    this.#connections = connections;
  }

  /** A connection may now stay silent `ms`: sweep often enough to notice within a tenth of it. */
  allow(ms: number): void {
    const everyMs = Math.min(Math.max(ms / 10, 10), 1000);
    if (everyMs >= this.#everyMs) return;
    this.#everyMs = everyMs;
    this.#now = performance.now();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => {
      this.#sweep();
    }, everyMs).unref();
  }

  /**
   * When a connection heard from now counts as silent after `ms`. The clock is the last sweep's,
   * at most one interval behind, so one interval is added: never early, at most two late.
   */
  deadline(ms: number): number {
    return this.#now + ms + this.#everyMs;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #sweep(): void {
    const now = performance.now();
    this.#now = now;
    for (const connection of this.#connections.list()) connection.closeIfSilent(now);
  }
}

/** One accepted socket: feeds its session, writes the replies, keeps the socket's rules. */
class Connection implements StreamConnection {
  readonly id: number;
  readonly debug: boolean;
  /** Its place among the server's OpenConnections; -1 when not there. */
  openIndex = -1;
  readonly #socket: net.Socket;
  readonly #session: StreamSession;
  readonly #name: string;
  readonly #parentLog: Logger;
  readonly #stats: StreamServerStats;
  readonly #idleTimeoutMs: number;
  readonly #silence: SilenceSweep;
  #log: Logger | undefined;
  #timeoutMs = -1;
  /** When the connection counts as silent (performance.now() time). */
  #silentAt = Infinity;

  constructor(
    socket: net.Socket,
    id: number,
    options: StreamServerOptions,
    log: Logger,
    stats: StreamServerStats,
    silence: SilenceSweep,
    debug: boolean,
  ) {
    this.id = id;
    this.debug = debug;
    this.#silence = silence;
    this.#socket = socket;
    this.#name = options.name;
    this.#parentLog = log;
    this.#stats = stats;
    this.#idleTimeoutMs = options.idleTimeoutMs;
    this.#session = options.session(this);
    this.#armSilence();
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("end", () => {
      this.#peerEnded();
    });
    socket.on("error", (err) => {
      this.log().debug({ err }, `${this.#name} socket error`);
    });
    if (debug) {
      this.log().debug(`${this.#name} connection opened`);
      socket.on("close", () => {
        this.log().debug(`${this.#name} connection closed`);
      });
    }
  }

  /** Starts the silence time of the session's present phase afresh. */
  #armSilence(): void {
    const ms = this.#session.timeoutMs?.() ?? this.#idleTimeoutMs;
    if (ms !== this.#timeoutMs) {
      this.#timeoutMs = ms;
      this.#silence.allow(ms);
    }
    this.#silentAt = this.#silence.deadline(ms);
  }

  closeIfSilent(now: number): void {
    if (now < this.#silentAt) return;
    this.#silentAt = Infinity;
    this.log().debug({ timeoutMs: this.#timeoutMs }, `${this.#name} connection silent; closing`);
    this.#socket.destroy();
  }

  /** This connection's logger, made on first use: most connections log nothing. */
  log(): Logger {
    this.#log ??= this.#parentLog.child({ conn: this.id, peer: peerOf(this.#socket) });
    return this.#log;
  }

  /** Server shutdown, a failed session: read nothing more, end once the replies are flushed. */
  end(): void {
    this.#socket.pause();
    this.#socket.destroySoon();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    let replies: Buffer;
    try {
      replies = this.#session.receive(chunk);
    } catch (err) {
      this.#fail(err);
      return;
    }
    const socket = this.#socket;
    if (replies.length > 0 && socket.writable && !socket.write(replies)) {
      socket.pause();
      socket.once("drain", () => {
        this.#armSilence(); // the peer reads: not silent
        if (socket.writable) socket.resume();
      });
    }
    if (this.#session.closed === true) {
      this.#close();
      return;
    }
    this.#armSilence();
  }

  /**
   * The peer has closed its side (Postfix after a milter ACCEPT at CONNECT, or after QUIT): every
   * reply is already written. Closing at once sends our FIN with no shutdown(2) and no wait for
   * Node's end of stream, about 10 000 of the 73 000 instructions a bare Node milter spends on a
   * connection (bench/milter-instructions.ts); a reply still queued is flushed first.
   */
  #peerEnded(): void {
    if (this.debug && this.#session.buffered > 0) {
      this.log().debug({ bytes: this.#session.buffered }, "peer closed mid-request");
    }
    this.#close();
  }

  /** Closes once what is written has reached the kernel, which sends it before the FIN. */
  #close(): void {
    if (this.#socket.writableLength === 0) this.#socket.destroy();
    else this.end();
  }

  #fail(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.#stats.protocolErrors++;
      this.log().warn({ err }, `${this.#name} protocol error; closing connection`);
    } else {
      this.#stats.answerErrors++;
      this.log().error({ err }, `${this.#name} answer failed; closing connection`);
    }
    this.end();
  }
}

function peerOf(socket: net.Socket): string {
  const { remoteAddress, remotePort } = socket;
  if (remoteAddress === undefined) return "unix";
  return remoteAddress.includes(":")
    ? `[${remoteAddress}]:${remotePort ?? 0}`
    : `${remoteAddress}:${remotePort ?? 0}`;
}
