/**
 * Registers the DRAC listeners with the host's own rpcbind instead of running our portmapper on
 * port 111 (drac-rpc.md 2.5, 7): what rpc.dracd itself does at start (pmap_unset, then svc_register
 * for both versions on UDP and TCP). PMAP v2 SET/UNSET over UDP to 127.0.0.1:111.
 *
 * rpcbind takes SET/UNSET only from the local host, and over loopback UDP rpcbind 1.2.x also wants
 * a privileged source port unless it runs with -i (insecure): so the request goes out from a port
 * under 1024 when we may bind one (root, or CAP_NET_BIND_SERVICE), else from an ephemeral one.
 * A registration rpcbind refuses (a FALSE result) is an error; the caller decides if it is fatal.
 * Only IPv4 netids can be registered by PMAP v2; udp6/tcp6 entries are skipped.
 *
 * Limits: each request waits `timeoutMs` (1 s) and is sent at most `attempts` (3) times.
 */
import dgram from "node:dgram";
import { randomInt } from "node:crypto";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { parseListenAddress } from "../../../shared/listen-address.ts";
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  PMAPPROC_SET,
  PMAPPROC_UNSET,
  PMAP_PROG,
  PMAP_VERS,
  encodeMapping,
  type PmapMapping,
  type Registration,
} from "./portmap.ts";
import { AUTH_NONE, decodeReply, encodeCall } from "./rpc-codec.ts";

export interface RpcbindOptions {
  /** Where rpcbind listens; "127.0.0.1:111" by default. */
  rpcbind?: string;
  timeoutMs?: number;
  attempts?: number;
}

export interface RpcbindRegistration {
  /** The mappings rpcbind accepted. */
  readonly mappings: readonly PmapMapping[];
  /** Removes them again (PMAPPROC_UNSET per program version); call at shutdown. */
  unregister(): Promise<void>;
}

const PROT: Readonly<Record<string, number>> = { udp: IPPROTO_UDP, tcp: IPPROTO_TCP };
const NONE = { flavor: AUTH_NONE, body: Buffer.alloc(0) };

/**
 * Clears stale entries for every program version in `registrations`, then sets each UDP/TCP one.
 * @throws Error if rpcbind does not answer or refuses a mapping.
 */
export async function registerWithRpcbind(
  registrations: readonly Registration[],
  options: RpcbindOptions = {},
): Promise<RpcbindRegistration> {
  const rpc = await rpcbindClient(options);
  try {
    const mappings: PmapMapping[] = registrations.flatMap((r) => {
      const prot = PROT[r.netid];
      return prot === undefined ? [] : [{ prog: r.prog, vers: r.vers, prot, port: r.port }];
    });
    const versions = [...new Map(mappings.map((m) => [`${m.prog}/${m.vers}`, m])).values()];
    for (const m of versions) await rpc.call(PMAPPROC_UNSET, m);
    for (const m of mappings) {
      if (!(await rpc.call(PMAPPROC_SET, m))) {
        throw new Error(
          `rpcbind refused program ${m.prog} version ${m.vers} protocol ${m.prot} port ${m.port}`,
        );
      }
    }
    return {
      mappings,
      unregister: async () => {
        const again = await rpcbindClient(options);
        try {
          for (const m of versions) await again.call(PMAPPROC_UNSET, m);
        } finally {
          again.close();
        }
      },
    };
  } finally {
    rpc.close();
  }
}

interface PmapClient {
  call(proc: number, mapping: PmapMapping): Promise<boolean>;
  close(): void;
}

async function rpcbindClient(options: RpcbindOptions): Promise<PmapClient> {
  const where = parseListenAddress(options.rpcbind ?? "127.0.0.1:111");
  if ("path" in where) throw new Error("rpcbind address must be host:port");
  const socket = await bindReserved(where.host.includes(":") ? "udp6" : "udp4");
  const timeoutMs = options.timeoutMs ?? 1000;
  const attempts = options.attempts ?? 3;
  let xid = randomInt(1, 0x7fffffff);
  return {
    close: () => socket.close(),
    call: async (proc, mapping) => {
      xid++;
      const message = encodeCall({
        xid,
        prog: PMAP_PROG,
        vers: PMAP_VERS,
        proc,
        cred: NONE,
        verf: NONE,
        args: encodeMapping(mapping),
      });
      for (let attempt = 1; ; attempt++) {
        const reply = await exchange(socket, message, xid, where, timeoutMs);
        if (reply !== undefined) return reply;
        if (attempt >= attempts)
          throw new Error(`rpcbind at ${where.host}:${where.port} did not answer`);
      }
    },
  };
}

/** One request and its reply's boolean; undefined on timeout. */
function exchange(
  socket: dgram.Socket,
  message: Buffer,
  xid: number,
  to: { host: string; port: number },
  timeoutMs: number,
): Promise<boolean | undefined> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: Buffer) => {
      let result: boolean;
      try {
        const reply = decodeReply(msg);
        if (reply.xid !== xid) return;
        if (reply.kind !== "success" || reply.result.length !== 4) {
          throw new ProtocolError(`rpcbind answered ${reply.kind}`);
        }
        result = reply.result.readUInt32BE(0) === 1;
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        done();
        reject(new Error(`bad reply from rpcbind: ${err.message}`, { cause: err }));
        return;
      }
      done();
      resolve(result);
    };
    const timer = setTimeout(() => {
      done();
      resolve(undefined);
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      socket.off("message", onMessage);
    };
    socket.on("message", onMessage);
    socket.send(message, to.port, to.host);
  });
}

/** A UDP socket on a port under 1024 if we may bind one (as bindresvport() does), else any. */
async function bindReserved(type: "udp4" | "udp6"): Promise<dgram.Socket> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const socket = dgram.createSocket(type);
    const ok = await new Promise<boolean>((resolve) => {
      socket.once("error", () => {
        socket.close();
        resolve(false);
      });
      socket.bind(attempt < 19 ? randomInt(600, 1024) : 0, () => {
        socket.removeAllListeners("error");
        resolve(true);
      });
    });
    if (ok) {
      // Without a listener an ICMP-driven socket error would be thrown; a lost reply is a timeout.
      socket.on("error", () => undefined);
      return socket;
    }
  }
  throw new Error("could not bind a UDP socket to talk to rpcbind");
}
