/**
 * Minimal POP3 (RFC 1939 USER/PASS) and IMAP (RFC 9051 LOGIN) clients for end-to-end tests: one
 * login from a chosen local address (`localAddress`: 127.0.0.2 and up are distinct clients on
 * loopback), then QUIT or LOGOUT, and whether the server accepted the password.
 *
 * Limits: replies are read line by line, at most MAX_LINE_BYTES each and within `timeoutMs` for
 * the whole exchange; a user or password with a line break, NUL or 8-bit character is refused
 * before anything is sent (no IMAP literals here). The transcript never holds the password.
 */
import { Socket, connect } from "node:net";

export interface MailLoginOptions {
  host: string;
  port: number;
  /** The client's source address, e.g. "127.0.0.2". */
  localAddress?: string;
  user: string;
  password: string;
  /** For the whole exchange; default 10 s. */
  timeoutMs?: number;
}

export interface MailLoginResult {
  /** The server accepted the login (`+OK` to PASS, tagged `OK` to LOGIN). */
  readonly ok: boolean;
  readonly greeting: string;
  /** The server's answer to PASS or LOGIN. */
  readonly reply: string;
  /** Both directions, `C: ` and `S: `, password masked. */
  readonly transcript: readonly string[];
}

export class MailLoginError extends Error {
  override name = "MailLoginError";
}

const MAX_LINE_BYTES = 8192;
const DEFAULT_TIMEOUT_MS = 10_000;

/** USER, PASS, QUIT. */
export async function pop3Login(options: MailLoginOptions): Promise<MailLoginResult> {
  checkCredentials(options);
  return withConnection(options, async (c) => {
    const greeting = await c.readLine();
    if (!greeting.startsWith("+OK")) throw c.error(`POP3 greeting: ${greeting}`);
    await c.send(`USER ${options.user}`);
    const user = await c.readLine();
    let reply = user;
    if (user.startsWith("+OK")) {
      await c.send(`PASS ${options.password}`, "PASS ***");
      reply = await c.readLine();
    }
    await c.send("QUIT");
    await c.readLine().catch(() => ""); // the server may already have closed after a failure
    return { ok: reply.startsWith("+OK"), greeting, reply, transcript: c.transcript };
  });
}

/** a1 LOGIN, a2 LOGOUT. */
export async function imapLogin(options: MailLoginOptions): Promise<MailLoginResult> {
  checkCredentials(options);
  return withConnection(options, async (c) => {
    const greeting = await c.readLine();
    if (!greeting.startsWith("* OK")) throw c.error(`IMAP greeting: ${greeting}`);
    await c.send(
      `a1 LOGIN ${quoted(options.user)} ${quoted(options.password)}`,
      `a1 LOGIN ${quoted(options.user)} ***`,
    );
    const reply = await tagged(c, "a1");
    await c.send("a2 LOGOUT");
    await tagged(c, "a2").catch(() => ""); // the server may already have closed
    return { ok: /^a1 OK\b/i.test(reply), greeting, reply, transcript: c.transcript };
  });
}

/** The tagged reply, after any untagged (`* ...`) lines. */
async function tagged(c: LineConnection, tag: string): Promise<string> {
  for (;;) {
    const line = await c.readLine();
    if (line.startsWith(`${tag} `)) return line;
    if (!line.startsWith("* ") && !line.startsWith("+ ")) throw c.error(`unexpected ${line}`);
  }
}

/** An IMAP quoted string (RFC 9051 section 4.3). */
function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}

function checkCredentials(o: MailLoginOptions): void {
  for (const [what, s] of [
    ["user", o.user],
    ["password", o.password],
  ] as const) {
    if (/[\0\r\n\x80-\uffff]/.test(s)) throw new MailLoginError(`${what}: not sendable here`);
  }
  if (o.user === "" || /\s/.test(o.user)) throw new MailLoginError("user: empty or has a space");
}

async function withConnection<T>(
  o: MailLoginOptions,
  talk: (c: LineConnection) => Promise<T>,
): Promise<T> {
  const c = await LineConnection.open(o);
  try {
    return await talk(c);
  } finally {
    c.close();
  }
}

/** CRLF lines over one socket, with a deadline for the whole conversation. */
class LineConnection {
  readonly transcript: string[] = [];
  readonly #socket: Socket;
  readonly #what: string;
  #buffer = Buffer.alloc(0);
  #waiting: (() => void) | undefined;
  #failure: Error | undefined;

  private constructor(socket: Socket, what: string) {
    this.#socket = socket;
    this.#what = what;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on("error", (err) => {
      this.#fail(err);
    });
    socket.on("close", () => {
      this.#fail(this.error("connection closed"));
    });
  }

  static open(o: MailLoginOptions): Promise<LineConnection> {
    const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const what = `${o.localAddress ?? "*"} -> ${o.host}:${o.port}`;
    return new Promise((resolve, reject) => {
      const socket = connect({ host: o.host, port: o.port, localAddress: o.localAddress });
      const c = new LineConnection(socket, what);
      const timer = setTimeout(() => {
        c.#fail(c.error(`no answer within ${timeoutMs} ms`));
        socket.destroy();
      }, timeoutMs);
      timer.unref();
      socket.once("close", () => {
        clearTimeout(timer);
      });
      socket.once("connect", () => {
        resolve(c);
      });
      socket.once("error", reject);
    });
  }

  async readLine(): Promise<string> {
    for (;;) {
      const eol = this.#buffer.indexOf("\r\n");
      if (eol >= 0) {
        const line = this.#buffer.subarray(0, eol).toString("utf8");
        this.#buffer = this.#buffer.subarray(eol + 2);
        this.transcript.push(`S: ${line}`);
        return line;
      }
      if (this.#buffer.length > MAX_LINE_BYTES) {
        throw this.error(`a line longer than ${MAX_LINE_BYTES} bytes`);
      }
      if (this.#failure !== undefined) throw this.#failure;
      await new Promise<void>((resolve) => (this.#waiting = resolve));
    }
  }

  /** Sends `line`; the transcript shows `shown` instead (a masked password). */
  send(line: string, shown = line): Promise<void> {
    this.transcript.push(`C: ${shown}`);
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#socket.write(`${line}\r\n`, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  error(message: string): MailLoginError {
    return new MailLoginError(`${this.#what}: ${message}\n${this.transcript.join("\n")}`);
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    this.#wake();
  }

  #wake(): void {
    const wake = this.#waiting;
    this.#waiting = undefined;
    wake?.();
  }
}
