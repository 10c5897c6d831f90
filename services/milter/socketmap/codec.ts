/**
 * Socketmap codec: Sendmail's `socket` map class (op.me, map.c socket_map_lookup) and Postfix's
 * `socketmap:` table (socketmap_table(5), dict_sockmap.c). Pure: bytes in, requests out, or a
 * ProtocolError; replies in, bytes out.
 *
 * Wire (shared/reference/mta-protocols.md section 5.1): every request and every reply is one
 * netstring, `<decimal length>:<bytes>,` (D. J. Bernstein, netstrings.txt), nothing between them.
 * A request is `<mapname> <key>`; a reply is `OK <value>`, `NOTFOUND `, `TEMP <reason>`,
 * `TIMEOUT <reason>` or `PERM <reason>`. Sendmail keeps one connection per SMTP child and Postfix
 * one per endpoint, each for many requests, so the decoder is incremental: it returns every
 * complete request in the buffer and how many bytes they took; the caller keeps the rest.
 *
 * Accepted from the MTA: the length as decimal digits without leading zeros (both MTAs print it
 * with `%u`/`%ld`; netstrings.txt forbids leading zeros, so a zero-padded length comes from
 * something else and is refused), then `:`, the payload and `,`. Payload bytes are kept one for
 * one as latin1 characters: keys are addresses or host names, and no byte can fail to decode.
 *
 * Limit (ours; see DEFAULT_SOCKETMAP_LIMITS): payload length. The length is checked digit by digit
 * as it arrives, so an oversized or non-numeric prefix is refused before a payload byte is
 * buffered, and an unfinished netstring never holds more than its limit plus its framing.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";

export interface SocketmapLimits {
  /** Longest netstring payload (`<mapname> <key>`) in bytes, framing not included. */
  maxPayloadBytes: number;
}

/**
 * Budget for one request. Sendmail cuts the key at MAXNAME (256 bytes, map.c keybuf) and Postfix
 * sends a client host name (at most 255 bytes in DNS) or address; a map name is a short
 * configuration word. 1 KiB holds any of them with a map name of several hundred bytes, and is
 * small enough that 1000 connections each holding an unfinished request cost about 1 MB. A
 * longer request is a ProtocolError: the connection is closed, Sendmail answers that lookup as a
 * temporary failure and Postfix retries once, then defers (never a relay grant).
 */
export const DEFAULT_SOCKETMAP_LIMITS: Readonly<SocketmapLimits> = Object.freeze({
  maxPayloadBytes: 1024,
});

/** The longest reply Postfix reads (dict_sockmap.c DICT_SOCKMAP_DEF_MAX_REPLY); for our client. */
export const POSTFIX_MAX_REPLY_BYTES = 100_000;

/** One request as the MTA sent it; `malformed` is well framed but not `<mapname> <key>`. */
export type SocketmapRequest =
  | { readonly kind: "lookup"; readonly mapName: string; readonly key: string }
  | { readonly kind: "malformed"; readonly reason: string };

/**
 * Reply statuses (socketmap_table(5) "REPLY FORMAT"). Sendmail maps TEMP and TIMEOUT to
 * EX_TEMPFAIL, PERM to EX_UNAVAILABLE, anything else to EX_PROTOCOL; Postfix maps TEMP, TIMEOUT
 * and anything unknown to a retry error, PERM to a configuration error.
 */
export type SocketmapReply =
  | { readonly status: "OK"; readonly value: string }
  | { readonly status: "NOTFOUND" }
  | { readonly status: "TEMP" | "TIMEOUT" | "PERM"; readonly reason: string };

const COLON = 0x3a;
const COMMA = 0x2c;
const SPACE = 0x20;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/**
 * Decodes every complete netstring at the start of `buf`. `consumed` is the byte count of those
 * netstrings; the bytes after it are an unfinished netstring to be completed by later data.
 * Payloads are views into `buf`.
 * @throws ProtocolError as soon as the bytes cannot begin a valid netstring of at most
 * `maxPayloadBytes`, finished or not.
 */
export function decodeNetstrings(
  buf: Buffer,
  maxPayloadBytes: number,
): { payloads: Buffer[]; consumed: number } {
  const payloads: Buffer[] = [];
  let consumed = 0;
  for (;;) {
    const frame = readNetstring(buf, consumed, maxPayloadBytes);
    if (frame === undefined) break;
    payloads.push(frame.payload);
    consumed = frame.end;
  }
  return { payloads, consumed };
}

