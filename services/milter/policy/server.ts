/**
 * Postfix policy delegation server: the socket layer over PolicySession.
 *
 * Accepts connections from Postfix smtpd (`check_policy_service inet:host:port` or `unix:/path`)
 * on a TCP address or a unix socket, and answers each request with `answer`'s action.
 *
 * Budget and limits, and what happens at each:
 * - `maxConnections` (1000): Postfix holds one connection per smtpd process per policy service,
 *   and its default process limit is 100; a connection beyond the limit is closed at once
 *   (counted in `stats.rejected`, logged once per episode) and Postfix retries it later.
 * - `idleTimeoutMs` (330 s): Postfix closes an idle policy connection itself after
 *   `smtpd_policy_service_max_idle` (300 s); waiting a little longer lets Postfix, not us, end it,
 *   so a request never races our close. A dead peer is dropped after this.
 * - `limits` (codec.ts): a request over them is a ProtocolError: warning, `stats.protocolErrors`,
 *   connection closed (SMTPD_POLICY_README: "log a warning and disconnect").
 * - Back-pressure: a connection is not read while its replies are pending or not yet flushed, so
 *   a peer that pipelines without reading costs one chunk plus one unfinished request.
 * - `close()`: stop listening, let pending replies flush, end every connection; whatever is still
 *   open after `closeTimeoutMs` (2 s) is destroyed.
 */
import net from "node:net";
import type { Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { bind } from "../../../shared/listen.ts";
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

/** Counters for the lead's metrics; plain numbers, read them whenever. */
export interface PolicyServerStats {
  /** Open now. */
  connections: number;
  accepted: number;
  /** Closed at once because `maxConnections` were open. */
  rejected: number;
  requests: number;
  protocolErrors: number;
  /** `answer` threw or rejected; the connection was closed. */
  answerErrors: number;
}

export interface PolicyServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<PolicyServerStats>;
  close(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS = 1000;
const DEFAULT_IDLE_TIMEOUT_MS = 330_000;
const DEFAULT_CLOSE_TIMEOUT_MS = 2_000;

interface Settings {
  answer: PolicyAnswer;
  limits: PolicyLimits;
  idleTimeoutMs: number;
  log: Logger;
  stats: PolicyServerStats;
}

export async function startPolicyServer(options: PolicyServerOptions): Promise<PolicyServer> {
  const log = options.log.child({ module: "policy" });
  const stats: PolicyServerStats = {
    connections: 0,
    accepted: 0,
    rejected: 0,
    requests: 0,
    protocolErrors: 0,
    answerErrors: 0,
  };
  const settings: Settings = {
    answer: options.answer,
    limits: options.limits ?? DEFAULT_POLICY_LIMITS,
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
    log.error({ err }, "policy server error");
  });
  log.info({ address, maxConnections }, "policy server listening");

  let closing: Promise<void> | undefined;
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  return {
    address,
    stats,
    close: () => (closing ??= shutdown(server, connections, closeTimeoutMs)),
  };
}

/** Serves each accepted socket and keeps the set of open ones; counts what maxConnections drops. */
function track(server: net.Server, settings: Settings, log: Logger): Set<PolicyConnection> {
  const { stats } = settings;
  const connections = new Set<PolicyConnection>();
  let atLimit = false;
  let next = 0;
  server.on("connection", (socket) => {
    stats.accepted++;
    stats.connections++;
    const conn = new PolicyConnection(socket, ++next, settings);
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
    log.warn({ maxConnections, peer: info?.remoteAddress }, "policy connection limit reached");
  });
  return connections;
}

async function shutdown(
  server: net.Server,
  connections: Set<PolicyConnection>,
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
class PolicyConnection {
  readonly #socket: net.Socket;
  readonly #session: PolicySession;
  readonly #log: Logger;
  readonly #stats: PolicyServerStats;
  readonly #answer: PolicyAnswer;
  /** Chunks handed to the session whose replies are not written yet. */
  #pending = 0;
  /** The kernel buffer is full; wait for "drain" before reading more. */
  #blocked = false;
  /** Peer ended its side, or the server is closing: finish pending replies, then end. */
  #ending = false;

  constructor(socket: net.Socket, id: number, settings: Settings) {
    this.#socket = socket;
    this.#stats = settings.stats;
    this.#answer = settings.answer;
    this.#log = settings.log.child({ module: "policy", conn: id, peer: peerOf(socket) });
    this.#session = new PolicySession((request) => this.#respond(request), settings.limits);
    socket.setTimeout(settings.idleTimeoutMs);
    socket.on("data", (chunk: Buffer) => void this.#receive(chunk));
    socket.on("end", () => {
      this.#onPeerEnd();
    });
    socket.on("timeout", () => {
      this.#onIdle();
    });
    socket.on("error", (err) => {
      this.#log.debug({ err }, "policy socket error");
    });
    socket.on("close", () => {
      this.#log.debug("policy connection closed");
    });
    this.#log.debug("policy connection opened");
  }

  /** Server shutdown: answer what was asked, then end. */
  shutdown(): void {
    this.#socket.pause();
    this.#endWhenIdle();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  async #respond(request: PolicyRequest): Promise<string> {
    this.#stats.requests++;
    const action = await this.#answer(request);
    if (this.#log.isLevelEnabled("debug")) {
      this.#log.debug({ request: pick(request), action }, "policy reply");
    }
    return action;
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
      this.#log.warn({ err }, "policy protocol error; closing connection");
    } else {
      this.#stats.answerErrors++;
      this.#log.error({ err }, "policy answer failed; closing connection");
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
    this.#log.debug("policy connection idle; closing");
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

/** The attributes worth a debug line, nested under "request" by the caller. */
function pick(request: PolicyRequest): Record<string, string | undefined> {
  return {
    protocol_state: request.get("protocol_state"),
    client_address: request.get("client_address"),
    instance: request.get("instance"),
  };
}
