/**
 * Our own minimal SMTP client, for the end-to-end tests and benchmarks: it connects from a chosen
 * local address (any of 127.0.0.0/8 on Linux, so one host can play many clients, each with its
 * own lease) and returns every reply as it came: code, enhanced status code, text lines.
 *
 * Replies are read as RFC 5321 4.2 says: `NNN-text` lines continue a reply, `NNN text` (or a bare
 * `NNN`) ends it. Commands may be pipelined: each command() resolves with its own reply, in order.
 * The client speaks only what the tests need (EHLO/HELO, MAIL, RCPT, DATA, RSET, QUIT); no TLS, no
 * AUTH, no SMTPUTF8.
 *
 * Budget: a reply line of more than MAX_LINE bytes or a reply of more than MAX_LINES lines, or a
 * line that is not `NNN[ -]...`, destroys the connection with an SmtpProtocolError (RFC 5321
 * 4.5.3.1.5 caps a reply line at 512 octets). Each reply must arrive within `timeoutMs`.
 */
import net from "node:net";

export interface SmtpReply {
  readonly code: number;
  /** The RFC 3463 enhanced status code of the first line (`5.7.1`), if it has one. */
  readonly enhanced: string | undefined;
  /** The text of each line, without code, separator and CRLF. */
  readonly lines: readonly string[];
  /** As on the wire, lines joined by "\n": `250-mx.test.invalid\n250 8BITMIME`. */
  readonly raw: string;
}

export class SmtpProtocolError extends Error {
  override name = "SmtpProtocolError";
}

export interface SmtpConnectOptions {
  readonly host: string;
  readonly port: number;
  /** The source address, e.g. "127.0.0.3": the SMTP server sees the client as this address. */
  readonly localAddress?: string;
  /** For connecting and for each reply (default 10 s). */
  readonly timeoutMs?: number;
}

const MAX_LINE = 4096;
const MAX_LINES = 100;
const DEFAULT_TIMEOUT_MS = 10_000;
const REPLY_LINE = /^([2-5]\d\d)([ -]|$)(.*)$/;
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)/;

interface Waiter {
  readonly command: string;
  readonly resolve: (reply: SmtpReply) => void;
  readonly reject: (err: Error) => void;
}

export class SmtpClient {
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  readonly #waiting: Waiter[] = [];
  readonly #ready: SmtpReply[] = [];
  #partial = "";
  #lines: string[] = [];
  #closedError: Error | undefined;

