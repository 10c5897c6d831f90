/**
 * Our own ONC RPC client for the DRAC source, for tests and benchmarks: UDP (one datagram per
 * call, as libdrac sends) or TCP (record marking, one connection for many calls), DRAC v1 and v2,
 * and the portmapper lookups libdrac's clnt_create() makes. Calls may overlap; replies are matched
 * by xid. No retransmission: a lost datagram is a timeout, which on loopback is a failure.
 */
import dgram from "node:dgram";
import net from "node:net";
import { lookup } from "node:dns/promises";
import { parseAddress } from "../../shared/address.ts";
import { parseListenAddress } from "../../shared/listen-address.ts";
import {
  DRACPROC_ADD,
  DRACPROG,
  DRACVERS,
  decodeAddStat,
  encodeDracAddArgs,
  ipv6Bytes,
} from "../../services/watcher/drac/drac-codec.ts";
import {
  IPPROTO_UDP,
  PMAPPROC_GETPORT,
  PMAP_PROG,
  PMAP_VERS,
  RPCBPROC_GETADDR,
  RPCBVERS4,
  decodePort,
  decodeString,
  encodeMapping,
  encodeRpcb,
} from "../../services/watcher/drac/portmap.ts";
import { decodeRecords, encodeRecord } from "../../services/watcher/drac/record-marking.ts";
import {
  AUTH_NONE,
  RPC_VERSION,
  decodeReply,
  encodeCall,
} from "../../services/watcher/drac/rpc-codec.ts";
import type { OpaqueAuth, RpcReply } from "../../services/watcher/drac/rpc-codec.ts";

export type RpcTransport = "udp" | "tcp";

export interface RpcClientOptions {
  transport: RpcTransport;
  /** Per call. */
  timeoutMs?: number;
  /** Source address to bind (e.g. 127.0.0.3 to call from outside an allow list). */
  localAddress?: string;
  /** TCP only: split each call into fragments of this many bytes. */
  fragmentBytes?: number;
}

export interface CallSpec {
  prog: number;
  vers: number;
  proc: number;
  args?: Buffer;
  cred?: OpaqueAuth;
  verf?: OpaqueAuth;
  /** Anything but 2 to provoke RPC_MISMATCH. */
  rpcvers?: number;
}

