// Client address canonicaliser: the one place that turns an address as a peer wrote it (HTTP API,
// Dovecot log `rip=`, Postfix policy `client_address`, socketmap keys, milter connect) into one
// canonical form, and that form into a lease key (DESIGN.md, "Events and leases").
//
// Accepts: IPv4 as a strict dotted quad; IPv6 in any RFC 4291 text form, any case, with an
// embedded IPv4 tail; either wrapped the ways MTAs write them: an `IPv6:` tag (any case), and/or
// brackets (`[1.2.3.4]`, `[::1]`, `[IPv6:::1]`). An IPv4-mapped IPv6 address becomes IPv4.
// Rejects: IPv4 short or octal-looking forms (`1.2.3`, `010.1.1.1`), zone ids, ports, surrounding
// whitespace, the empty string. Limit: input over MAX_INPUT_LENGTH characters is rejected before
// any parsing, so a peer cannot make us work hard. No regular expressions on the hot path.

export class AddressError extends Error {
  override name = "AddressError";
}

/** Made by parseAddress and tryParseAddress only: `text` and `bytes` always agree. */
export interface ClientAddress {
  readonly family: 4 | 6;
  /** IPv4 dotted quad, or IPv6 in RFC 5952 form (always hex, never a dotted tail). */
  readonly text: string;
  /** 4 or 16 bytes, network order. Shared, do not mutate. */
  readonly bytes: Uint8Array;
}

export type Ipv6LeasePrefix = 64 | 128;

