/**
 * A stand-in portmapper / rpcbind for the DRAC program (RFC 1833; drac-rpc.md 2.5), for
 * RELAYLEASE_PORTMAP_LISTEN. libdrac clients always ask port 111 of the DRAC host where the
 * program lives, by PMAP v2 GETPORT or by rpcbind v3/v4 GETADDR; this answers both from a fixed
 * table of our own registrations (the DRAC listeners), and never registers anything for others.
 *
 * Answers (program 100000):
 * - v2: NULL; GETPORT -> our port, 0 when not registered; DUMP -> our mappings (TCP only);
 *   SET/UNSET -> FALSE (refused: we are not the host's registry); CALLIT -> PROC_UNAVAIL.
 * - v3/v4: NULL; GETADDR (and v4 GETVERSADDR) -> a universal address, "" when not registered;
 *   DUMP -> our entries (TCP only); SET/UNSET -> FALSE; everything else -> PROC_UNAVAIL.
 * A lookup for a registered program but another version gets the port of some version, as
 * rpcbind's find_service() does, so the client then hears PROG_MISMATCH from the program itself;
 * GETVERSADDR matches the version exactly (RFC 1833).
 * DUMP is refused over UDP: its reply is several times the size of the request, a known
 * amplification vector for spoofed datagrams; rpcinfo uses TCP for it anyway.
 *
 * Universal addresses (RFC 1833 "Universal addresses"; RFC 5665): `h1.h2.h3.h4.p1.p2` for IPv4,
 * `<ipv6>.p1.p2` for IPv6. A registration bound to a wildcard address has no host of its own; it
 * is given the local address the lookup arrived on when the socket tells it, else loopback.
 */
import { tryParseAddress } from "../../../shared/address.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import type { RpcCall } from "./rpc-codec.ts";
import type { CallContext, CallOutcome, RpcProgram } from "./session.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

// RFC 1833 section 3 (rpcbind) and section 4 (portmapper).
export const PMAP_PROG = 100000;
export const PMAP_VERS = 2;
export const RPCBVERS = 3;
export const RPCBVERS4 = 4;
export const PMAPPROC_NULL = 0;
export const PMAPPROC_SET = 1;
export const PMAPPROC_UNSET = 2;
export const PMAPPROC_GETPORT = 3;
export const PMAPPROC_DUMP = 4;
export const PMAPPROC_CALLIT = 5;
export const RPCBPROC_NULL = 0;
export const RPCBPROC_SET = 1;
export const RPCBPROC_UNSET = 2;
export const RPCBPROC_GETADDR = 3;
export const RPCBPROC_DUMP = 4;
export const RPCBPROC_GETVERSADDR = 9;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Netids of /etc/netconfig that a DRAC client can ask for. */
export type Netid = "udp" | "tcp" | "udp6" | "tcp6";

/** PMAP v2 `mapping`. */
export interface PmapMapping {
  readonly prog: number;
  readonly vers: number;
  readonly prot: number;
  readonly port: number;
}

/** rpcbind v3/v4 `rpcb`. */
export interface Rpcb {
  readonly prog: number;
  readonly vers: number;
  readonly netid: string;
  readonly addr: string;
  readonly owner: string;
}

/** One of our programs listening somewhere; `host` undefined means a wildcard bind. */
export interface Registration {
  readonly prog: number;
  readonly vers: number;
  readonly netid: Netid;
  readonly host: string | undefined;
  readonly port: number;
}

/** rpcbind strings are unbounded in the RFC; real netids, uaddrs and owners are far shorter. */
export const MAX_RPCB_STRING = 255;
/** Most entries our own client reads from a DUMP list. */
const MAX_LIST_ENTRIES = 1024;
const OWNER = "relaylease";

export function encodeMapping(m: PmapMapping): Buffer {
  return new XdrWriter(16).uint(m.prog).uint(m.vers).uint(m.prot).uint(m.port).toBuffer();
}

/** @throws ProtocolError unless `args` is exactly one mapping. */
export function decodeMapping(args: Buffer): PmapMapping {
  const r = new XdrReader(args);
  const m = {
    prog: r.uint("prog"),
    vers: r.uint("vers"),
    prot: r.uint("prot"),
    port: r.uint("port"),
  };
  exhausted(r, "mapping");
  return m;
}

