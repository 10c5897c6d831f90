/**
 * Our own milter client (the MTA side), for tests and benchmarks. It negotiates and talks like
 * Postfix 3.7 and Sendmail 8.17 do (mta-protocols.md 1.4-1.8, 2, 3): macros for every stage,
 * even one the milter skipped (an empty stage is a 2-byte `D` packet); the step itself only if
 * not skipped; a reply read only where the negotiated options promise one.
 */
import net from "node:net";
import { parseListenAddress } from "../../shared/listen-address.ts";
import * as C from "../../services/milter/milter-protocol/constants.ts";
import { decodeReplies, encodeCommand } from "../../services/milter/milter-protocol/codec.ts";
import type {
  MilterCommand,
  MilterReply,
  SymList,
} from "../../services/milter/milter-protocol/codec.ts";

export interface Offer {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
}

/** Postfix 3.7.11, Sendmail 8.17 and miltertest: `6, 0x1FF, 0x1FFFFF` (observed). */
export const POSTFIX_OFFER: Offer = {
  version: C.SMFI_PROT_VERSION,
  actions: C.SMFI_CURR_ACTS,
  protocol: C.SMFI_CURR_PROT,
};
/** Postfix with `milter_protocol = 2`. */
export const V2_OFFER: Offer = { version: 2, actions: C.SMFI_V2_ACTS, protocol: C.SMFI_V2_PROT };

export type Negotiated = Offer & { readonly symlists: readonly SymList[] };
type Macros = Readonly<Record<string, string>>;

/** The connecting SMTP client, as the MTA describes it in CONNECT. */
export type SmtpClient =
  | { readonly family: "4" | "6" | "L"; readonly address: string; readonly port?: number }
  | { readonly family: "U" };

/** Steps a milter may skip, and their no-reply bits (mfdef.h). */
const SKIP: Partial<Record<MilterCommand["type"], number>> = {
  connect: C.SMFIP_NOCONNECT,
  helo: C.SMFIP_NOHELO,
  mail: C.SMFIP_NOMAIL,
  rcpt: C.SMFIP_NORCPT,
};
const NO_REPLY: Partial<Record<MilterCommand["type"], number>> = {
  connect: C.SMFIP_NR_CONN,
  helo: C.SMFIP_NR_HELO,
  mail: C.SMFIP_NR_MAIL,
  rcpt: C.SMFIP_NR_RCPT,
  data: C.SMFIP_NR_DATA,
  unknown: C.SMFIP_NR_UNKN,
  eoh: C.SMFIP_NR_EOH,
  body: C.SMFIP_NR_BODY,
  header: C.SMFIP_NR_HDR,
};
const NEVER_ANSWERED = new Set<MilterCommand["type"]>(["macro", "abort", "quit", "quit-nc"]);

interface Waiter {
  resolve: (reply: MilterReply) => void;
  reject: (err: Error) => void;
}

/** A reply as a verdict word: no reply counts as continue (as miltertest reports NR steps). */
export function replyVerdict(reply: MilterReply | undefined): string {
  if (reply === undefined) return "continue";
  if (reply.type !== "replycode") return reply.type;
  if (reply.text.startsWith("5")) return "reject";
  return reply.text.startsWith("4") ? "tempfail" : reply.text;
}

export class MilterClient {
  readonly #socket: net.Socket;
  readonly #waiting: Waiter[] = [];
  readonly #replyTimeoutMs: number;
  #buffer = Buffer.alloc(0);
  #closedError: Error | undefined;
  #negotiated: Negotiated | undefined;
  /** Resolves when the server has closed the connection (or it was destroyed). */
  readonly closed: Promise<void>;

  /** Use MilterClient.connect(); this takes an already connected socket. */
  constructor(socket: net.Socket, replyTimeoutMs = 5000) {
    this.#socket = socket;
    this.#replyTimeoutMs = replyTimeoutMs;
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("error", (err) => {
      this.#fail(err);
    });
    this.closed = new Promise((resolve) => {
      socket.once("close", () => {
        this.#fail(new Error("milter connection closed"));
        resolve();
      });
    });
  }