export interface Network {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
  /** Canonical CIDR text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  readonly text: string;
}

/** The longest valid form, `[IPv6:` + a 45-char IPv6 + `]`, is 52; anything longer is junk. */
export const MAX_INPUT_LENGTH = 64;

// Failure codes from the parsers: negative numbers, so the hot path allocates nothing on failure.
const E_SYNTAX = -1;
const E_EMPTY = -2;
const E_TOO_LONG = -3;
const E_LEADING_ZERO = -4;
const E_OCTET_RANGE = -5;
const E_ZONE = -6;
const E_PORT = -7;
const REASONS: Readonly<Record<number, string>> = {
  [E_SYNTAX]: "not an IPv4 dotted quad or IPv6 address",
  [E_EMPTY]: "empty",
  [E_TOO_LONG]: `longer than ${MAX_INPUT_LENGTH} characters`,
  [E_LEADING_ZERO]: "IPv4 octet with a leading zero (octal or decimal is ambiguous)",
  [E_OCTET_RANGE]: "IPv4 octet over 255",
  [E_ZONE]: "IPv6 zone id not accepted",
  [E_PORT]: "port not accepted",
};

const COLON = 0x3a;
const DOT = 0x2e;
const PERCENT = 0x25;

function quote(input: string): string {
  return JSON.stringify(input.length > 100 ? `${input.slice(0, 100)}…` : input);
}

function fail(what: string, input: string, code: number): never {
  throw new AddressError(`invalid ${what} ${quote(input)}: ${REASONS[code] ?? "invalid"}`);
}

/** Dotted quad in s[p, end) as an unsigned 32-bit number, or a negative failure code. */
function parseIpv4(s: string, p: number, end: number): number {
  let value = 0;
  for (let i = 0; i < 4; i++) {
    if (i > 0) {
      if (p >= end || s.charCodeAt(p) !== DOT) return E_SYNTAX;
      p++;
    }
    const start = p;
    let octet = 0;
    // Read at most 4 digits: enough to see that 3 was too many, without unbounded work.
    while (p < end && p - start < 4) {
      const d = s.charCodeAt(p) - 0x30;
      if (d < 0 || d > 9) break;
      octet = octet * 10 + d;
      p++;
    }
    if (p === start || p - start > 3) return E_SYNTAX;
    if (p - start > 1 && s.charCodeAt(start) === 0x30) return E_LEADING_ZERO;
    if (octet > 255) return E_OCTET_RANGE;
    value = value * 256 + octet;
  }
  if (p === end) return value;
  return s.charCodeAt(p) === COLON ? E_PORT : E_SYNTAX;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20; // ASCII letters only differ in this bit
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

// Scratch for the IPv6 parser; safe to share because parsing is synchronous and not reentrant.
const words = new Uint16Array(8);

/** IPv6 text in s[p, end) into out (16 bytes); returns 0 or a negative failure code. */
function parseIpv6(s: string, p: number, end: number, out: Uint8Array): number {
  let n = 0; // groups read, an IPv4 tail counting as two
  let gap = -1; // group index where `::` stands
  if (s.charCodeAt(p) === COLON) {
    if (s.charCodeAt(p + 1) !== COLON) return E_SYNTAX;
    gap = 0;
    p += 2;
  }
  while (p < end) {
    const start = p;
    let group = 0;
    while (p < end && p - start < 5) {
      const h = hexDigit(s.charCodeAt(p));
      if (h < 0) break;
      group = group * 16 + h;
      p++;
    }
    if (p < end && s.charCodeAt(p) === DOT) {
      if (n > 6) return E_SYNTAX;
      const v4 = parseIpv4(s, start, end);
      if (v4 < 0) return v4 === E_PORT ? E_SYNTAX : v4;
      words[n++] = v4 >>> 16;
      words[n++] = v4 & 0xffff;
      break;
    }
    if (p === start || p - start > 4 || n === 8) return E_SYNTAX;
    words[n++] = group;
    if (p === end) break;
    const c = s.charCodeAt(p++);
    if (c !== COLON) return c === PERCENT ? E_ZONE : E_SYNTAX;
    if (s.charCodeAt(p) === COLON) {
      if (gap >= 0) return E_SYNTAX;
      gap = n;
      p++;
    } else if (p === end) {
      return E_SYNTAX; // a single trailing colon
    }
  }
  // `::` stands for at least one zero group (RFC 4291 2.2), so with it at most 7 are written.
  if (gap < 0 ? n !== 8 : n > 7) return E_SYNTAX;
  const tail = gap < 0 ? 0 : n - gap;
  out.fill(0);
  for (let i = 0; i < n; i++) {
    const at = i < n - tail ? i : 8 - n + i;
    out[2 * at] = (words[i] ?? 0) >> 8;
    out[2 * at + 1] = (words[i] ?? 0) & 0xff;
  }
  return 0;
}

function hasIpv6Tag(s: string, p: number): boolean {
  return (
    (s.charCodeAt(p) | 0x20) === 0x69 && // i
    (s.charCodeAt(p + 1) | 0x20) === 0x70 && // p
    (s.charCodeAt(p + 2) | 0x20) === 0x76 && // v
    s.charCodeAt(p + 3) === 0x36 && // 6
    s.charCodeAt(p + 4) === COLON
  );
}

/** Bytes exactly as written (16 for any IPv6, mapped or not), or a negative failure code. */
function parseRaw(s: string): Uint8Array | number {
  let end = s.length;
  if (end === 0) return E_EMPTY;
  if (end > MAX_INPUT_LENGTH) return E_TOO_LONG;
  let p = 0;
  if (s.charCodeAt(0) === 0x5b) {
    if (s.charCodeAt(end - 1) !== 0x5d) return s.includes("]:") ? E_PORT : E_SYNTAX;
    p = 1;
    end--;
  }
  const tagged = hasIpv6Tag(s, p);
  if (tagged) p += 5;
  if (p === end) return E_EMPTY;
  // The first separator decides the family: an IPv6 address has a colon before any dot.
  let q = p;
  while (q < end && s.charCodeAt(q) !== COLON && s.charCodeAt(q) !== DOT) q++;
  if (q < end && s.charCodeAt(q) === COLON) {
    const out = new Uint8Array(16);
    const r = parseIpv6(s, p, end, out);
    return r < 0 ? r : out;
  }
  if (tagged) return E_SYNTAX;
  const v4 = parseIpv4(s, p, end);
  if (v4 < 0) return v4;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) out[i] = (v4 >>> (24 - 8 * i)) & 0xff;
  return out;
}

/** ::ffff:0:0/96 (RFC 4291 2.5.5.2). */
function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function formatIpv4(b: Uint8Array): string {
  return `${b[0] ?? 0}.${b[1] ?? 0}.${b[2] ?? 0}.${b[3] ?? 0}`;
}

function word(b: Uint8Array, i: number): number {
  return ((b[2 * i] ?? 0) << 8) | (b[2 * i + 1] ?? 0);
}

/** RFC 5952 4.2: compress the leftmost longest run of two or more zero groups; lowercase hex. */
function formatIpv6(b: Uint8Array): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0, run = 0; i < 8; i++) {
    run = word(b, i) === 0 ? run + 1 : 0;
    if (run > bestLen) {
      bestLen = run;
      best = i - run + 1;
    }
  }
  let s = "";
  for (let i = 0; i < 8;) {
    if (i === best) {
      s += "::";
      i += bestLen;
      continue;
    }
    if (i > 0 && i !== best + bestLen) s += ":";
    s += word(b, i).toString(16);
    i++;
  }
  return s;
}

