/**
 * The DRAC caller access list, `dracd.allow` (RELAYLEASE_DRAC_ALLOW; drac-rpc.md 4.2): which RPC
 * callers may add an address. Only the caller's source address is checked, never the address it
 * asks for; a caller outside the list gets ADD_PERM.
 *
 * Accepted lines, first match wins, as rpc.dracd reads them:
 *   255.255.255.0   192.0.2.0        netmask netaddr, both dotted quads (rpc.dracd's own form)
 *   192.0.2.0/24                     CIDR, IPv4 or IPv6 (also `[2001:db8::]/32`)
 *   2001:db8::1                      a bare address: that host only (not 255.x.x.x, which
 *                                    is a netmask whose netaddr is missing)
 * `#` starts a comment, at the start of a line or after the entry; blank lines are skipped.
 *
 * Unlike rpc.dracd, which silently ignores what its scanf cannot read and silently never matches a
 * netaddr with host bits set, every such line is reported with its number; the caller decides
 * whether that is fatal. A non-contiguous netmask (255.0.255.0) is reported too: rpc.dracd would
 * take it, but it is far likelier a typo than an intent.
 *
 * A missing file means what it meant to rpc.dracd: loopback plus this host's own addresses
 * (defaultAllowList()).
 */
import { readFile } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import {
  AddressError,
  networkContains,
  parseNetwork,
  tryParseAddress,
  type ClientAddress,
  type Network,
} from "../../../shared/address.ts";

export interface AllowList {
  readonly networks: readonly Network[];
}

export interface AllowListError {
  /** 1-based line number in the file. */
  readonly line: number;
  readonly message: string;
}

/** The file's longest sensible line is well under this; longer lines are reported, not parsed. */
const MAX_LINE_LENGTH = 256;

export function isAllowed(list: AllowList, caller: ClientAddress | undefined): boolean {
  if (caller === undefined) return false;
  return list.networks.some((net) => networkContains(net, caller));
}

/** Parses the text of a dracd.allow file; good lines become networks, bad ones errors. */
export function parseAllowList(text: string): { list: AllowList; errors: AllowListError[] } {
  const networks: Network[] = [];
  const errors: AllowListError[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? "";
    if (line.length > MAX_LINE_LENGTH) {
      errors.push({ line: i + 1, message: `longer than ${MAX_LINE_LENGTH} characters` });
      continue;
    }
    const hash = line.indexOf("#");
    const fields = (hash < 0 ? line : line.slice(0, hash)).trim().split(/\s+/).filter(Boolean);
    if (fields.length === 0) continue;
    try {
      networks.push(parseEntry(fields));
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      errors.push({ line: i + 1, message: err.message });
    }
  }
  return { list: { networks }, errors };
}

function parseEntry(fields: string[]): Network {
  const [first = "", second, ...extra] = fields;
  if (extra.length > 0) {
    throw new AddressError(`expected "netmask netaddr", a CIDR network or an address`);
  }
  if (second === undefined) {
    // 255.0.0.0/8 is reserved, never a caller: a lone 255.x.x.x is a netmask missing its netaddr.
    if (first.startsWith("255."))
      throw new AddressError(`netmask ${JSON.stringify(first)} without a netaddr`);
    return parseNetwork(first);
  }
  const mask = tryParseAddress(first);
  const prefix = mask?.family === 4 && mask.text === first ? maskPrefix(mask.bytes) : -1;
  if (prefix < 0) {
    throw new AddressError(
      `invalid netmask ${JSON.stringify(first)}: not a contiguous dotted-quad mask`,
    );
  }
  const addr = tryParseAddress(second);
  if (addr?.family !== 4 || addr.text !== second) {
    throw new AddressError(`invalid netaddr ${JSON.stringify(second)}: not an IPv4 dotted quad`);
  }
  return parseNetwork(`${second}/${prefix}`);
}

/** Prefix length of a contiguous mask (255.255.254.0 -> 23), or -1. */
function maskPrefix(bytes: Uint8Array): number {
  const v =
    (((bytes[0] ?? 0) << 24) |
      ((bytes[1] ?? 0) << 16) |
      ((bytes[2] ?? 0) << 8) |
      (bytes[3] ?? 0)) >>>
    0;
  const inverted = ~v >>> 0;
  // A contiguous mask is ones then zeros: its inverse plus one is a power of two.
  if ((inverted & (inverted + 1)) !== 0) return -1;
  return 32 - Math.log2(inverted + 1);
}

/**
 * What rpc.dracd trusts without a file: 127.0.0.1 and the host's own addresses. We add ::1, and
 * take the addresses from the interfaces rather than from a lookup of the host name.
 */
export function defaultAllowList(): AllowList {
  const texts = new Set(["127.0.0.1", "::1"]);
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? [])
      if (info.scopeid === undefined || info.scopeid === 0) texts.add(info.address);
  }
  const networks: Network[] = [];
  for (const text of texts) {
    const addr = tryParseAddress(text);
    if (addr !== undefined) networks.push(parseNetwork(addr.text));
  }
  return { networks };
}

/**
 * Reads `path`; a missing file gives defaultAllowList() with `missing: true` so the caller can
 * say so. Other read errors are thrown: an unreadable list is a configuration error.
 */
export async function loadAllowList(
  path: string,
): Promise<{ list: AllowList; errors: AllowListError[]; missing: boolean }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      return { list: defaultAllowList(), errors: [], missing: true };
    }
    throw err;
  }
  return { ...parseAllowList(text), missing: false };
}