  /** Connects to "host:port", "[v6]:port" or a unix socket path. */
  static connect(address: string, timeoutMs = 5000): Promise<MilterClient> {
    const where = parseListenAddress(address);
    return new Promise((resolve, reject) => {
      const socket = net.connect(where);
      socket.setTimeout(timeoutMs, () =>
        socket.destroy(new Error(`milter connect to ${address} timed out`)),
      );
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        socket.setTimeout(0);
        socket.setNoDelay(true);
        resolve(new MilterClient(socket, timeoutMs));
      });
    });
  }

  get negotiated(): Negotiated | undefined {
    return this.#negotiated;
  }

  /** Whether the milter asked to skip this step (a Postfix or Sendmail would not send it). */
  skips(type: MilterCommand["type"]): boolean {
    const bit = SKIP[type];
    return bit !== undefined && ((this.#negotiated?.protocol ?? 0) & bit) !== 0;
  }

  async negotiate(offer: Offer = POSTFIX_OFFER): Promise<Negotiated> {
    const reply = await this.send({ type: "optneg", ...offer });
    if (reply?.type !== "optneg")
      throw new Error(`OPTNEG answered with ${reply?.type ?? "nothing"}`);
    const { version, actions, protocol, symlists } = reply;
    this.#negotiated = { version, actions, protocol, symlists };
    return this.#negotiated;
  }

  /** Sends one command; resolves to its reply, or undefined where none is due. */
  send(command: MilterCommand): Promise<MilterReply | undefined> {
    return this.#exchange([], command);
  }

  /**
   * Writes the no-reply commands `before` and then `command` in one write, as Postfix flushes
   * its buffered packets with the next one that needs a reply; resolves to `command`'s reply.
   */
  #exchange(before: MilterCommand[], command: MilterCommand): Promise<MilterReply | undefined> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const bytes = Buffer.concat([...before, command].map(encodeCommand));
    if (!this.#answered(command)) {
      this.#socket.write(bytes);
      return Promise.resolve(undefined);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no reply to ${command.type} within ${this.#replyTimeoutMs} ms`));
      }, this.#replyTimeoutMs);
      const done =
        <T>(f: (x: T) => void) =>
        (x: T) => {
          clearTimeout(timer);
          f(x);
        };
      this.#waiting.push({ resolve: done(resolve), reject: done(reject) });
      this.#socket.write(bytes);
    });
  }

  #answered(command: MilterCommand): boolean {
    if (NEVER_ANSWERED.has(command.type)) return false;
    const nr = NO_REPLY[command.type];
    return nr === undefined || ((this.#negotiated?.protocol ?? 0) & nr) === 0;
  }

  /** Bytes as they are, for garbage and split-frame tests. */
  writeRaw(bytes: Uint8Array): void {
    this.#socket.write(bytes);
  }

  /** `D C` then CONNECT (unless skipped), as an MTA starts an SMTP session. */
  connectStep(client: SmtpClient, macros: Macros = {}, hostname = "client.example") {
    const command: MilterCommand =
      client.family === "U"
        ? { type: "connect", hostname, family: "U" }
        : { type: "connect", hostname, ...client, port: client.port ?? 40000 };
    return this.#step("C", macros, command);
  }

  helo(name: string, macros: Macros = {}) {
    return this.#step("H", macros, { type: "helo", helo: name });
  }

  mail(from: string, macros: Macros = {}) {
    return this.#step("M", macros, { type: "mail", args: [`<${from}>`] });
  }

  rcpt(to: string, macros: Macros = {}) {
    return this.#step("R", macros, { type: "rcpt", args: [`<${to}>`] });
  }

  /** End of message: `D E` and BODYEOB, which is always answered. */
  eom(macros: Macros = {}) {
    return this.#step("E", macros, { type: "eob", chunk: Buffer.alloc(0) });
  }

  abort(): Promise<MilterReply | undefined> {
    return this.send({ type: "abort" });
  }

  /** QUIT; resolves once the milter has closed the connection. */
  async quit(): Promise<void> {
    await this.send({ type: "quit" });
    await this.closed;
  }

  /** Closes our side; resolves once the connection is closed. */
  close(): Promise<void> {
    this.#socket.end();
    return this.closed;
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #step(stage: string, macros: Macros, command: MilterCommand) {
    const macro: MilterCommand = { type: "macro", stage, macros: Object.entries(macros) };
    if (this.skips(command.type)) return this.#exchange([], macro);
    return this.#exchange([macro], command);
  }

  #receive(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    try {
      const { replies, consumed } = decodeReplies(this.#buffer);
      this.#buffer = this.#buffer.subarray(consumed);
      for (const reply of replies) {
        if (reply.type === "progress") continue;
        const waiter = this.#waiting.shift();
        if (!waiter) throw new Error(`unsolicited ${reply.type} reply`);
        waiter.resolve(reply);
      }
    } catch (err) {
      this.#socket.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #fail(err: Error): void {
    this.#closedError ??= err;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#closedError);
  }
}
