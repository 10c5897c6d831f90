/**
 * The Dovecot auth policy login source (RELAYLEASE_DOVECOT_POLICY_LISTEN): an HTTP server for
 * Dovecot's `auth_policy_server_url` in report-only mode (login-sources.md 2.1). Every request is
 * answered at once, 200 `{"status":0,"msg":""}`, before its body is even read to the end: a policy
 * server must never reject or delay a login, and Dovecot ignores the body of a report reply. Then a
 * report of a successful IMAP/POP3 login (codec.ts) is handed to the sink (source
 * "dovecot-policy"); the sink must not block, and whatever it throws is logged and counted.
 *
 * Accepts from whoever can reach the listener, unless credentials are configured
 * (credentials.ts): then a request without them gets 401 and is not looked at. Dovecot logs a
 * non-2xx answer as an error and, with the default auth_policy_reject_on_fail = no, lets the login
 * through.
 *
 * Limits, and what happens at each:
 * - `maxBodyBytes` (16 KiB; a report is a few hundred bytes): the rest of a longer body is read
 *   and dropped, and no login is reported (`stats.oversized`). The answer was already 200.
 * - A body that is not Dovecot's JSON: warning (at most once per 10 s), `stats.badBodies`.
 * - `maxConnections` (256): Dovecot's auth process keeps a few keep-alive connections; beyond the
 *   limit a connection is closed at once.
 * - headers within 5 s, the whole request within 10 s, idle keep-alive connections closed after
 *   Node's default 5 s.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { listen } from "../../../shared/listen.ts";
import type { Logger } from "../../../shared/log.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { POLICY_REPLY, commandOf, judgePolicyRequest, parsePolicyBody } from "./codec.ts";
import type { IgnoreReason } from "./codec.ts";
import { credentialsMatch, parsePolicyCredentials } from "./credentials.ts";
import type { PolicyCredentials } from "./credentials.ts";

import type { LoginSink } from "../login-sink.ts";
export type { LoginSink };

export interface DovecotPolicyServerOptions {
  /** RELAYLEASE_DOVECOT_POLICY_LISTEN: "host:port", "[v6]:port" or a unix socket path. */
  listen: string;
  sink: LoginSink;
  log: Logger;
  /** The value of Dovecot's auth_policy_server_api_header ("Name: value", or a bare X-API-Key). */
  apiHeader?: string | undefined;
  /** "user:password", as in Dovecot's `http://user:password@host/` policy URL. */
  basicAuth?: string | undefined;
  maxBodyBytes?: number;
  maxConnections?: number;
}

export interface DovecotPolicyStats {
  requests: number;
  /** `command=report` requests with a readable body. */
  reports: number;
  /** Logins handed to the sink. */
  logins: number;
  /** Reports that were not a login, by reason. */
  readonly ignored: Partial<Record<IgnoreReason, number>>;
  unauthorized: number;
  badBodies: number;
  oversized: number;
  sinkErrors: number;
}

export interface DovecotPolicyServer {
  readonly address: string;
  readonly stats: Readonly<DovecotPolicyStats>;
  close(): Promise<void>;
}

export const DEFAULT_MAX_BODY_BYTES = 16 * 1024;
const DEFAULT_MAX_CONNECTIONS = 256;
const WARN_INTERVAL_MS = 10_000;

interface Context {
  sink: LoginSink;
  log: Logger;
  creds: PolicyCredentials;
  maxBodyBytes: number;
  stats: DovecotPolicyStats;
  warn: (fields: object, msg: string) => void;
}

/** @throws Error on bad credentials settings (naming the form) or if the address cannot be bound. */
export async function startDovecotPolicyServer(
  options: DovecotPolicyServerOptions,
): Promise<DovecotPolicyServer> {
  const log = options.log.child({ module: "dovecot-policy" });
  const stats: DovecotPolicyStats = {
    requests: 0,
    reports: 0,
    logins: 0,
    ignored: {},
    unauthorized: 0,
    badBodies: 0,
    oversized: 0,
    sinkErrors: 0,
  };
  let lastWarn = 0;
  const ctx: Context = {
    sink: options.sink,
    log,
    creds: parsePolicyCredentials(options.apiHeader, options.basicAuth),
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    stats,
    warn: (fields, msg) => {
      if (Date.now() - lastWarn < WARN_INTERVAL_MS) return;
      lastWarn = Date.now();
      log.warn(fields, msg);
    },
  };
  const server = createServer((req, res) => {
    handle(req, res, ctx);
  });
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  server.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const listening = await listen(server, options.listen);
  log.info(
    {
      address: listening.address,
      apiHeader: ctx.creds.apiHeader?.name,
      basicAuth: ctx.creds.basic !== undefined,
    },
    "Dovecot auth policy source listening",
  );
  return { address: listening.address, stats, close: () => listening.close() };
}

function handle(req: IncomingMessage, res: ServerResponse, ctx: Context): void {
  const { stats } = ctx;
  stats.requests++;
  if (!credentialsMatch(ctx.creds, req.headers)) {
    stats.unauthorized++;
    ctx.warn(
      { peer: req.socket.remoteAddress },
      "Dovecot policy request without the right credentials",
    );
    req.resume();
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (ctx.creds.basic !== undefined) headers["www-authenticate"] = 'Basic realm="relaylease"';
    res.writeHead(401, headers).end('{"error":"unauthorized"}\n');
    return;
  }
  const command = commandOf(req.url ?? "");
  const chunks: Buffer[] = [];
  let size = 0;
  // Listening for data first keeps Node from discarding the body once the answer is sent.
  req.on("data", (chunk: Buffer) => {
    size += chunk.length;
    if (size <= ctx.maxBodyBytes) chunks.push(chunk);
  });
  req.on("end", () => {
    if (size > ctx.maxBodyBytes) {
      stats.oversized++;
      ctx.warn(
        { bytes: size, limit: ctx.maxBodyBytes },
        "Dovecot policy body over the limit; ignored",
      );
      return;
    }
    if (command !== "report") return;
    receive(command, Buffer.concat(chunks).toString("utf8"), ctx);
  });
  req.on("error", (err) => {
    ctx.log.debug({ err }, "Dovecot policy request aborted");
  });
  res
    .writeHead(200, { "content-type": "application/json", "content-length": POLICY_REPLY.length })
    .end(POLICY_REPLY);
}

function receive(command: string, text: string, ctx: Context): void {
  const { stats } = ctx;
  let outcome;
  try {
    outcome = judgePolicyRequest(command, parsePolicyBody(text));
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    stats.badBodies++;
    ctx.warn({ reason: err.message }, "Dovecot policy body not understood; ignored");
    return;
  }
  stats.reports++;
  if (outcome.kind === "ignored") {
    stats.ignored[outcome.reason] = (stats.ignored[outcome.reason] ?? 0) + 1;
    return;
  }
  try {
    ctx.sink.login(outcome.report);
    stats.logins++;
    ctx.log.debug({ ip: outcome.report.ip, service: outcome.report.service }, "Dovecot login");
  } catch (err) {
    stats.sinkErrors++;
    ctx.log.error({ err, ip: outcome.report.ip }, "login sink failed");
  }
}
