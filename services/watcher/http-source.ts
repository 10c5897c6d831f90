// HTTP login source (RELAYLEASE_HTTP_LISTEN): `POST /v1/logins` with a JSON body
// `{"ip": "...", "user": "...", "service": "pop3"}` reports a successful login from anything
// that cannot speak one of the other sources. It accepts requests from whoever can reach the
// listener, so keep it on loopback or behind a network policy.
//   202 {"id", "ip"}   the login is stored in the durable outbox (published as soon as NATS can)
//   400 {"error"}      the body is not JSON, or a field is wrong (the message names the field)
//   404 / 405 / 413 / 415   wrong path, method, a body over MAX_BODY_BYTES, or not JSON
//   401                a token is configured (RELAYLEASE_HTTP_TOKEN) and the request lacks it
//   503 {"error"}      the login could not be stored (the outbox is full or its disk failed)
// Limits: bodies over MAX_BODY_BYTES are refused before they are buffered whole.
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { metrics } from "@opentelemetry/api";
import { tryParseAddress } from "../../shared/address.ts";
import { errorMessage } from "../../shared/errors.ts";
import { listen, type ListeningServer } from "../../shared/listen.ts";
import type { Logger } from "../../shared/log.ts";
import {
  LABEL,
  SchemaError,
  USER_NAME,
  optionalString,
  parseJsonObject,
  requiredString,
} from "../../shared/schema.ts";
import type { LoginIntake } from "./intake.ts";
import type { LoginReport } from "./publisher.ts";

/** A login report is a few hundred bytes; 16 KiB leaves room and bounds what we buffer. */
export const MAX_BODY_BYTES = 16 * 1024;
const SOURCE = "http";

export function parseLoginBody(text: string): LoginReport {
  const o = parseJsonObject(text, "body");
  const ipText = requiredString(o, "ip", /^.{1,64}$/);
  const ip = tryParseAddress(ipText);
  if (ip === undefined) throw new SchemaError(`field "ip" is not an IP address`);
  return {
    ip: ip.text,
    user: optionalString(o, "user", USER_NAME),
    service: optionalString(o, "service", LABEL) ?? "unknown",
    source: SOURCE,
  };
}

export async function startHttpSource(
  listenAddress: string,
  intake: Pick<LoginIntake, "accept">,
  log: Logger,
  token?: string,
): Promise<ListeningServer> {
  const expected = token === undefined ? undefined : Buffer.from(`Bearer ${token}`);
  const httpLog = log.child({ module: "http-source" });
  const received = metrics
    .getMeter("relaylease-watcher")
    .createCounter("relaylease_watcher_logins_received", {
      description: "Login reports received, by source and outcome.",
    });
  const server = createServer((req, res) => {
    if (expected !== undefined && !authorized(req, expected)) {
      res.writeHead(401, { "www-authenticate": "Bearer" }).end();
      received.add(1, { source: SOURCE, outcome: "http_401" });
      return;
    }
    handle(req, res, intake, httpLog).then(
      (outcome) => {
        received.add(1, { source: SOURCE, outcome });
      },
      (err: unknown) => {
        httpLog.error({ err: errorMessage(err) }, "login request failed");
        if (!res.headersSent) reply(res, 500, { error: "internal error" });
      },
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  const listening = await listen(server, listenAddress);
  httpLog.info({ listen: listening.address }, "HTTP login API listening");
  return listening;
}

function authorized(req: IncomingMessage, expected: Buffer): boolean {
  const given = Buffer.from(req.headers.authorization ?? "");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  intake: Pick<LoginIntake, "accept">,
  log: Logger,
): Promise<string> {
  if ((req.url ?? "").split("?")[0] !== "/v1/logins")
    return reply(res, 404, { error: "not found" });
  if (req.method !== "POST") {
    res.setHeader("allow", "POST");
    return reply(res, 405, { error: "use POST" });
  }
  if (!/^application\/json\b/i.test(req.headers["content-type"] ?? "application/json")) {
    return reply(res, 415, { error: "content-type must be application/json" });
  }
  const body = await readBody(req, MAX_BODY_BYTES);
  if (body === undefined) {
    return reply(res, 413, { error: `body is larger than ${MAX_BODY_BYTES} bytes` });
  }
  let report: LoginReport;
  try {
    report = parseLoginBody(body);
  } catch (err) {
    if (!(err instanceof SchemaError)) throw err;
    log.warn({ peer: req.socket.remoteAddress, reason: err.message }, "bad login report");
    return reply(res, 400, { error: err.message });
  }
  try {
    const event = await intake.accept(report);
    log.debug({ event: event.id, ip: event.ip }, "login stored");
    return reply(res, 202, { id: event.id, ip: event.ip });
  } catch (err) {
    return reply(res, 503, { error: `login not stored: ${errorMessage(err)}` });
  }
}

function reply(res: ServerResponse, status: number, body: object): string {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body) + "\n");
  return status === 202 ? "stored" : `http_${status}`;
}

/**
 * Reads the body, or resolves undefined once it passes `limit` bytes; the rest is drained unread
 * so the 413 reply can still be written on the same connection.
 */
function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers["content-length"] ?? 0) > limit) {
      req.resume();
      resolve(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on("end", () => {
      resolve(size > limit ? undefined : Buffer.concat(chunks).toString("utf8"));
    });
    req.on("error", reject);
  });
}
