/**
 * whoson codec ("WHO iS ONline", Eugene G. Crosser, whoson.sourceforge.net; wire as implemented
 * by tai-ga/gowhoson whoson/protocol.go and read by libwhoson's wso_query(3), which Exim's
 * lookups/whoson.c calls). Pure: bytes in, requests out, or a ProtocolError; replies in, bytes out.
 * shared/reference/login-sources.md section 8.
 *
 * Wire: text. A request is one command line, then an empty line: `QUERY 192.0.2.1\r\n\r\n`.
 * A reply is one line starting with `+` (positive), `-` (negative) or `*` (bad request or error),
 * then an empty line: `+alice\r\n\r\n`, `-Not Logged in\r\n\r\n`. Over TCP a connection carries
 * many requests, so the stream decoder is incremental: it returns every complete request in the
 * buffer and how many bytes they took; the caller keeps the rest. Over UDP one datagram is one
 * request (decodeWhosonDatagram), its terminating empty line optional.
 *
 * Accepted: lines ending in CRLF or a bare LF (gowhoson reads with net/textproto, which takes
 * both); empty lines between requests are skipped; words separated by spaces or tabs; the verb in
 * any case. Refused (ProtocolError): a second non-empty line where the empty line belongs (an
 * HTTP probe, or a peer that is not speaking whoson), control characters and NUL, invalid UTF-8,
 * and lines over the limit, checked while they are still arriving.
 *
 * Limit (ours): `maxLineBytes` (512). `QUERY` and the longest address text a client can write
 * (`[IPv6:` + 45 + `]`) take 59 bytes; LOGIN's user data is refused anyway. So an unfinished
 * request holds at most one line plus a line ending and the start of the empty line.
 */
import { isUtf8 } from "node:buffer";
import { ProtocolError } from "../../../shared/protocol-error.ts";

export interface WhosonLimits {
  /** Longest line in bytes, its CR and LF not counted. */
  maxLineBytes: number;
}

export const DEFAULT_WHOSON_LIMITS: Readonly<WhosonLimits> = Object.freeze({ maxLineBytes: 512 });

/** A command line split into words: `QUERY 192.0.2.1` is `{ verb: "QUERY", args: ["192.0.2.1"] }`. */
export interface WhosonRequest {
  /** The first word in upper case; "" for a line of blanks. */
  readonly verb: string;
  readonly args: readonly string[];
}

/** Reply kinds, as libwhoson maps them to wso_query()'s return code and Exim to a lookup result. */
export const WHOSON_POSITIVE = "+"; // 0: present; Exim: OK, $value = the text
export const WHOSON_NEGATIVE = "-"; // +1: absent; Exim: FAIL
export const WHOSON_ERROR = "*"; //    -1: unavailable; Exim: DEFER "WHOSON: failed to complete"
export type WhosonStatus = typeof WHOSON_POSITIVE | typeof WHOSON_NEGATIVE | typeof WHOSON_ERROR;

export interface WhosonReply {
  readonly status: WhosonStatus;
  /** The rest of the line: the user on a hit, a message otherwise; may be empty. */
  readonly text: string;
}

const LF = 0x0a;
const CR = 0x0d;
const TAB = 0x09;
const DEL = 0x7f;
const CRLF = "\r\n";

/**
 * Decodes every complete request at the start of a TCP stream. `consumed` is the byte count of
 * those requests and of empty lines around them; the bytes after it are an unfinished request.
 * @throws ProtocolError on the first bad line, finished or not.
 */
export function decodeWhosonRequests(
  buf: Buffer,
  limits: WhosonLimits = DEFAULT_WHOSON_LIMITS,
): { requests: WhosonRequest[]; consumed: number } {
  const { lines, consumed } = scanBlocks(buf, limits.maxLineBytes);
  return { requests: lines.map(parseRequestLine), consumed };
}

/**
 * One UDP datagram as one request: a command line, then optionally its line ending and the
 * empty line (`QUERY 192.0.2.1`, `…\r\n`, `…\r\n\r\n`; gowhoson parses the whole datagram).
 * @throws ProtocolError if it holds anything else.
 */
export function decodeWhosonDatagram(
  buf: Buffer,
  limits: WhosonLimits = DEFAULT_WHOSON_LIMITS,
): WhosonRequest {
  return parseRequestLine(datagramLine(buf, limits.maxLineBytes));
}

/** Words of a command line; the verb upper-cased (gowhoson: strings.ToUpper). */
function parseRequestLine(line: string): WhosonRequest {
  const words = line.split(/[ \t]+/).filter((w) => w !== "");
  return { verb: (words[0] ?? "").toUpperCase(), args: words.slice(1) };
}

/**
 * Encodes a request the way libwhoson and gowhoson's client do, for our client and tests.
 * @throws Error on an empty verb, or a verb or argument that is empty or holds a blank or a
 * control character.
 */
