/**
 * Our own whoson clients, for tests and benchmarks, speaking as libwhoson and gowhoson's client
 * do (`QUERY <ip>\r\n\r\n`). WhosonTcpClient keeps one connection for many requests, which may
 * overlap (pipelined) and resolve in order. WhosonUdpClient sends one datagram per request and
 * takes the next datagram from the server as its reply, one request at a time (UDP carries no
 * request id to match replies by).
 */
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";
import { parseListenAddress } from "../../shared/listen-address.ts";
import {
  decodeWhosonReplies,
  decodeWhosonReplyDatagram,
  encodeWhosonRequest,
} from "../../services/milter/whoson/codec.ts";
import type { WhosonReply } from "../../services/milter/whoson/codec.ts";

interface Waiter {
  resolve: (reply: WhosonReply) => void;
  reject: (err: Error) => void;
}

export class WhosonTcpClient {
  readonly #socket: net.Socket;
  readonly #waiting: Waiter[] = [];
  #buffer = Buffer.alloc(0);
  #closedError: Error | undefined;

  /** Use WhosonTcpClient.connect(); this takes an already connected socket. */
  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("error", (err) => {
      this.#closed(err);
    });
    socket.on("close", () => {
      this.#closed(new Error("whoson connection closed"));
    });
  }

  /** Connects to "host:port", "[v6]:port" or a unix socket path. */
  static connect(address: string, timeoutMs = 5000): Promise<WhosonTcpClient> {
    const where = parseListenAddress(address);
    return new Promise((resolve, reject) => {
      const socket = net.connect(where);
      socket.setTimeout(timeoutMs, () =>
        socket.destroy(new Error(`whoson connect to ${address} timed out`)),
      );
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        socket.setTimeout(0);
        resolve(new WhosonTcpClient(socket));
      });
    });
  }

  /** `QUERY <address>`. */
  query(address: string): Promise<WhosonReply> {
    return this.request("QUERY", address);
  }

  /** Any command, e.g. `request("LOGIN", "192.0.2.1", "alice")`. */
  request(verb: string, ...args: string[]): Promise<WhosonReply> {
    return this.send(encodeWhosonRequest({ verb, args }));
  }

  /** Sends raw bytes that make exactly one request; resolves to its reply. */
  send(request: Buffer | string): Promise<WhosonReply> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#socket.write(request);
    });
  }

  /** Ends the connection; resolves once it is closed. */
  close(): Promise<void> {
    if (this.#socket.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once("close", () => {
        resolve();
      });
      this.#socket.end();
    });
  }

  #receive(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    try {
      const { replies, consumed } = decodeWhosonReplies(this.#buffer);
      this.#buffer = this.#buffer.subarray(consumed);
      for (const reply of replies) {
        const waiter = this.#waiting.shift();
        if (!waiter) throw new Error("whoson reply without a request");
        waiter.resolve(reply);
      }
    } catch (err) {
      this.#socket.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #closed(err: Error): void {
    this.#closedError ??= err;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#closedError);
  }
}

export class WhosonUdpClient {
  readonly #socket: dgram.Socket;
  readonly #host: string;
  readonly #port: number;
  readonly #timeoutMs: number;
  /** Settles when the previous request has; requests go one at a time. */
  #previous: Promise<unknown> = Promise.resolve();

  private constructor(socket: dgram.Socket, host: string, port: number, timeoutMs: number) {
    this.#socket = socket;
    this.#host = host;
    this.#port = port;
    this.#timeoutMs = timeoutMs;
  }

  /** A socket aimed at "host:port" / "[v6]:port"; a reply must come within `timeoutMs`. */
  static async open(address: string, timeoutMs = 2000): Promise<WhosonUdpClient> {
    const where = parseListenAddress(address);
    if ("path" in where) throw new Error("whoson over UDP needs host:port");
    const socket = dgram.createSocket(net.isIPv6(where.host) ? "udp6" : "udp4");
    socket.bind(0);
    await once(socket, "listening");
    return new WhosonUdpClient(socket, where.host, where.port, timeoutMs);
  }

  /** `QUERY <address>` in one datagram. */
  query(address: string): Promise<WhosonReply> {
    return this.send(encodeWhosonRequest({ verb: "QUERY", args: [address] }));
  }

  /** Sends one datagram; resolves to the next datagram received, decoded. */
  send(datagram: Buffer | string): Promise<WhosonReply> {
    const run = this.#previous.then(() => this.#exchange(datagram));
    this.#previous = run.catch(() => undefined);
    return run;
  }

  /** Sends one datagram and resolves to whatever comes back within `waitMs`, raw, or undefined. */
  sendRaw(datagram: Buffer | string, waitMs = this.#timeoutMs): Promise<Buffer | undefined> {
    const run = this.#previous.then(() => this.#receiveOne(datagram, waitMs));
    this.#previous = run.catch(() => undefined);
    return run;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#socket.close(resolve);
    });
  }

  async #exchange(datagram: Buffer | string): Promise<WhosonReply> {
    const reply = await this.#receiveOne(datagram, this.#timeoutMs);
    if (reply === undefined) {
      throw new Error(`no whoson reply from ${this.#host}:${this.#port} in ${this.#timeoutMs} ms`);
    }
    return decodeWhosonReplyDatagram(reply);
  }

  #receiveOne(datagram: Buffer | string, waitMs: number): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      const onMessage = (msg: Buffer) => {
        done();
        resolve(msg);
      };
      const timer = setTimeout(() => {
        done();
        resolve(undefined);
      }, waitMs);
      const done = () => {
        clearTimeout(timer);
        this.#socket.off("message", onMessage);
      };
      this.#socket.on("message", onMessage);
      this.#socket.send(datagram, this.#port, this.#host, (err) => {
        if (err) {
          done();
          reject(err);
        }
      });
    });
  }
}
