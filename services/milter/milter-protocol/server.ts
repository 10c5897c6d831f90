/**
 * Milter server: the socket layer over MilterSession (RELAYLEASE_MILTER_LISTEN).
 *
 * Accepts connections from Postfix smtpd (`smtpd_milters = inet:host:port` or `unix:/path`) and
 * Sendmail (`S=inet:port@host`, `S=unix:/path`) on a TCP address or a unix socket: one connection
 * per SMTP session, many messages per connection. Answers each RCPT from `decide`.
 *
 * Budget and limits, and what happens at each:
 * - `maxConnections` (1000): one connection per SMTP session; Postfix's default process limit is
 *   100 smtpd. Beyond the limit a connection is closed at once (`stats.rejected`, one warning per
 *   episode); the MTA then applies its milter default action (it must be tempfail: Postfix
 *   `milter_default_action = tempfail`, Sendmail `F=T`).
 * - `negotiateTimeoutMs` (10 s): OPTNEG must arrive this soon after connecting; both MTAs send it
 *   at once (Postfix milter_connect_timeout is 30 s in all).
 * - `frameTimeoutMs` (30 s): a frame once begun must be complete within this (Postfix writes each
 *   packet at once; milter_command_timeout is 30 s), so a trickling peer cannot hold a slot.
 * - `idleTimeoutMs` (7210 s): between frames the connection idles as long as the SMTP session
 *   does; libmilter's MI_TIMEOUT, longer than Sendmail's 1 h and Postfix's 300 s command
 *   timeouts, so the MTA, not us, ends a quiet session. TCP keep-alive finds dead peers sooner.
 * - `maxFrameLength` (codec.ts, 64 KiB): a longer frame, length 0 or a malformed payload is a
 *   ProtocolError: warning, `stats.protocolErrors`, that connection closed, others unaffected.
 * - Back-pressure: a connection is not read while its replies are not flushed.
 * - decide() throwing is our bug: error log, `stats.answerErrors`; the session answers 451.
 * - `close()`: stop listening, end every connection; destroy what is open after `closeTimeoutMs`.
 */
import net from "node:net";
import type { Logger } from "../../../shared/log.ts";
import { bind } from "../../../shared/listen.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import type { AcceptAt, Decision, RelayRequest } from "../decide.ts";
import { DEFAULT_MAX_FRAME_LENGTH } from "./codec.ts";
import { MilterSession } from "./session.ts";

export interface MilterServerOptions {
  /** "host:port", "[ipv6]:port" or a unix socket path (parseListenAddress). */
  listen: string;
  decide: (request: RelayRequest) => Decision;
  acceptAt: AcceptAt;
  rejectText: string;
  log: Logger;
  maxConnections?: number;
  negotiateTimeoutMs?: number;
  frameTimeoutMs?: number;
  idleTimeoutMs?: number;
  closeTimeoutMs?: number;
  maxFrameLength?: number;
}

/** Counters for metrics (the same fields as the policy server's); plain numbers. */
export interface MilterServerStats {
  /** Open now. */
  connections: number;
  accepted: number;
  /** Closed at once because `maxConnections` were open. */
  rejected: number;
  /** Relay decisions asked (CONNECT and RCPT). */
  requests: number;
  protocolErrors: number;
  /** decide() threw (answered 451) or a reply could not be encoded (connection closed). */
  answerErrors: number;
}

export interface MilterServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<MilterServerStats>;
  close(): Promise<void>;
}

export const MILTER_SERVER_DEFAULTS = Object.freeze({
  maxConnections: 1000,
  negotiateTimeoutMs: 10_000,
  frameTimeoutMs: 30_000,
  idleTimeoutMs: 7_210_000,
  closeTimeoutMs: 2_000,
  maxFrameLength: DEFAULT_MAX_FRAME_LENGTH,
});

type Settings = Required<Omit<MilterServerOptions, "listen">> & { stats: MilterServerStats };

export async function startMilterServer(options: MilterServerOptions): Promise<MilterServer> {
  const log = options.log.child({ module: "milter" });
  const stats: MilterServerStats = {
    connections: 0,
    accepted: 0,
    rejected: 0,
    requests: 0,
    protocolErrors: 0,
    answerErrors: 0,
  };
  const d = MILTER_SERVER_DEFAULTS;
  const settings: Settings = {
    decide: options.decide,
    acceptAt: options.acceptAt,
    rejectText: options.rejectText,
    maxConnections: options.maxConnections ?? d.maxConnections,
    negotiateTimeoutMs: options.negotiateTimeoutMs ?? d.negotiateTimeoutMs,
    frameTimeoutMs: options.frameTimeoutMs ?? d.frameTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? d.idleTimeoutMs,
    closeTimeoutMs: options.closeTimeoutMs ?? d.closeTimeoutMs,
    maxFrameLength: options.maxFrameLength ?? d.maxFrameLength,
    log,
    stats,
  };
  const server = net.createServer();
  server.maxConnections = settings.maxConnections;
  const connections = track(server, settings);
  const address = await bind(server, options.listen);
  server.on("error", (err) => {
    log.error({ err }, "milter server error");
  });
  log.info({ address, maxConnections: settings.maxConnections }, "milter server listening");
  let closing: Promise<void> | undefined;
  return {
    address,
    stats,
    close: () => (closing ??= shutdown(server, connections, settings.closeTimeoutMs)),
  };
}