export function encodeRpcb(b: Rpcb): Buffer {
  const w = new XdrWriter(64).uint(b.prog).uint(b.vers);
  return w.string(b.netid).string(b.addr).string(b.owner).toBuffer();
}

/** @throws ProtocolError unless `args` is exactly one rpcb with strings within MAX_RPCB_STRING. */
export function decodeRpcb(args: Buffer): Rpcb {
  const r = new XdrReader(args);
  const b = readRpcb(r);
  exhausted(r, "rpcb");
  return b;
}

function readRpcb(r: XdrReader): Rpcb {
  return {
    prog: r.uint("r_prog"),
    vers: r.uint("r_vers"),
    netid: r.string(MAX_RPCB_STRING, "r_netid"),
    addr: r.string(MAX_RPCB_STRING, "r_addr"),
    owner: r.string(MAX_RPCB_STRING, "r_owner"),
  };
}

function exhausted(r: XdrReader, what: string): void {
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} bytes after the ${what}`);
}

/** PMAP v2 DUMP result: `pmaplist`, an XDR optional-data list. */
export function encodePmapList(mappings: readonly PmapMapping[]): Buffer {
  const w = new XdrWriter();
  for (const m of mappings) w.bool(true).uint(m.prog).uint(m.vers).uint(m.prot).uint(m.port);
  return w.bool(false).toBuffer();
}

export function decodePmapList(result: Buffer): PmapMapping[] {
  return readList(result, (r) => ({
    prog: r.uint("prog"),
    vers: r.uint("vers"),
    prot: r.uint("prot"),
    port: r.uint("port"),
  }));
}

/** rpcbind v3/v4 DUMP result: `rpcblist_ptr`. */
export function encodeRpcbList(entries: readonly Rpcb[]): Buffer {
  const w = new XdrWriter();
  for (const b of entries)
    w.bool(true).uint(b.prog).uint(b.vers).string(b.netid).string(b.addr).string(b.owner);
  return w.bool(false).toBuffer();
}

export function decodeRpcbList(result: Buffer): Rpcb[] {
  return readList(result, readRpcb);
}

function readList<T>(result: Buffer, item: (r: XdrReader) => T): T[] {
  const r = new XdrReader(result);
  const out: T[] = [];
  while (r.bool("list follows")) {
    if (out.length === MAX_LIST_ENTRIES)
      throw new ProtocolError(`more than ${MAX_LIST_ENTRIES} entries`);
    out.push(item(r));
  }
  exhausted(r, "list");
  return out;
}

/** A GETPORT/GETADDR result: one uint port, or one string. */
export function encodePort(port: number): Buffer {
  return new XdrWriter(4).uint(port).toBuffer();
}

export function decodePort(result: Buffer): number {
  const r = new XdrReader(result);
  const port = r.uint("port");
  exhausted(r, "port");
  return port;
}

export function encodeString(s: string): Buffer {
  return new XdrWriter(s.length + 8).string(s).toBuffer();
}

export function decodeString(result: Buffer): string {
  const r = new XdrReader(result);
  const s = r.string(MAX_RPCB_STRING, "string");
  exhausted(r, "string");
  return s;
}

/** `127.0.0.1.128.3` for 127.0.0.1 port 32771; IPv6 text likewise with the port appended. */
export function encodeUniversalAddress(host: string, port: number): string {
  return `${host}.${port >> 8}.${port & 0xff}`;
}

/** The host and port of a universal address, or undefined if it is not one. */
export function parseUniversalAddress(uaddr: string): { host: string; port: number } | undefined {
  const m = /^(.+)\.(\d{1,3})\.(\d{1,3})$/.exec(uaddr);
  const hi = Number(m?.[2]);
  const lo = Number(m?.[3]);
  const host = tryParseAddress(m?.[1] ?? "");
  if (host === undefined || !(hi <= 255 && lo <= 255)) return undefined;
  return { host: host.text, port: hi * 256 + lo };
}

const NETID_BY_PROT: Readonly<Record<number, Netid>> = {
  [IPPROTO_UDP]: "udp",
  [IPPROTO_TCP]: "tcp",
};
const PROT_BY_NETID: Readonly<Record<string, number>> = { udp: IPPROTO_UDP, tcp: IPPROTO_TCP };

/** Exact version first, then any version of the program on that netid (rpcbind's find_service). */
function find(
  table: readonly Registration[],
  prog: number,
  vers: number,
  netid: string,
  exact: boolean,
): Registration | undefined {
  const same = table.filter((r) => r.prog === prog && r.netid === netid);
  return same.find((r) => r.vers === vers) ?? (exact ? undefined : same[0]);
}

function hostFor(reg: Registration, ctx: CallContext): string {
  if (reg.host !== undefined) return reg.host;
  const v6 = reg.netid.endsWith("6");
  const local = ctx.localHost === undefined ? undefined : tryParseAddress(ctx.localHost);
  if (local !== undefined && (local.family === 6) === v6) return local.text;
  return v6 ? "::1" : "127.0.0.1";
}

/** The portmapper program over `registrations()`, read on every call. */
export function portmapProgram(registrations: () => readonly Registration[]): RpcProgram {
  return {
    prog: PMAP_PROG,
    low: PMAP_VERS,
    high: RPCBVERS4,
    answer: (call, ctx) => {
      try {
        return call.vers === PMAP_VERS
          ? answerV2(call, ctx, registrations())
          : answerV3(call, ctx, registrations());
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        return { reply: { kind: "garbage-args", xid: call.xid }, event: "garbage-args" };
      }
    },
  };
}

const VOID = Buffer.alloc(0);
const FALSE = new XdrWriter(4).bool(false).toBuffer();

function ok(call: RpcCall, result: Buffer, event: string): CallOutcome {
  return { reply: { kind: "success", xid: call.xid, result }, event };
}

function unavailable(call: RpcCall, event = "proc-unavail"): CallOutcome {
  return { reply: { kind: "proc-unavail", xid: call.xid }, event };
}

function answerV2(call: RpcCall, ctx: CallContext, table: readonly Registration[]): CallOutcome {
  switch (call.proc) {
    case PMAPPROC_NULL:
      return ok(call, VOID, "null");
    case PMAPPROC_SET:
    case PMAPPROC_UNSET:
      decodeMapping(call.args);
      return ok(call, FALSE, "set-refused");
    case PMAPPROC_GETPORT: {
      const m = decodeMapping(call.args);
      const netid = NETID_BY_PROT[m.prot];
      const reg = netid === undefined ? undefined : find(table, m.prog, m.vers, netid, false);
      return ok(call, encodePort(reg?.port ?? 0), "getport");
    }
    case PMAPPROC_DUMP: {
      if (ctx.transport === "udp") return unavailable(call, "dump-refused");
      const mappings = table.flatMap((r) => {
        const prot = PROT_BY_NETID[r.netid];
        return prot === undefined ? [] : [{ prog: r.prog, vers: r.vers, prot, port: r.port }];
      });
      return ok(call, encodePmapList(mappings), "dump");
    }
    default:
      return unavailable(call);
  }
}

function answerV3(call: RpcCall, ctx: CallContext, table: readonly Registration[]): CallOutcome {
  switch (call.proc) {
    case RPCBPROC_NULL:
      return ok(call, VOID, "null");
    case RPCBPROC_SET:
    case RPCBPROC_UNSET:
      decodeRpcb(call.args);
      return ok(call, FALSE, "set-refused");
    case RPCBPROC_GETADDR:
    case RPCBPROC_GETVERSADDR: {
      if (call.proc === RPCBPROC_GETVERSADDR && call.vers !== RPCBVERS4) return unavailable(call);
      const b = decodeRpcb(call.args);
      const reg = find(table, b.prog, b.vers, b.netid, call.proc === RPCBPROC_GETVERSADDR);
      const uaddr = reg === undefined ? "" : encodeUniversalAddress(hostFor(reg, ctx), reg.port);
      return ok(call, encodeString(uaddr), "getaddr");
    }
    case RPCBPROC_DUMP: {
      if (ctx.transport === "udp") return unavailable(call, "dump-refused");
      const entries = table.map((r) => ({
        prog: r.prog,
        vers: r.vers,
        netid: r.netid,
        addr: encodeUniversalAddress(hostFor(r, ctx), r.port),
        owner: OWNER,
      }));
      return ok(call, encodeRpcbList(entries), "dump");
    }
    default:
      return unavailable(call);
  }
}