/** `input` is what parseRaw read `raw` from. */
function toClientAddress(raw: Uint8Array, input: string): ClientAddress {
  if (raw.length === 4) {
    // parseIpv4 takes canonical text only, so an unbracketed IPv4 input is its own text.
    const text = input.charCodeAt(0) === 0x5b ? formatIpv4(raw) : input;
    return { family: 4, text, bytes: raw };
  }
  if (isMapped(raw)) {
    const bytes = raw.slice(12);
    return { family: 4, text: formatIpv4(bytes), bytes };
  }
  return { family: 6, text: formatIpv6(raw), bytes: raw };
}

/** Parse a client address as any peer may write it; throws AddressError naming the input. */
export function parseAddress(input: string): ClientAddress {
  const raw = parseRaw(input);
  if (typeof raw === "number") fail("IP address", input, raw);
  return toClientAddress(raw, input);
}

/** Like parseAddress, but undefined instead of an error: for the hot path of a relay decision. */
export function tryParseAddress(input: string): ClientAddress | undefined {
  const raw = parseRaw(input);
  return typeof raw === "number" ? undefined : toClientAddress(raw, input);
}

/**
 * The KV key of a lease: `v4.203.0.113.5`, or eight 4-digit hex groups `v6.2001.0db8.…` (only the
 * first four with ipv6Prefix 64; IPv4 is unaffected). Only `[.0-9a-fv]`, all valid in NATS keys.
 */
export function leaseKey(addr: ClientAddress, ipv6Prefix: Ipv6LeasePrefix = 128): string {
  const b = addr.bytes;
  if (b.length !== (addr.family === 4 ? 4 : 16)) throw new TypeError("ClientAddress bytes/family");
  if (addr.family === 4) return `v4.${addr.text}`; // canonical: only this module makes addresses
  const prefix: number = ipv6Prefix; // the type says 64 | 128; a JS caller may not have listened
  if (prefix !== 128 && prefix !== 64) throw new RangeError(`ipv6Prefix ${prefix}`);
  let key = "v6";
  for (let g = 0; g < prefix / 16; g++) key += `.${word(b, g).toString(16).padStart(4, "0")}`;
  return key;
}

/** v6 key groups: exactly four lowercase hex digits each, eight (/128) or four (/64) of them. */
function parseV6Key(key: string): { prefix: number; bytes: Uint8Array } | undefined {
  const groups = (key.length - 2) / 5;
  if (groups !== 8 && groups !== 4) return undefined;
  const bytes = new Uint8Array(16);
  for (let g = 0; g < groups; g++) {
    const at = 2 + 5 * g;
    if (key.charCodeAt(at) !== DOT) return undefined;
    let v = 0;
    for (let k = 1; k <= 4; k++) {
      const c = key.charCodeAt(at + k);
      const h = hexDigit(c);
      if (h < 0 || (c >= 0x41 && c <= 0x46)) return undefined; // keys are lowercase only
      v = v * 16 + h;
    }
    bytes[2 * g] = v >> 8;
    bytes[2 * g + 1] = v & 0xff;
  }
  // A mapped address always keys as v4, so its v6 spelling is not a key leaseKey would write.
  if (groups === 8 && isMapped(bytes)) return undefined;
  return { prefix: groups * 16, bytes };
}