interface Waiter {
  resolve: (reply: RpcReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const NONE: OpaqueAuth = { flavor: AUTH_NONE, body: Buffer.alloc(0) };

export class RpcClient {
  readonly #send: (message: Buffer) => void;
  readonly #close: () => void;
  readonly #timeoutMs: number;
  readonly #waiting = new Map<number, Waiter>();
  #xid = Math.floor(Math.random() * 0x7fffffff);

  private constructor(send: (m: Buffer) => void, close: () => void, timeoutMs: number) {
    this.#send = send;
    this.#close = close;
    this.#timeoutMs = timeoutMs;
  }

  /** Opens a client to "host:port" ("[v6]:port"). */
  static async open(address: string, options: RpcClientOptions): Promise<RpcClient> {
    const where = parseListenAddress(address);
    if ("path" in where) throw new Error("RPC client needs host:port");
    const { address: host, family } = await lookup(where.host);
    const timeoutMs = options.timeoutMs ?? 2000;
    if (options.transport === "udp") {
      const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4");
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind({ address: options.localAddress, port: 0 }, () => {
          socket.off("error", reject);
          resolve();
        });
      });
      const client = new RpcClient(
        (m) => {
          socket.send(m, where.port, host);
        },
        () => socket.close(),
        timeoutMs,
      );
      socket.on("message", (msg) => {
        client.#receive(msg);
      });
      socket.on("error", (err) => {
        client.#failAll(err);
      });
      return client;
    }
    const socket = net.connect({ host, port: where.port, localAddress: options.localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve();
      });
    });
    const client = new RpcClient(
      (m) => socket.write(encodeRecord(m, options.fragmentBytes)),
      () => socket.destroy(),
      timeoutMs,
    );
    let buf = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const { records, consumed } = decodeRecords(buf, {
        maxRecordBytes: 1 << 20,
        maxFragments: 64,
      });
      buf = buf.subarray(consumed);
      for (const record of records) client.#receive(record);
    });
    socket.on("error", (err) => {
      client.#failAll(err);
    });
    socket.on("close", () => {
      client.#failAll(new Error("RPC connection closed"));
    });
    return client;
  }

  /** Sends one call and resolves with its reply. */
  call(spec: CallSpec): Promise<RpcReply> {
    const xid = this.#nextXid();
    const message = encodeCall(
      {
        xid,
        prog: spec.prog,
        vers: spec.vers,
        proc: spec.proc,
        cred: spec.cred ?? NONE,
        verf: spec.verf ?? NONE,
        args: spec.args ?? Buffer.alloc(0),
      },
      spec.rpcvers ?? RPC_VERSION,
    );
    return this.raw(message, xid);
  }

  /** Sends arbitrary bytes and waits for a reply carrying `xid` (tests of bad input). */
  raw(message: Buffer, xid: number): Promise<RpcReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(xid);
        reject(new Error(`RPC call xid ${xid} timed out after ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#waiting.set(xid, { resolve, reject, timer });
      this.#send(message);
    });
  }

  close(): void {
    this.#close();
    this.#failAll(new Error("RPC client closed"));
  }

  #nextXid(): number {
    this.#xid = (this.#xid + 1) >>> 0;
    return this.#xid;
  }

  #receive(message: Buffer): void {
    let reply: RpcReply;
    try {
      reply = decodeReply(message);
    } catch (err) {
      this.#failAll(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    const waiter = this.#waiting.get(reply.xid);
    if (waiter === undefined) return;
    this.#waiting.delete(reply.xid);
    clearTimeout(waiter.timer);
    waiter.resolve(reply);
  }

  #failAll(err: Error): void {
    for (const [xid, waiter] of this.#waiting) {
      this.#waiting.delete(xid);
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
  }
}

export interface DracAddOptions extends Partial<RpcClientOptions> {
  /** DRACVERS (1, IPv4 only) or DRACVERS6 (2); default 1 for IPv4, 2 for IPv6. */
  version?: number;
  /** v2 only: send bytes >= 0x80 sign-extended, as x86 libdrac does (default true). */
  signedChar?: boolean;
}

/** What dracauth() / dracauth6() do: one call, returning the addstat (0 ADD_SUCCESS, 1 ADD_PERM). */
export async function dracAdd(
  address: string,
  ip: string,
  options: DracAddOptions = {},
): Promise<number> {
  const client = await RpcClient.open(address, { transport: "udp", ...options });
  try {
    return await dracAddWith(client, ip, options);
  } finally {
    client.close();
  }
}

/** One DRACPROC_ADD over an open client (dracsend()); throws unless the reply is a success. */
export async function dracAddWith(
  client: RpcClient,
  ip: string,
  options: DracAddOptions = {},
): Promise<number> {
  const addr = parseAddress(ip);
  const vers = options.version ?? (addr.family === 4 ? DRACVERS : 2);
  const bytes = vers === DRACVERS ? addr.bytes : ipv6Bytes(addr);
  const reply = await client.call({
    prog: DRACPROG,
    vers,
    proc: DRACPROC_ADD,
    args: encodeDracAddArgs(vers, bytes, options.signedChar ?? true),
  });
  if (reply.kind !== "success") throw new Error(`DRAC call answered ${reply.kind}`);
  return decodeAddStat(reply.result);
}

/** PMAPPROC_GETPORT: the port of prog/vers on UDP (or TCP), 0 if not registered. */
export async function pmapGetPort(
  address: string,
  prog: number,
  vers: number,
  prot = IPPROTO_UDP,
  transport: RpcTransport = "udp",
): Promise<number> {
  const client = await RpcClient.open(address, { transport });
  try {
    const reply = await client.call({
      prog: PMAP_PROG,
      vers: PMAP_VERS,
      proc: PMAPPROC_GETPORT,
      args: encodeMapping({ prog, vers, prot, port: 0 }),
    });
    if (reply.kind !== "success") throw new Error(`GETPORT answered ${reply.kind}`);
    return decodePort(reply.result);
  } finally {
    client.close();
  }
}

/** RPCBPROC_GETADDR (v4 by default, or 3): the universal address, "" if not registered. */
export async function rpcbGetAddr(
  address: string,
  prog: number,
  vers: number,
  netid = "udp",
  rpcbVers = RPCBVERS4,
  transport: RpcTransport = "udp",
): Promise<string> {
  const client = await RpcClient.open(address, { transport });
  try {
    const reply = await client.call({
      prog: PMAP_PROG,
      vers: rpcbVers,
      proc: RPCBPROC_GETADDR,
      args: encodeRpcb({ prog, vers, netid, addr: "", owner: "" }),
    });
    if (reply.kind !== "success") throw new Error(`GETADDR answered ${reply.kind}`);
    return decodeString(reply.result);
  } finally {
    client.close();
  }
}
