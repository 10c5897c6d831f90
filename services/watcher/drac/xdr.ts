/**
 * XDR (RFC 4506) primitives for the ONC RPC codecs: a bounds-checked reader over one message and
 * a growable writer. Pure; the reader throws only ProtocolError, naming what it was reading.
 *
 * Only what DRAC, portmap and rpcbind need: unsigned and signed 32-bit integers, booleans,
 * variable-length opaque data and strings (each with an explicit maximum, RFC 4506 4.10/4.11
 * `opaque<max>` / `string<max>`), padded to a multiple of four bytes.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";

/** Bytes of padding that bring `n` up to a multiple of four (RFC 4506 3: "XDR block size"). */
export function xdrPad(n: number): number {
  return (4 - (n & 3)) & 3;
}

export class XdrReader {
  readonly #buf: Buffer;
  #offset = 0;

  constructor(buf: Buffer) {
    this.#buf = buf;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#buf.length - this.#offset;
  }

  #need(n: number, what: string): void {
    if (this.#buf.length - this.#offset < n) {
      throw new ProtocolError(`truncated ${what}: needs ${n} bytes, ${this.remaining} left`);
    }
  }

  uint(what: string): number {
    this.#need(4, what);
    const v = this.#buf.readUInt32BE(this.#offset);
    this.#offset += 4;
    return v;
  }

  int(what: string): number {
    this.#need(4, what);
    const v = this.#buf.readInt32BE(this.#offset);
    this.#offset += 4;
    return v;
  }

  /** RFC 4506 4.4: only 0 and 1 are booleans. */
  bool(what: string): boolean {
    const v = this.uint(what);
    if (v > 1) throw new ProtocolError(`${what}: ${v} is not a boolean`);
    return v === 1;
  }

  /** `opaque<max>`: the length is checked against `max` before anything is read or copied. */
  opaque(max: number, what: string): Buffer {
    const length = this.uint(`${what} length`);
    if (length > max) throw new ProtocolError(`${what}: ${length} bytes, at most ${max}`);
    const padded = length + xdrPad(length);
    this.#need(padded, what);
    const out = Buffer.from(this.#buf.subarray(this.#offset, this.#offset + length));
    this.#offset += padded;
    return out;
  }

  /** `string<max>`, ASCII/latin1 as RPC netids and universal addresses are; NUL is refused. */
  string(max: number, what: string): string {
    const bytes = this.opaque(max, what);
    if (bytes.includes(0)) throw new ProtocolError(`${what}: NUL byte`);
    return bytes.toString("latin1");
  }

  /** The unread rest, copied so it does not pin the datagram or record it came from. */
  rest(): Buffer {
    const out = Buffer.from(this.#buf.subarray(this.#offset));
    this.#offset = this.#buf.length;
    return out;
  }
}

export class XdrWriter {
  #buf: Buffer;
  #length = 0;

  constructor(initial = 64) {
    this.#buf = Buffer.alloc(initial);
  }

  #room(n: number): void {
    if (this.#length + n <= this.#buf.length) return;
    const grown = Buffer.alloc(Math.max(this.#buf.length * 2, this.#length + n));
    this.#buf.copy(grown, 0, 0, this.#length);
    this.#buf = grown;
  }

  /** @throws RangeError for a value outside 0..2^32-1: a bug in the caller. */
  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`uint ${v}`);
    this.#room(4);
    this.#buf.writeUInt32BE(v, this.#length);
    this.#length += 4;
    return this;
  }

  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
      throw new RangeError(`int ${v}`);
    }
    this.#room(4);
    this.#buf.writeInt32BE(v, this.#length);
    this.#length += 4;
    return this;
  }

  bool(v: boolean): this {
    return this.uint(v ? 1 : 0);
  }

  opaque(bytes: Uint8Array): this {
    this.uint(bytes.length);
    return this.fixed(bytes);
  }

  string(s: string): this {
    return this.opaque(Buffer.from(s, "latin1"));
  }

  /** Bytes as they are plus XDR padding (fixed-length opaque, RFC 4506 4.9). */
  fixed(bytes: Uint8Array): this {
    const pad = xdrPad(bytes.length);
    this.#room(bytes.length + pad);
    this.#buf.set(bytes, this.#length);
    this.#buf.fill(0, this.#length + bytes.length, this.#length + bytes.length + pad);
    this.#length += bytes.length + pad;
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#length));
  }
}