/**
 * The inverse of leaseKey: family, prefix (32, 128 or 64) and the address text (for /64 the
 * prefix's first address, e.g. `2001:db8::`). Throws AddressError for anything leaseKey cannot
 * have written.
 */
export function parseLeaseKey(key: string): { family: 4 | 6; prefix: number; text: string } {
  // parseIpv4 is strict (no leading zeros), so a v4 key's tail is already canonical text.
  if (key.startsWith("v4.") && key.length <= 18 && parseIpv4(key, 3, key.length) >= 0) {
    return { family: 4, prefix: 32, text: key.slice(3) };
  }
  const v6 = key.startsWith("v6") ? parseV6Key(key) : undefined;
  if (v6) return { family: 6, prefix: v6.prefix, text: formatIpv6(v6.bytes) };
  throw new AddressError(`invalid lease key ${quote(key)}`);
}

/** A prefix length: decimal without leading zeros, 0..max; or -1. */
function parsePrefix(s: string, max: number): number {
  if (s.length === 0 || s.length > 3 || (s.length > 1 && s.charCodeAt(0) === 0x30)) return -1;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v <= max ? v : -1;
}

function maskTo(b: Uint8Array, prefix: number): Uint8Array {
  return b.map((x, i) =>
    prefix >= 8 * (i + 1) ? x : prefix <= 8 * i ? 0 : x & (0xff00 >> (prefix - 8 * i)),
  );
}

/**
 * `10.0.0.0/8`, `2001:db8::/32`, `[2001:db8::]/32` (Postfix mynetworks style), or a bare address
 * (/32 or /128). An IPv4-mapped network (`::ffff:10.0.0.0/104`) becomes IPv4 (`10.0.0.0/8`) and
 * needs a prefix of at least 96. Host bits set (`10.1.2.3/8`) are rejected, not masked: a trusted
 * or never-lease network written that way is a typo whose intent we cannot know, and the error
 * suggests the masked form.
 */
export function parseNetwork(input: string): Network {
  const slash = input.lastIndexOf("/");
  let raw = parseRaw(slash < 0 ? input : input.slice(0, slash));
  if (typeof raw === "number") fail("network", input, raw);
  let prefix = slash < 0 ? raw.length * 8 : parsePrefix(input.slice(slash + 1), raw.length * 8);
  if (prefix < 0) throw new AddressError(`invalid network ${quote(input)}: bad prefix length`);
  if (raw.length === 16 && isMapped(raw)) {
    if (prefix < 96) {
      throw new AddressError(`invalid network ${quote(input)}: IPv4-mapped needs a prefix >= 96`);
    }
    raw = raw.slice(12);
    prefix -= 96;
  }
  const family = raw.length === 4 ? 4 : 6;
  const addrText = family === 4 ? formatIpv4(raw) : formatIpv6(raw);
  const masked = maskTo(raw, prefix);
  if (masked.some((x, i) => x !== raw[i])) {
    const hint = `${family === 4 ? formatIpv4(masked) : formatIpv6(masked)}/${prefix}`;
    throw new AddressError(`invalid network ${quote(input)}: host bits set, did you mean ${hint}?`);
  }
  return { family, bytes: raw, prefix, text: `${addrText}/${prefix}` };
}

export function networkContains(net: Network, addr: ClientAddress): boolean {
  if (net.family !== addr.family) return false;
  const whole = net.prefix >> 3;
  for (let i = 0; i < whole; i++) if (net.bytes[i] !== addr.bytes[i]) return false;
  const bits = net.prefix & 7;
  if (bits === 0) return true;
  const mask = 0xff00 >> bits;
  return (((net.bytes[whole] ?? 0) ^ (addr.bytes[whole] ?? 0)) & mask & 0xff) === 0;
}

/** Networks separated by commas and/or whitespace (config values); empty items are skipped. */
export function parseNetworkList(input: string): Network[] {
  const items = input.split(/[\s,]+/).filter((item) => item !== "");
  return items.map((item, i) => {
    try {
      return parseNetwork(item);
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      throw new AddressError(`network list item ${i + 1}: ${err.message}`, { cause: err });
    }
  });
}
