/**
 * Our own Postfix policy client, for tests and benchmarks: one connection, reused for every
 * query as Postfix's smtpd does; queries may overlap (they are pipelined) and resolve in order.
 */
import net from "node:net";
import { parseListenAddress } from "../../shared/listen-address.ts";
import { decodePolicyRequests, encodePolicyRequest } from "../../services/milter/policy/codec.ts";

/** What Postfix 3.7.11 sent at RCPT (shared/reference/mta-protocols.md, section 4). */
export const POSTFIX_RCPT_REQUEST: Readonly<Record<string, string>> = {
  request: "smtpd_access_policy",
  protocol_state: "RCPT",
  protocol_name: "ESMTP",
  client_address: "127.0.0.3",
  client_name: "unknown",
  client_port: "33077",
  reverse_client_name: "unknown",
  server_address: "127.0.0.1",
  server_port: "10025",
  helo_name: "client.example",
  sender: "a@example.org",
  recipient: "b@remote.example",
  recipient_count: "0",
  queue_id: "",
  instance: "408f.6b0b4dc0.c4b49.0",
  size: "0",
  etrn_domain: "",
  stress: "",
  sasl_method: "",
  sasl_username: "",
  sasl_sender: "",
  ccert_subject: "",
  ccert_issuer: "",
  ccert_fingerprint: "",
  ccert_pubkey_fingerprint: "",
  encryption_protocol: "",
  encryption_cipher: "",
  encryption_keysize: "0",
  policy_context: "",
};

interface Waiter {
  resolve: (action: string) => void;
  reject: (err: Error) => void;
}

export class PolicyClient {
  readonly #socket: net.Socket;
  readonly #waiting: Waiter[] = [];
  #buffer = Buffer.alloc(0);
  #closedError: Error | undefined;

  /** Use PolicyClient.connect(); this takes an already connected socket. */
  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on("error", (err) => {
      this.#closed(err);
    });
    socket.on("close", () => {
      this.#closed(new Error("policy connection closed"));
    });
  }

  /** Connects to "host:port", "[v6]:port" or a unix socket path. */
  static connect(address: string, timeoutMs = 5000): Promise<PolicyClient> {
    const where = parseListenAddress(address);
    return new Promise((resolve, reject) => {
      const socket = net.connect(where);
      socket.setTimeout(timeoutMs, () =>
        socket.destroy(new Error(`policy connect to ${address} timed out`)),
      );
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        socket.setTimeout(0);
        resolve(new PolicyClient(socket));
      });
    });
  }

  /** Sends one request; resolves to the reply's `action`. */
  query(attrs: Readonly<Record<string, string>>): Promise<string> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const request = encodePolicyRequest(attrs);
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
      const { requests: replies, consumed } = decodePolicyRequests(this.#buffer);
      this.#buffer = this.#buffer.subarray(consumed);
      for (const reply of replies) this.#settle(reply.get("action"));
    } catch (err) {
      this.#socket.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #settle(action: string | undefined): void {
    const waiter = this.#waiting.shift();
    if (!waiter) throw new Error("policy reply without a request");
    if (action === undefined) waiter.reject(new Error("policy reply without action"));
    else waiter.resolve(action);
  }

  #closed(err: Error): void {
    this.#closedError ??= err;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#closedError);
  }
}