export function encodeWhosonRequest(request: WhosonRequest): Buffer {
  for (const word of [request.verb, ...request.args]) {
    if (word === "" || /[\s\p{Cc}]/u.test(word) || !word.isWellFormed()) {
      throw new Error(`cannot encode whoson word ${JSON.stringify(word)}`);
    }
  }
  return Buffer.from([request.verb, ...request.args].join(" ") + CRLF + CRLF, "utf8");
}

/**
 * Encodes a reply: status, text, CRLF, then the empty line (gowhoson sendLine, TCP and UDP alike).
 * @throws Error if the text holds a control character or a lone surrogate: a bug on our side (the
 * session cleans user names before they get here).
 */
export function encodeWhosonReply(reply: WhosonReply): Buffer {
  if (/\p{Cc}/u.test(reply.text) || !reply.text.isWellFormed()) {
    throw new Error(`invalid whoson reply text ${JSON.stringify(reply.text)}`);
  }
  return Buffer.from(reply.status + reply.text + CRLF + CRLF, "utf8");
}

/** Decodes every complete reply on a TCP stream, for our client (see decodeWhosonRequests). */
export function decodeWhosonReplies(
  buf: Buffer,
  limits: WhosonLimits = DEFAULT_WHOSON_LIMITS,
): { replies: WhosonReply[]; consumed: number } {
  const { lines, consumed } = scanBlocks(buf, limits.maxLineBytes);
  return { replies: lines.map(parseReplyLine), consumed };
}

/** One reply datagram, for our client. */
export function decodeWhosonReplyDatagram(
  buf: Buffer,
  limits: WhosonLimits = DEFAULT_WHOSON_LIMITS,
): WhosonReply {
  return parseReplyLine(datagramLine(buf, limits.maxLineBytes));
}

function parseReplyLine(line: string): WhosonReply {
  const status = line[0];
  if (status !== WHOSON_POSITIVE && status !== WHOSON_NEGATIVE && status !== WHOSON_ERROR) {
    throw new ProtocolError(`whoson reply starts with ${JSON.stringify(status)}, not + - or *`);
  }
  return { status, text: line.slice(1) };
}

/**
 * Complete blocks (a non-empty line, then an empty line) at the start of `buf`: their lines and
 * the bytes they and any empty lines before them took. Checks the unfinished rest as well, so a
 * bad or overlong request is refused before it is complete.
 */
function scanBlocks(buf: Buffer, maxLineBytes: number): { lines: string[]; consumed: number } {
  const lines: string[] = [];
  let consumed = 0;
  let waiting: Buffer | undefined; // a command line whose empty line has not come yet
  let at = 0;
  for (let lf = buf.indexOf(LF); lf >= 0; lf = buf.indexOf(LF, at)) {
    const line = withoutCR(buf.subarray(at, lf));
    checkLine(line, maxLineBytes, true);
    at = lf + 1;
    if (waiting !== undefined) {
      if (line.length > 0) throw secondLine();
      lines.push(waiting.toString("utf8"));
      waiting = undefined;
      consumed = at;
    } else if (line.length === 0) {
      consumed = at; // an empty line between requests: nothing to answer
    } else {
      waiting = line;
    }
  }
  // The rest is a line still arriving: the command line, or the empty line after it.
  const rest = withoutCR(buf.subarray(at));
  if (waiting !== undefined && rest.length > 0) throw secondLine();
  checkLine(rest, maxLineBytes, false);
  return { lines, consumed };
}

/** The command line of a datagram: its line ending and the empty line after it are optional. */
function datagramLine(buf: Buffer, maxLineBytes: number): string {
  let end = buf.length;
  for (let i = 0; i < 2 && buf[end - 1] === LF; i++) end -= buf[end - 2] === CR ? 2 : 1;
  const line = buf.subarray(0, end);
  if (line.includes(LF)) throw new ProtocolError("more than one line in a whoson datagram");
  checkLine(line, maxLineBytes, true);
  if (line.length === 0) throw new ProtocolError("empty whoson datagram");
  return line.toString("utf8");
}

/** A line's bytes without the CR of its CRLF (a CR anywhere else is a control character). */
function withoutCR(line: Buffer): Buffer {
  return line[line.length - 1] === CR ? line.subarray(0, line.length - 1) : line;
}

function secondLine(): ProtocolError {
  return new ProtocolError("a second line where the empty line ending a whoson request belongs");
}

/** Length and characters of a line; UTF-8 only once it is complete (a tail may split a char). */
function checkLine(line: Buffer, maxLineBytes: number, complete: boolean): void {
  if (line.length > maxLineBytes) {
    throw new ProtocolError(`whoson line longer than ${maxLineBytes} bytes`);
  }
  for (const byte of line) {
    if ((byte < 0x20 && byte !== TAB) || byte === DEL) {
      throw new ProtocolError(`control byte 0x${byte.toString(16).padStart(2, "0")} in a line`);
    }
  }
  if (complete && !isUtf8(line)) throw new ProtocolError("whoson line is not valid UTF-8");
}
