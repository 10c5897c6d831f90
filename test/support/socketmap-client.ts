/**
 * Our own socketmap client, for tests and benchmarks: one connection, reused for every lookup as
 * Sendmail and Postfix do; lookups may overlap (they are pipelined) and resolve in order. Replies
 * are decoded strictly (codec.ts parseSocketmapReply): an unknown status or an OK without a value
 * (the reply that crashes Sendmail) destroys the connection with a ProtocolError.
 */
import net from "node:net";
import { parseListenAddress } from "../../shared/listen-address.ts";
import {
  decodeSocketmapReplies,
  encodeSocketmapRequest,
} from "../../services/milter/socketmap/codec.ts";
import type { SocketmapReply } from "../../services/milter/socketmap/codec.ts";

interface Waiter {
  resolve: (reply: SocketmapReply) => void;
  reject: (err: Error) => void;
}

export class SocketmapClient {
  readonly #socket: net.Socket;
  readonly #waiting: Waiter[] = [];
  #buffer = Buffer.alloc(0);
  #closedError: Error | undefined;

  /** Use SocketmapClient.connect(); this takes an already connected socket. */
  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("error", (err) => {
      this.#closed(err);
    });
    socket.on("close", () => {
      this.#closed(new Error("socketmap connection closed"));
    });
  }

  /** Connects to "host:port", "[v6]:port" or a unix socket path. */
  static connect(address: string, timeoutMs = 5000): Promise<SocketmapClient> {
    const where = parseListenAddress(address);
    return new Promise((resolve, reject) => {
      const socket = net.connect(where);
      socket.setTimeout(timeoutMs, () =>
        socket.destroy(new Error(`socketmap connect to ${address} timed out`)),
      );
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        socket.setTimeout(0);
        resolve(new SocketmapClient(socket));
      });
    });
  }

  /** Sends `<mapName> <key>`; resolves to the decoded reply. */
  lookup(mapName: string, key: string): Promise<SocketmapReply> {
    return this.send(encodeSocketmapRequest(mapName, key));
  }

  /** Sends raw bytes that make exactly one request; resolves to its reply. */
  send(request: Buffer): Promise<SocketmapReply> {
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
      const { replies, consumed } = decodeSocketmapReplies(this.#buffer);
      this.#buffer = this.#buffer.subarray(consumed);
      for (const reply of replies) {
        const waiter = this.#waiting.shift();
        if (!waiter) throw new Error("socketmap reply without a request");
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