/** The netstring starting at `at`: its payload and the index after its comma; or undefined. */
function readNetstring(
  buf: Buffer,
  at: number,
  max: number,
): { payload: Buffer; end: number } | undefined {
  let p = at;
  let length = 0;
  for (; ; p++) {
    const c = buf[p];
    if (c === undefined) return undefined; // more digits or the colon still to come
    if (c === COLON) break;
    if (c < DIGIT_0 || c > DIGIT_9) {
      throw new ProtocolError(`netstring length: byte 0x${hex(c)} where a digit or ":" belongs`);
    }
    if (p > at && buf[at] === DIGIT_0) throw new ProtocolError("netstring length has a leading 0");
    length = length * 10 + (c - DIGIT_0);
    // Checked per digit, so a long run of digits is refused before anything is buffered.
    if (length > max) throw new ProtocolError(`netstring longer than ${max} bytes`);
  }
  if (p === at) throw new ProtocolError('netstring without a length before ":"');
  const start = p + 1;
  const end = start + length;
  const comma = buf[end];
  if (comma === undefined) return undefined; // payload or comma still to come
  if (comma !== COMMA) {
    throw new ProtocolError(`netstring of ${length} bytes ends in 0x${hex(comma)}, not ","`);
  }
  return { payload: buf.subarray(start, end), end: end + 1 };
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

/** Encodes `payload` as one netstring. */
export function encodeNetstring(payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${payload.length}:`, "latin1"), payload, Buffer.of(COMMA)]);
}

/**
 * Decodes every complete request at the start of `buf` (see decodeNetstrings). A netstring that
 * is not `<mapname> <key>` is a `malformed` request, not an error: the framing still holds, so
 * the connection can go on after a PERM reply.
 * @throws ProtocolError on broken framing or a payload over `limits.maxPayloadBytes`.
 */
export function decodeSocketmapRequests(
  buf: Buffer,
  limits: SocketmapLimits = DEFAULT_SOCKETMAP_LIMITS,
): { requests: SocketmapRequest[]; consumed: number } {
  const { payloads, consumed } = decodeNetstrings(buf, limits.maxPayloadBytes);
  return { requests: payloads.map(parseSocketmapRequest), consumed };
}

/** `<mapname> <key>`: the map name is everything before the first space, the key all after it. */
export function parseSocketmapRequest(payload: Buffer): SocketmapRequest {
  const space = payload.indexOf(SPACE);
  if (space < 0) return { kind: "malformed", reason: "no space between map name and key" };
  if (space === 0) return { kind: "malformed", reason: "empty map name" };
  return {
    kind: "lookup",
    mapName: payload.toString("latin1", 0, space),
    key: payload.toString("latin1", space + 1),
  };
}

/**
 * Encodes a request as Sendmail does (`"%u:%s %s,"`), for our client and tests.
 * @throws Error on an empty map name, one holding a space, or a character above U+00FF.
 */
export function encodeSocketmapRequest(mapName: string, key: string): Buffer {
  if (mapName === "" || mapName.includes(" ")) {
    throw new Error(`invalid socketmap name ${JSON.stringify(mapName)}`);
  }
  return encodeNetstring(latin1(`${mapName} ${key}`, "socketmap request"));
}

/**
 * Encodes a reply: `OK <value>`, `NOTFOUND ` (with the space, as socketmap_table(5) writes it;
 * both MTAs split at the first space and also accept it without), `TEMP <reason>` and so on.
 * @throws Error for an OK with an empty value (Sendmail 8.17 dereferences a missing value and
 * crashes on `2:OK,`, and `3:OK ,` is an empty value that relays nothing), a NUL (the MTAs read
 * C strings) or a character above U+00FF: each is a bug on our side.
 */
export function encodeSocketmapReply(reply: SocketmapReply): Buffer {
  let text: string;
  switch (reply.status) {
    case "OK":
      if (reply.value === "") throw new Error("a socketmap OK reply needs a non-empty value");
      text = `OK ${reply.value}`;
      break;
    case "NOTFOUND":
      text = "NOTFOUND ";
      break;
    default:
      text = `${reply.status} ${reply.reason}`;
  }
  if (text.includes("\0")) throw new Error(`NUL in socketmap reply ${JSON.stringify(text)}`);
  return encodeNetstring(latin1(text, "socketmap reply"));
}

function latin1(text: string, what: string): Buffer {
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) > 0xff) {
      throw new Error(`${what} ${JSON.stringify(text)} has a character above U+00FF`);
    }
  }
  return Buffer.from(text, "latin1");
}

/**
 * Decodes every complete reply at the start of `buf`, strictly, for our client: a status that is
 * none of the five, or an OK without a value (the form that crashes Sendmail), is a
 * ProtocolError, so tests catch a server that sends one.
 */
export function decodeSocketmapReplies(
  buf: Buffer,
  maxPayloadBytes: number = POSTFIX_MAX_REPLY_BYTES,
): { replies: SocketmapReply[]; consumed: number } {
  const { payloads, consumed } = decodeNetstrings(buf, maxPayloadBytes);
  return { replies: payloads.map(parseSocketmapReply), consumed };
}

/** Status up to the first space, value after it (Sendmail's and Postfix's reading). */
export function parseSocketmapReply(payload: Buffer): SocketmapReply {
  const text = payload.toString("latin1");
  const space = text.indexOf(" ");
  const status = space < 0 ? text : text.slice(0, space);
  const rest = space < 0 ? undefined : text.slice(space + 1);
  switch (status) {
    case "OK":
      if (rest === undefined || rest === "") {
        throw new ProtocolError(`socketmap OK without a value: ${JSON.stringify(text)}`);
      }
      return { status, value: rest };
    case "NOTFOUND":
      return { status };
    case "TEMP":
    case "TIMEOUT":
    case "PERM":
      return { status, reason: rest ?? "" };
    default:
      throw new ProtocolError(`unknown socketmap reply status ${JSON.stringify(status)}`);
  }
}