  /** Use SmtpClient.connect(); this takes an already connected socket. */
  constructor(socket: net.Socket, timeoutMs = DEFAULT_TIMEOUT_MS) {
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.#receive(chunk);
    });
    socket.on("error", (err) => {
      this.#closed(err);
    });
    socket.on("close", () => {
      this.#closed(new Error("SMTP connection closed by the server"));
    });
  }

  /** Connects and reads the greeting; a server that greets with 4xx/5xx is returned as is. */
  static connect(
    options: SmtpConnectOptions,
  ): Promise<{ client: SmtpClient; greeting: SmtpReply }> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const where = `${options.host}:${options.port}`;
    return new Promise((resolve, reject) => {
      const socket = net.connect({
        host: options.host,
        port: options.port,
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      });
      socket.setNoDelay(true);
      socket.setTimeout(timeoutMs, () =>
        socket.destroy(new Error(`SMTP connect to ${where} timed out after ${timeoutMs} ms`)),
      );
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        socket.setTimeout(0);
        const client = new SmtpClient(socket, timeoutMs);
        client.#expect("(greeting)").then((greeting) => {
          resolve({ client, greeting });
        }, reject);
      });
    });
  }

  /** Sends one command line (without CRLF) and resolves with its reply. */
  command(line: string): Promise<SmtpReply> {
    if (/[\r\n]/.test(line)) {
      return Promise.reject(new SmtpProtocolError("an SMTP command is one line"));
    }
    const reply = this.#expect(line);
    if (this.#closedError === undefined) this.#socket.write(`${line}\r\n`, "latin1");
    return reply;
  }

  ehlo(name: string): Promise<SmtpReply> {
    return this.command(`EHLO ${name}`);
  }
  mail(from: string): Promise<SmtpReply> {
    return this.command(`MAIL FROM:<${from}>`);
  }
  rcpt(to: string): Promise<SmtpReply> {
    return this.command(`RCPT TO:<${to}>`);
  }
  rset(): Promise<SmtpReply> {
    return this.command("RSET");
  }

  /**
   * DATA, then (only after a 354) the message with CRLF line ends and dot-stuffing, then the
   * final dot; resolves with the reply to DATA if it was not 354, else with the final reply.
   */
  async data(message: string): Promise<SmtpReply> {
    const go = await this.command("DATA");
    if (go.code !== 354) return go;
    const body = message
      .replace(/\r?\n/g, "\r\n")
      .replace(/(^|\r\n)\./g, "$1..")
      .replace(/(\r\n)?$/, "\r\n");
    const reply = this.#expect("(end of data)");
    this.#socket.write(`${body}.\r\n`, "latin1");
    return reply;
  }

  /** QUIT, then waits for the server to close; a server already gone is fine. */
  async quit(): Promise<void> {
    if (this.#closedError === undefined) {
      try {
        await this.command("QUIT");
      } catch {
        // Closed between the check and the reply: the session is over either way.
      }
    }
    await this.close();
  }

  /** Ends the connection without QUIT (as a client that hangs up would). */
  close(): Promise<void> {
    if (this.#socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once("close", () => {
        resolve();
      });
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), this.#timeoutMs).unref();
    });
  }

  #expect(command: string): Promise<SmtpReply> {
    if (this.#closedError !== undefined) return Promise.reject(this.#closedError);
    const early = this.#ready.shift();
    if (early !== undefined) return Promise.resolve(early);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#socket.destroy(
          new Error(`no SMTP reply to ${JSON.stringify(command)} within ${this.#timeoutMs} ms`),
        );
      }, this.#timeoutMs);
      this.#waiting.push({
        command,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  #receive(chunk: string): void {
    const parts = (this.#partial + chunk).split("\n");
    this.#partial = parts.pop() ?? "";
    try {
      if (this.#partial.length > MAX_LINE) {
        throw new SmtpProtocolError(`reply line longer than ${MAX_LINE} bytes`);
      }
      for (const part of parts) this.#line(part.endsWith("\r") ? part.slice(0, -1) : part);
    } catch (err) {
      this.#socket.destroy(err as Error);
    }
  }

  #line(line: string): void {
    const m = REPLY_LINE.exec(line);
    if (m === null) throw new SmtpProtocolError(`not an SMTP reply line: ${JSON.stringify(line)}`);
    this.#lines.push(line);
    if (this.#lines.length > MAX_LINES) {
      throw new SmtpProtocolError(`reply of more than ${MAX_LINES} lines`);
    }
    if (m[2] === "-") return;
    const reply = parseReply(this.#lines);
    this.#lines = [];
    const waiter = this.#waiting.shift();
    if (waiter === undefined) this.#ready.push(reply);
    else waiter.resolve(reply);
  }

  #closed(err: Error): void {
    this.#closedError ??= err;
    for (const w of this.#waiting.splice(0)) w.reject(this.#closedError);
  }
}

/** One complete reply from its lines (the last one without `-`). */
export function parseReply(lines: readonly string[]): SmtpReply {
  const first = lines[0] ?? "";
  const code = Number(first.slice(0, 3));
  const texts = lines.map((l) => l.slice(4));
  const enhanced = ENHANCED.exec(texts[0] ?? "")?.[1];
  return { code, enhanced, lines: texts, raw: lines.join("\n") };
}

export interface Envelope {
  readonly from: string;
  readonly to: readonly string[];
  readonly helo?: string;
}

/** The replies of one session that stops after RCPT (no message is queued). */
export interface EnvelopeReplies {
  readonly greeting: SmtpReply;
  readonly ehlo: SmtpReply;
  readonly mail: SmtpReply;
  /** One per recipient, in order. */
  readonly rcpt: readonly SmtpReply[];
}

/** Connects, says EHLO, MAIL and one RCPT per recipient, then QUIT; returns every reply. */
export async function tryEnvelope(
  server: SmtpConnectOptions,
  envelope: Envelope,
): Promise<EnvelopeReplies> {
  const { client, greeting } = await SmtpClient.connect(server);
  try {
    const ehlo = await client.ehlo(envelope.helo ?? "client.example");
    const mail = await client.mail(envelope.from);
    const rcpt: SmtpReply[] = [];
    for (const to of envelope.to) rcpt.push(await client.rcpt(to));
    return { greeting, ehlo, mail, rcpt };
  } finally {
    await client.quit();
  }
}
