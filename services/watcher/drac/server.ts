/**
 * The DRAC login source: rpc.dracd's RPC front door (RELAYLEASE_DRAC_LISTEN) and a stand-in
 * portmapper for it (RELAYLEASE_PORTMAP_LISTEN), so POP/IMAP servers patched with libdrac's
 * dracauth() report their logins to relaylease unchanged (drac-rpc.md section 7).
 *
 * Accepts DRACPROC_ADD v1 (IPv4) and v2 (Debian's IPv6 patch) over UDP and TCP from callers in
 * the allow list (RELAYLEASE_DRAC_ALLOW, allow-list.ts); a caller outside it gets ADD_PERM and
 * nothing is reported. Each accepted call is answered ADD_SUCCESS first and then reported to the
 * sink as a login (source "drac"); a repeated call is a repeated login, which the authorizer
 * turns into a renewal. The sink is called once the reply has reached the kernel, on the event
 * loop, so it must not block (fire and forget); whatever it throws is logged and counted.
 *
 * The portmapper, when configured, answers PMAP v2 GETPORT and rpcbind v3/v4 GETADDR for program
 * 900101 versions 1 and 2 with the DRAC listener's port (portmap.ts). Unmodified libdrac clients
 * only ever ask port 111, so in production RELAYLEASE_PORTMAP_LISTEN is host:111 unless the
 * host's own rpcbind is told about us instead (rpcbind-register.ts).
 *
 * Limits and timeouts: rpc-server.ts.
 */
import type { Logger } from "../../../shared/log.ts";
import type { AllowList } from "./allow-list.ts";
import { DRACPROG, DRACVERS, DRACVERS6 } from "./drac-codec.ts";
import { dracProgram } from "./drac-program.ts";
import { portmapProgram, type Netid, type Registration } from "./portmap.ts";
import type { RecordLimits } from "./record-marking.ts";
import { startRpcServer, type RpcServer, type RpcServerStats } from "./rpc-server.ts";
import type { CallContext, CallOutcome } from "./session.ts";

import type { LoginSink } from "../login-sink.ts";
export type { LoginSink };

export interface DracServerOptions {
  /** RELAYLEASE_DRAC_LISTEN: "host:port" for UDP and TCP alike. */
  listen: string;
  /** RELAYLEASE_PORTMAP_LISTEN: "host:port"; undefined runs no portmapper. */
  portmapListen?: string | undefined;
  /** The parsed allow list, or a function returning the current one (for reloads). */
  allowList: AllowList | (() => AllowList);
  sink: LoginSink;
  log: Logger;
  /** `service` of every reported login: DRAC does not say whether POP or IMAP called. */
  service?: string;
  /**
   * Host advertised in universal addresses when the DRAC listener is bound to a wildcard; by
   * default the address the portmap lookup arrived on, or loopback.
   */
  advertiseHost?: string;
  maxConnections?: number;
  idleTimeoutMs?: number;
  recordTimeoutMs?: number;
  closeTimeoutMs?: number;
  limits?: RecordLimits;
}

export interface DracServerStats {
  /** Logins handed to the sink. */
  logins: number;
  /** Calls refused with ADD_PERM. */
  denied: number;
  /** The sink threw. */
  sinkErrors: number;
  readonly drac: Readonly<RpcServerStats>;
  readonly portmap: Readonly<RpcServerStats> | undefined;
}

export interface DracServer {
  /** "host:port" of the DRAC listener (UDP and TCP). */
  readonly address: string;
  readonly port: number;
  /** "host:port" of the portmapper, if one runs. */
  readonly portmapAddress: string | undefined;
  /** What the portmapper answers from. */
  readonly registrations: readonly Registration[];
  readonly stats: Readonly<DracServerStats>;
  close(): Promise<void>;
}

export const DRAC_SOURCE = "drac";
const DEFAULT_SERVICE = "unknown";
const WARN_INTERVAL_MS = 10_000;

export async function startDracServer(options: DracServerOptions): Promise<DracServer> {
  const log = options.log.child({ module: "drac" });
  const { allowList } = options;
  const currentList = typeof allowList === "function" ? allowList : () => allowList;
  const service = options.service ?? DEFAULT_SERVICE;
  const common = {
    maxConnections: options.maxConnections,
    idleTimeoutMs: options.idleTimeoutMs,
    recordTimeoutMs: options.recordTimeoutMs,
    closeTimeoutMs: options.closeTimeoutMs,
    limits: options.limits,
  };
  const counts = { logins: 0, denied: 0, sinkErrors: 0 };
  let lastWarn = 0;
  const onOutcome = (outcome: CallOutcome, ctx: CallContext): void => {
    if (outcome.event === "denied") {
      counts.denied++;
      if (Date.now() - lastWarn >= WARN_INTERVAL_MS) {
        lastWarn = Date.now();
        log.warn(
          { caller: ctx.caller?.text, transport: ctx.transport },
          "DRAC caller not in the allow list; answered ADD_PERM",
        );
      }
    }
    if (outcome.login === undefined) return;
    const ip = outcome.login.address.text;
    try {
      options.sink.login({ ip, service, source: DRAC_SOURCE });
      counts.logins++;
      log.debug({ ip, caller: ctx.caller?.text, version: outcome.login.version }, "DRAC login");
    } catch (err) {
      counts.sinkErrors++;
      log.error({ err, ip }, "login sink failed");
    }
  };
  const drac = await startRpcServer({
    ...common,
    listen: options.listen,
    programs: [dracProgram(currentList)],
    log,
    onOutcome,
  });
  const registrations = registrationsFor(drac, options.advertiseHost);
  let portmap: RpcServer | undefined;
  try {
    if (options.portmapListen !== undefined) {
      portmap = await startRpcServer({
        ...common,
        listen: options.portmapListen,
        programs: [portmapProgram(() => registrations)],
        log: options.log.child({ module: "portmap" }),
      });
    }
  } catch (err) {
    await drac.close();
    throw err;
  }
  // The same object the outcome handler counts into, now with the servers' own counters.
  const stats: DracServerStats = Object.assign(counts, {
    drac: drac.stats,
    portmap: portmap?.stats,
  });
  return {
    address: drac.address,
    port: drac.port,
    portmapAddress: portmap?.address,
    registrations,
    stats,
    close: async () => {
      await Promise.all([drac.close(), portmap?.close()]);
    },
  };
}

/** Both DRAC versions on every netid the listener can be reached by. */
function registrationsFor(drac: RpcServer, advertiseHost: string | undefined): Registration[] {
  const v6 = drac.host.includes(":");
  const netids: Netid[] =
    drac.host === "::" ? ["udp", "tcp", "udp6", "tcp6"] : v6 ? ["udp6", "tcp6"] : ["udp", "tcp"];
  const out: Registration[] = [];
  for (const vers of [DRACVERS, DRACVERS6]) {
    for (const netid of netids) {
      const wantV6 = netid.endsWith("6");
      const advertised =
        advertiseHost !== undefined && advertiseHost.includes(":") === wantV6
          ? advertiseHost
          : undefined;
      const host = drac.wildcard ? advertised : drac.host;
      out.push({ prog: DRACPROG, vers, netid, host, port: drac.port });
    }
  }
  return out;
}
