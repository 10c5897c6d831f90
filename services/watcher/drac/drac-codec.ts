/**
 * The DRAC program (ixs/drac: drac.x; shared/reference/drac-rpc.md section 2): its constants and
 * the XDR of DRACPROC_ADD's argument and result. Pure: argument bytes in, a canonical client
 * address out, or a ProtocolError (which the dispatcher answers GARBAGE_ARGS).
 *
 * Version 1 (`drac_add_parm { unsigned long ip_addr; }`): one XDR word whose four bytes are the
 * address in dotted-quad order (the client ntohl()s before encoding).
 * Version 2, Debian's IPv6 patch (`drac_add_parm6 { char ip_addr6[16]; }`): rpcgen emits a vector
 * of xdr_char, so each byte travels as its own 4-byte word, sign-extended where char is signed
 * (x86: 0xfe -> ff ff ff fe) and zero-extended where it is not. Both forms are accepted; a word
 * that neither form can produce is garbage. An IPv4-mapped address becomes IPv4.
 * The argument must fill the call exactly: trailing bytes are garbage too (libdrac sends none).
 */
import { tryParseAddress, type ClientAddress } from "../../../shared/address.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

// drac.x
export const DRACPROG = 900101;
export const DRACVERS = 1;
/** Debian's IPv6 version (drac.x: `version DRACVERS6 { ... } = 2`). */
export const DRACVERS6 = 2;
/** Implicit in every rpcgen program: a void call that answers a void reply. */
export const NULLPROC = 0;
export const DRACPROC_ADD = 1;

// drac.x `enum addstat` (the misspelling ADD_UNKOWN is upstream's).
export const ADD_SUCCESS = 0;
export const ADD_PERM = 1;
export const ADD_SYSERR = 2;
export const ADD_UNKOWN = 3;

/** Argument sizes: one word for v1, sixteen for v2. */
export const DRAC_V1_ARG_BYTES = 4;
export const DRAC_V2_ARG_BYTES = 64;

/** Decodes DRACPROC_ADD's argument for `vers` (DRACVERS or DRACVERS6). */
export function decodeDracAddArgs(vers: number, args: Buffer): ClientAddress {
  const expected = vers === DRACVERS ? DRAC_V1_ARG_BYTES : DRAC_V2_ARG_BYTES;
  if (args.length !== expected) {
    throw new ProtocolError(`DRAC v${vers} argument is ${args.length} bytes, not ${expected}`);
  }
  const r = new XdrReader(args);
  let text: string;
  if (vers === DRACVERS) {
    const v = r.uint("ip_addr");
    text = `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
  } else {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++)
      groups.push(((charWord(r, 2 * i) << 8) | charWord(r, 2 * i + 1)).toString(16));
    text = groups.join(":");
  }
  const address = tryParseAddress(text);
  // Both texts are built from in-range numbers, so this is our bug, not the peer's.
  if (address === undefined) throw new Error(`built an unparsable address ${text}`);
  return address;
}

/** One xdr_char: 0..255 from an unsigned char, or -128..-1 sign-extended from a signed one. */
function charWord(r: XdrReader, i: number): number {
  const w = r.uint(`ip_addr6[${i}]`);
  if (w <= 0xff) return w;
  if (w >= 0xffffff80) return w & 0xff;
  throw new ProtocolError(`ip_addr6[${i}] is 0x${w.toString(16)}, not a char`);
}

/**
 * Encodes DRACPROC_ADD's argument (our client and tests): 4 bytes for v1, 16 for v2.
 * `signedChar` picks the x86 form of v2 (bytes >= 0x80 sign-extended), as libdrac sends it there.
 * @throws RangeError if the byte count does not fit the version: a caller's bug.
 */
export function encodeDracAddArgs(vers: number, bytes: Uint8Array, signedChar = true): Buffer {
  const w = new XdrWriter(DRAC_V2_ARG_BYTES);
  if (vers === DRACVERS) {
    if (bytes.length !== 4) throw new RangeError("DRAC v1 takes an IPv4 address");
    w.fixed(bytes);
    return w.toBuffer();
  }
  if (bytes.length !== 16) throw new RangeError("DRAC v2 takes 16 address bytes");
  for (const b of bytes) {
    if (signedChar && b >= 0x80) w.int(b - 0x100);
    else w.uint(b);
  }
  return w.toBuffer();
}

/** The result of DRACPROC_ADD: one XDR enum. */
export function encodeAddStat(stat: number): Buffer {
  return new XdrWriter(4).uint(stat).toBuffer();
}

/** @throws ProtocolError unless the result is exactly one word. */
export function decodeAddStat(result: Buffer): number {
  if (result.length !== 4) throw new ProtocolError(`addstat is ${result.length} bytes, not 4`);
  return result.readUInt32BE(0);
}

/** 16 bytes for any address a DRAC v2 client could send: IPv4 becomes IPv4-mapped. */
export function ipv6Bytes(address: ClientAddress): Uint8Array {
  if (address.family === 6) return address.bytes;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(address.bytes, 12);
  return out;
}