function track(server: net.Server, settings: Settings): Set<MilterConnection> {
  const { stats, log } = settings;
  const connections = new Set<MilterConnection>();
  let atLimit = false;
  let next = 0;
  server.on("connection", (socket) => {
    stats.accepted++;
    stats.connections++;
    const conn = new MilterConnection(socket, ++next, settings);
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
    log.warn({ maxConnections, peer: info?.remoteAddress }, "milter connection limit reached");
  });
  return connections;
}

async function shutdown(
  server: net.Server,
  connections: Set<MilterConnection>,
  closeTimeoutMs: number,
): Promise<void> {
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

/** One accepted socket: feeds the session, writes its replies, keeps the timeouts. */
class MilterConnection {
  readonly #socket: net.Socket;
  readonly #session: MilterSession;
  readonly #settings: Settings;
  readonly #id: number;
  #log: Logger | undefined;
  #timeoutMs = -1;

  constructor(socket: net.Socket, id: number, settings: Settings) {
    this.#socket = socket;
    this.#settings = settings;
    this.#id = id;
    const { stats } = settings;
    this.#session = new MilterSession({
      decide: (request) => {
        stats.requests++;
        const d = settings.decide(request);
        if (settings.log.isLevelEnabled("debug")) {
          this.#logger().debug(
            { request, verdict: d.verdict, reason: d.reason },
            "milter decision",
          );
        }
        return d;
      },
      acceptAt: settings.acceptAt,
      rejectText: settings.rejectText,
      maxFrameLength: settings.maxFrameLength,
      onDecisionError: (err) => {
        stats.answerErrors++;
        this.#logger().error({ err }, "relay decision failed; answered tempfail");
      },
    });
    // Postfix opens a connection per SMTP session, so its setup is on the hot path: the
    // connection's logger (a pino child) is made only when something is logged.
    socket.setNoDelay(true);
    if (socket.remoteAddress !== undefined) socket.setKeepAlive(true, 60_000);
    this.#setTimeout(settings.negotiateTimeoutMs);
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("timeout", () => {
      this.#logger().debug({ timeoutMs: this.#timeoutMs }, "milter connection timed out; closing");
      socket.destroy();
    });
    socket.on("error", (err) => {
      this.#logger().debug({ err }, "milter socket error");
    });
    if (settings.log.isLevelEnabled("debug")) {
      this.#logger().debug("milter connection opened");
      socket.on("close", () => {
        this.#logger().debug({ decisions: this.#session.decisions }, "milter connection closed");
      });
    }
  }

  /** This connection's logger, made on first use: most connections log nothing. */
  #logger(): Logger {
    this.#log ??= this.#settings.log.child({ conn: this.#id, peer: peerOf(this.#socket) });
    return this.#log;
  }

  shutdown(): void {
    this.#socket.pause();
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    let reply: Buffer;
    try {
      reply = this.#session.receive(chunk);
    } catch (err) {
      this.#fail(err);
      return;
    }
    if (reply.length > 0 && !this.#socket.write(reply)) {
      this.#socket.pause();
      this.#socket.once("drain", () => this.#socket.resume());
    }
    if (this.#session.closed) {
      this.#socket.end(); // QUIT: flush what was written, then close
      return;
    }
    const { negotiateTimeoutMs, frameTimeoutMs, idleTimeoutMs } = this.#settings;
    if (this.#session.negotiated === undefined) this.#setTimeout(negotiateTimeoutMs);
    else this.#setTimeout(this.#session.buffered > 0 ? frameTimeoutMs : idleTimeoutMs);
  }

  #setTimeout(ms: number): void {
    if (ms === this.#timeoutMs) return;
    this.#timeoutMs = ms;
    this.#socket.setTimeout(ms);
  }

  #fail(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.#settings.stats.protocolErrors++;
      this.#logger().warn({ err }, "milter protocol error; closing connection");
    } else {
      this.#settings.stats.answerErrors++;
      this.#logger().error({ err }, "milter session failed; closing connection");
    }
    this.#socket.destroySoon();
  }
}

function peerOf(socket: net.Socket): string {
  const { remoteAddress, remotePort } = socket;
  if (remoteAddress === undefined) return "unix";
  return remoteAddress.includes(":")
    ? `[${remoteAddress}]:${remotePort ?? 0}`
    : `${remoteAddress}:${remotePort ?? 0}`;
}
