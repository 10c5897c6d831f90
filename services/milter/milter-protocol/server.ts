/**
 * Milter server: MilterSession over the shared socket layer (../stream-server.ts, which states
 * the rules every connection keeps), RELAYLEASE_MILTER_LISTEN.
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
 *   timeouts, so the MTA, not us, ends a quiet session. TCP keep-alive is on with the kernel's
 *   timers, as libmilter has it: where net.ipv4.tcp_keepalive_time is set lower, it finds dead
 *   peers sooner.
 * - No TCP_NODELAY (libmilter sets none either): each reply is one write answering a command
 *   whose segment acknowledged the reply before, so Nagle's algorithm never holds one back.
 * - `maxFrameLength` (codec.ts, 64 KiB): a longer frame, length 0 or a malformed payload is a
 *   ProtocolError: warning, `stats.protocolErrors`, that connection closed, others unaffected.
 * - decide() throwing is our bug: error log, `stats.answerErrors`; the session answers 451.
 * - `close()`: stop listening, end every connection; destroy what is open after `closeTimeoutMs`.
 */
import type { Logger } from "../../../shared/log.ts";
import type { AcceptAt, Decision, RelayRequest } from "../decide.ts";
import {
  newStreamServerStats,
  startStreamServer,
  type StreamSession,
  type StreamServerStats,
} from "../stream-server.ts";
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
export interface MilterServerStats extends StreamServerStats {
  /** Relay decisions asked (CONNECT and RCPT). */
  requests: number;
}

export interface MilterServer {
  /** Where it listens, "host:port" / "[v6]:port" / path: the port is real even if 0 was asked. */
  readonly address: string;
  readonly stats: Readonly<MilterServerStats>;
  close(): Promise<void>;
}

export const MILTER_SERVER_DEFAULTS = Object.freeze({
  negotiateTimeoutMs: 10_000,
  frameTimeoutMs: 30_000,
  idleTimeoutMs: 7_210_000,
  maxFrameLength: DEFAULT_MAX_FRAME_LENGTH,
});

export async function startMilterServer(options: MilterServerOptions): Promise<MilterServer> {
  const d = MILTER_SERVER_DEFAULTS;
  const o = {
    ...options,
    negotiateTimeoutMs: options.negotiateTimeoutMs ?? d.negotiateTimeoutMs,
    frameTimeoutMs: options.frameTimeoutMs ?? d.frameTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? d.idleTimeoutMs,
    maxFrameLength: options.maxFrameLength ?? d.maxFrameLength,
  };
  const stats: MilterServerStats = { ...newStreamServerStats(), requests: 0 };
  const server = await startStreamServer({
    name: "milter",
    listen: o.listen,
    log: o.log,
    maxConnections: o.maxConnections,
    idleTimeoutMs: o.idleTimeoutMs,
    closeTimeoutMs: o.closeTimeoutMs,
    keepAlive: true,
    stats,
    session: (connection) => {
      const session = new MilterSession({
        decide: (request) => {
          stats.requests++;
          const d = o.decide(request);
          if (connection.debug) {
            const { verdict, reason } = d;
            connection.log().debug({ request, verdict, reason }, "milter decision");
          }
          return d;
        },
        acceptAt: o.acceptAt,
        rejectText: o.rejectText,
        maxFrameLength: o.maxFrameLength,
        onDecisionError: (err) => {
          stats.answerErrors++;
          connection.log().error({ err }, "relay decision failed; answered tempfail");
        },
      });
      return new MilterStreamSession(session, o);
    },
  });
  return { address: server.address, stats, close: () => server.close() };
}

interface SessionTimeouts {
  readonly negotiateTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/**
 * A MilterSession as the socket layer drives it, with the milter's timeouts. A class, not an
 * object literal with getters: V8 keeps what a literal's getters capture (here the session and
 * all it holds) alive through young-generation collections until the next full one. Under
 * `node --trace-gc` a literal with two getters, made per connection, gave 20 ms scavenges where
 * this class gives 0.1 ms; the role promoted about 1.6 KB a connection.
 */
class MilterStreamSession implements StreamSession {
  readonly #session: MilterSession;
  readonly #timeouts: SessionTimeouts;

  constructor(session: MilterSession, timeouts: SessionTimeouts) {
    this.#session = session;
    this.#timeouts = timeouts;
  }

  receive(chunk: Buffer): Buffer {
    return this.#session.receive(chunk);
  }

  get buffered(): number {
    return this.#session.buffered;
  }

  get closed(): boolean {
    return this.#session.closed;
  }

  /**
   * Negotiation must come at once; a frame once begun must finish; between frames the
   * connection idles as long as the SMTP session does.
   */
  timeoutMs(): number {
    const t = this.#timeouts;
    if (this.#session.negotiated === undefined) return t.negotiateTimeoutMs;
    return this.#session.buffered > 0 ? t.frameTimeoutMs : t.idleTimeoutMs;
  }
}
