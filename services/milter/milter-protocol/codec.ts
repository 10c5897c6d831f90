/**
 * Milter wire codec (mta-protocols.md 1.1-1.9; libmilter `comm.c`, `engine.c`). Pure: bytes in,
 * commands or replies out, or a ProtocolError; commands or replies in, bytes out.
 *
 * Frame: uint32 length (big-endian, counting the command byte) . command byte . length-1 bytes.
 * Accepts from an MTA (Postfix smtpd, Sendmail) every SMFIC_* command; decodes the replies a
 * gatekeeper exchanges (for our own client). Strings are NUL-terminated and read as UTF-8.
 *
 * Limits: a frame's length is checked against `maxFrameLength` as soon as its 4 length bytes are
 * in, before any buffer is allocated or any further byte awaited; length 0 and anything over the
 * limit is a ProtocolError (so are the probes "GET " = 0x47455420, TLS, RDP, RESP). The default,
 * DEFAULT_MAX_FRAME_LENGTH, is libmilter's: 65535 data bytes plus the command byte. Postfix only
 * exceeds it with header packets (header_size_limit 102400), which we never negotiate, and body
 * chunks are at most 65535 bytes (MILTER_CHUNK_SIZE). A malformed payload (missing NUL, short
 * CONNECT, unknown family, leftover bytes) is a ProtocolError, as in libmilter and Postfix.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";
import * as C from "./constants.ts";

/** libmilter MILTER_MAX_DATA_SIZE (65535) plus the command byte. */
export const DEFAULT_MAX_FRAME_LENGTH = 65536;
const HEADER_BYTES = 4;

export interface Frame {
  readonly code: number;
  readonly data: Buffer;
}

export type Family = "4" | "6" | "L" | "U";

export type MilterCommand =
  | {
      readonly type: "optneg";
      readonly version: number;
      readonly actions: number;
      readonly protocol: number;
    }
  | {
      readonly type: "macro";
      readonly stage: string;
      readonly macros: readonly (readonly [string, string])[];
    }
  | { readonly type: "connect"; readonly hostname: string; readonly family: "U" }
  | {
      readonly type: "connect";
      readonly hostname: string;
      readonly family: "4" | "6" | "L";
      readonly port: number;
      readonly address: string;
    }
  | { readonly type: "helo"; readonly helo: string }
  | { readonly type: "mail" | "rcpt"; readonly args: readonly string[] }
  | { readonly type: "header"; readonly name: string; readonly value: string }
  | { readonly type: "body" | "eob"; readonly chunk: Buffer }
  | { readonly type: "unknown"; readonly line: string }
  | { readonly type: "data" | "eoh" | "abort" | "quit" | "quit-nc" };

export type MilterCommandType = MilterCommand["type"];

/** A macro list requested in the OPTNEG reply: stage (SMFIM_*) and space-separated names. */
export interface SymList {
  readonly stage: number;
  readonly macros: string;
}

export type MilterReply =
  | {
      readonly type:
        "continue" | "accept" | "reject" | "tempfail" | "discard" | "skip" | "progress";
    }
  | { readonly type: "replycode"; readonly text: string }
  | {
      readonly type: "optneg";
      readonly version: number;
      readonly actions: number;
      readonly protocol: number;
      readonly symlists: readonly SymList[];
    };

export type MilterReplyType = MilterReply["type"];

const COMMAND_CODES: Readonly<Record<MilterCommandType, number>> = {
  optneg: C.SMFIC_OPTNEG,
  macro: C.SMFIC_MACRO,
  connect: C.SMFIC_CONNECT,
  helo: C.SMFIC_HELO,
  mail: C.SMFIC_MAIL,
  rcpt: C.SMFIC_RCPT,
  header: C.SMFIC_HEADER,
  body: C.SMFIC_BODY,
  eob: C.SMFIC_BODYEOB,
  unknown: C.SMFIC_UNKNOWN,
  data: C.SMFIC_DATA,
  eoh: C.SMFIC_EOH,
  abort: C.SMFIC_ABORT,
  quit: C.SMFIC_QUIT,
  "quit-nc": C.SMFIC_QUIT_NC,
};
const COMMAND_TYPES = invert(COMMAND_CODES);

const REPLY_CODES: Readonly<Record<MilterReplyType, number>> = {
  continue: C.SMFIR_CONTINUE,
  accept: C.SMFIR_ACCEPT,
  reject: C.SMFIR_REJECT,
  tempfail: C.SMFIR_TEMPFAIL,
  discard: C.SMFIR_DISCARD,
  skip: C.SMFIR_SKIP,
  progress: C.SMFIR_PROGRESS,
  replycode: C.SMFIR_REPLYCODE,
  optneg: C.SMFIR_OPTNEG,
};
const REPLY_TYPES = invert(REPLY_CODES);

function invert<T extends string>(codes: Readonly<Record<T, number>>): ReadonlyMap<number, T> {
  return new Map(Object.entries(codes).map(([type, code]) => [code as number, type as T]));
}

/** "'R' (0x52)": how a command byte appears in an error message. */
export function describeCode(code: number): string {
  const hex = `0x${code.toString(16).padStart(2, "0")}`;
  return code >= 0x20 && code < 0x7f ? `'${String.fromCharCode(code)}' (${hex})` : hex;
}

// ---- framing ---------------------------------------------------------------------------------

/**
 * The frame starting at `offset`, and where it ends; undefined while it is incomplete.
 * @throws ProtocolError as soon as the length bytes say 0 or more than maxFrameLength.
 */
export function readFrame(
  buf: Buffer,
  offset: number,
  maxFrameLength: number = DEFAULT_MAX_FRAME_LENGTH,
): { frame: Frame; end: number } | undefined {
  if (buf.length - offset < HEADER_BYTES) return undefined;
  const length = buf.readUInt32BE(offset);
  if (length === 0) throw new ProtocolError("frame length 0 (it counts the command byte)");
  if (length > maxFrameLength) {
    throw new ProtocolError(`frame length ${length} over the limit of ${maxFrameLength}`);
  }
  const end = offset + HEADER_BYTES + length;
  if (buf.length < end) return undefined;
  const code = buf[offset + HEADER_BYTES] ?? 0;
  return { frame: { code, data: buf.subarray(offset + HEADER_BYTES + 1, end) }, end };
}

/** One frame in one buffer, so it goes out in one write(). */
export function encodeFrame(code: number, data: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + 1 + data.length);
  out.writeUInt32BE(data.length + 1, 0);
  out[HEADER_BYTES] = code;
  out.set(data, HEADER_BYTES + 1);
  return out;
}

const EMPTY = Buffer.alloc(0);

function decodeAll<T>(
  buf: Buffer,
  maxFrameLength: number,
  decode: (frame: Frame) => T,
): { items: T[]; consumed: number } {
  const items: T[] = [];
  let consumed = 0;
  for (;;) {
    const next = readFrame(buf, consumed, maxFrameLength);
    if (next === undefined) return { items, consumed };
    items.push(decode(next.frame));
    consumed = next.end;
  }
}

/**
 * Decodes every complete command at the start of `buf`; the bytes after `consumed` are an
 * unfinished frame for the caller to keep. Throws ProtocolError on the first bad frame.
 */
export function decodeCommands(
  buf: Buffer,
  maxFrameLength: number = DEFAULT_MAX_FRAME_LENGTH,
): { commands: MilterCommand[]; consumed: number } {
  const { items, consumed } = decodeAll(buf, maxFrameLength, decodeCommand);
  return { commands: items, consumed };
}

/** Like decodeCommands, for the replies our client reads. */
export function decodeReplies(
  buf: Buffer,
  maxFrameLength: number = DEFAULT_MAX_FRAME_LENGTH,
): { replies: MilterReply[]; consumed: number } {
  const { items, consumed } = decodeAll(buf, maxFrameLength, decodeReply);
  return { replies: items, consumed };
}

// ---- payload readers ---------------------------------------------------------------------------

/** NUL-terminated strings filling all of `data` (an "argv"); empty data gives none. */
function readStrings(data: Buffer, what: string): string[] {
  if (data.length === 0) return [];
  if (data[data.length - 1] !== 0) throw new ProtocolError(`${what}: missing NUL terminator`);
  return data.toString("utf8", 0, data.length - 1).split("\0");
}

function exactStrings(data: Buffer, what: string, count: number): string[] {
  const strings = readStrings(data, what);
  if (strings.length !== count) {
    throw new ProtocolError(`${what}: ${strings.length} strings, expected ${count}`);
  }
  return strings;
}

function noData(data: Buffer, what: string): void {
  if (data.length !== 0) throw new ProtocolError(`${what}: ${data.length} unexpected data bytes`);
}

// ---- commands ---------------------------------------------------------------------------------

/** Decodes one command frame. @throws ProtocolError on an unknown command or a bad payload. */
export function decodeCommand(frame: Frame): MilterCommand {
  const type = COMMAND_TYPES.get(frame.code);
  if (type === undefined) {
    throw new ProtocolError(`unknown milter command ${describeCode(frame.code)}`);
  }
  const { data } = frame;
  switch (type) {
    case "optneg":
      return decodeOptneg(data, "SMFIC_OPTNEG");
    case "macro":
      return decodeMacro(data);
    case "connect":
      return decodeConnect(data);
    case "helo":
      return { type, helo: exactStrings(data, "SMFIC_HELO", 1)[0] ?? "" };
    case "mail":
    case "rcpt": {
      const args = readStrings(data, `SMFIC_${type.toUpperCase()}`);
      if (args.length === 0) throw new ProtocolError(`SMFIC_${type.toUpperCase()}: no address`);
      return { type, args };
    }
    case "header": {
      const [name = "", value = ""] = exactStrings(data, "SMFIC_HEADER", 2);
      return { type, name, value };
    }
    case "body":
    case "eob":
      return { type, chunk: Buffer.from(data) };
    case "unknown":
      return { type, line: exactStrings(data, "SMFIC_UNKNOWN", 1)[0] ?? "" };
    default:
      noData(data, `command ${describeCode(frame.code)}`);
      return { type };
  }
}

function decodeOptneg(data: Buffer, what: string) {
  // libmilter reads the first 12 bytes and ignores the rest; so do we.
  if (data.length < 12) throw new ProtocolError(`${what}: ${data.length} bytes, expected 12`);
  return {
    type: "optneg" as const,
    version: data.readUInt32BE(0),
    actions: data.readUInt32BE(4),
    protocol: data.readUInt32BE(8),
  };
}

/**
 * `D` + stage byte + name\0value\0 pairs. An odd count (a name without its value) gets "" as
 * value instead of failing: Sendmail has sent that (emersion/go-milter PR #14).
 */
function decodeMacro(data: Buffer): MilterCommand {
  const { stage, pairs } = readMacroPacket(data);
  const strings = readStrings(pairs, "SMFIC_MACRO");
  const macros: [string, string][] = [];
  for (let i = 0; i < strings.length; i += 2) macros.push([strings[i] ?? "", strings[i + 1] ?? ""]);
  return { type: "macro", stage, macros };
}

/**
 * A macro packet checked as decodeCommand checks it, but not split: its stage, and its
 * name\0value\0 bytes for macroValue. A milter reads one or two macros of a session, often none.
 * @throws ProtocolError without a stage byte, or when the pairs do not end in NUL.
 */
export function readMacroPacket(data: Buffer): { stage: string; pairs: Buffer } {
  return { stage: macroStage(data), pairs: data.subarray(1) };
}

/** The stage of a macro packet checked as readMacroPacket checks it; its pairs follow at 1. */
export function macroStage(data: Buffer): string {
  if (data.length === 0) throw new ProtocolError("SMFIC_MACRO: no stage byte");
  if (data.length > 1 && data[data.length - 1] !== 0) {
    throw new ProtocolError("SMFIC_MACRO: missing NUL terminator");
  }
  return String.fromCharCode(data[0] ?? 0);
}

/**
 * The value of macro `name` (bare: "rcpt_mailer" finds `{rcpt_mailer}` too) in a packet's pairs
 * (readMacroPacket); the last one if named twice, "" for a name without its value.
 */
export function macroValue(pairs: Buffer, name: string): string | undefined {
  let value: string | undefined;
  for (let p = 0; p < pairs.length;) {
    const nameEnd = pairs.indexOf(0, p);
    if (nameEnd < 0) break; // not from readMacroPacket: no NUL at the end
    const found = pairs.toString("utf8", p, nameEnd);
    let valueEnd = nameEnd + 1 < pairs.length ? pairs.indexOf(0, nameEnd + 1) : nameEnd;
    if (valueEnd < 0) valueEnd = pairs.length;
    if (found === name || (found.length === name.length + 2 && found === `{${name}}`)) {
      value = pairs.toString("utf8", nameEnd + 1, valueEnd);
    }
    p = valueEnd + 1;
  }
  return value;
}

/** hostname\0 family, then for 4, 6 and L: uint16 port, address\0; for U nothing more (1.6). */
function decodeConnect(data: Buffer): MilterCommand {
  const nul = data.indexOf(0);
  if (nul < 0) throw new ProtocolError("SMFIC_CONNECT: hostname without NUL");
  const hostname = data.toString("utf8", 0, nul);
  if (nul + 1 >= data.length) throw new ProtocolError("SMFIC_CONNECT: no family");
  const family = String.fromCharCode(data[nul + 1] ?? 0);
  if (family === C.SMFIA_UNKNOWN) {
    noData(data.subarray(nul + 2), "SMFIC_CONNECT family U");
    return { type: "connect", hostname, family };
  }
  if (family !== C.SMFIA_INET && family !== C.SMFIA_INET6 && family !== C.SMFIA_UNIX) {
    throw new ProtocolError(`SMFIC_CONNECT: unknown family ${describeCode(data[nul + 1] ?? 0)}`);
  }
  if (data.length < nul + 4) throw new ProtocolError("SMFIC_CONNECT: truncated port");
  const port = data.readUInt16BE(nul + 2);
  const address = oneString(data, nul + 4, "SMFIC_CONNECT address");
  return { type: "connect", hostname, family, port, address };
}

/**
 * The one string from `start` to the end of `data`, checked as exactStrings(…, 1) checks it;
 * read in place (every CONNECT has one: no view, no split on the way).
 */
function oneString(data: Buffer, start: number, what: string): string {
  const last = data.length - 1;
  if (last >= start && data[last] === 0 && data.indexOf(0, start) === last) {
    return data.toString("utf8", start, last);
  }
  return exactStrings(data.subarray(start), what, 1)[0] ?? ""; // throws, saying what is wrong
}

function cstrings(strings: readonly string[]): Buffer {
  for (const s of strings) {
    if (s.includes("\0")) throw new Error(`milter string holds NUL: ${JSON.stringify(s)}`);
  }
  return Buffer.from(strings.map((s) => `${s}\0`).join(""), "utf8");
}

function uint32s(...values: number[]): Buffer {
  const out = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => out.writeUInt32BE(v >>> 0, 4 * i));
  return out;
}

/** Encodes a command as an MTA would (our client, tests). @throws Error on a NUL in a string. */
export function encodeCommand(c: MilterCommand): Buffer {
  const code = COMMAND_CODES[c.type];
  switch (c.type) {
    case "optneg":
      return encodeFrame(code, uint32s(c.version, c.actions, c.protocol));
    case "macro":
      return encodeFrame(code, Buffer.concat([stageByte(c.stage), cstrings(c.macros.flat())]));
    case "connect":
      return encodeFrame(code, encodeConnect(c));
    case "helo":
      return encodeFrame(code, cstrings([c.helo]));
    case "mail":
    case "rcpt":
      if (c.args.length === 0) throw new Error(`${c.type} needs an address`);
      return encodeFrame(code, cstrings(c.args));
    case "header":
      return encodeFrame(code, cstrings([c.name, c.value]));
    case "body":
    case "eob":
      return encodeFrame(code, c.chunk);
    case "unknown":
      return encodeFrame(code, cstrings([c.line]));
    default:
      return encodeFrame(code);
  }
}

function stageByte(stage: string): Buffer {
  const code = stage.charCodeAt(0);
  if (stage.length !== 1 || code > 0xff)
    throw new Error(`bad macro stage ${JSON.stringify(stage)}`);
  return Buffer.of(code);
}

function encodeConnect(c: Extract<MilterCommand, { type: "connect" }>): Buffer {
  const head = Buffer.concat([cstrings([c.hostname]), Buffer.from(c.family, "latin1")]);
  if (c.family === "U") return head;
  const port = Buffer.alloc(2);
  port.writeUInt16BE(c.port);
  return Buffer.concat([head, port, cstrings([c.address])]);
}

// ---- replies ------------------------------------------------------------------------------------

/** Decodes one reply frame (our client). @throws ProtocolError on what an MTA would refuse. */
export function decodeReply(frame: Frame): MilterReply {
  const type = REPLY_TYPES.get(frame.code);
  if (type === undefined) {
    throw new ProtocolError(`unexpected milter reply ${describeCode(frame.code)}`);
  }
  const { data } = frame;
  if (type === "optneg") {
    return { ...decodeOptneg(data, "SMFIR_OPTNEG"), symlists: decodeSymlists(data.subarray(12)) };
  }
  if (type === "replycode") {
    const [text = ""] = exactStrings(data, "SMFIR_REPLYCODE", 1);
    const problem = replyTextProblem(text);
    if (problem !== undefined) throw new ProtocolError(`SMFIR_REPLYCODE: ${problem}`);
    return { type, text };
  }
  // Postfix milter8.c: a c/a/r/t reply carrying data is a communication error.
  noData(data, `reply ${describeCode(frame.code)}`);
  return { type };
}

function decodeSymlists(data: Buffer): SymList[] {
  const out: SymList[] = [];
  let p = 0;
  while (p < data.length) {
    if (data.length - p < 4) throw new ProtocolError("SMFIR_OPTNEG: truncated macro list stage");
    const stage = data.readUInt32BE(p);
    const nul = data.indexOf(0, p + 4);
    if (nul < 0) throw new ProtocolError("SMFIR_OPTNEG: macro list without NUL");
    out.push({ stage, macros: data.toString("utf8", p + 4, nul) });
    p = nul + 1;
  }
  return out;
}

/** Encodes a reply in one frame. @throws Error on a malformed REPLYCODE text (our bug). */
export function encodeReply(r: MilterReply): Buffer {
  const code = REPLY_CODES[r.type];
  if (r.type === "optneg") {
    const lists = r.symlists.map((l) => Buffer.concat([uint32s(l.stage), cstrings([l.macros])]));
    return encodeFrame(code, Buffer.concat([uint32s(r.version, r.actions, r.protocol), ...lists]));
  }
  if (r.type === "replycode") {
    const problem = replyTextProblem(r.text);
    if (problem !== undefined) throw new Error(`SMFIR_REPLYCODE: ${problem}`);
    return encodeFrame(code, cstrings([r.text]));
  }
  return encodeFrame(code);
}

// ---- REPLYCODE text (mta-protocols.md 1.7) ------------------------------------------------------

/** libmilter smfi_setmlreply: at most 32 lines of at most 980 characters. */
export const MAX_REPLY_LINES = 32;
export const MAX_REPLY_LINE_LENGTH = 980;

/**
 * Why an MTA would refuse this REPLYCODE text, or undefined: each line `[45]dd` then ' ' (last
 * line) or '-', all lines the same code (Sendmail MILTER_CHECK_REPLYCODE, Postfix milter8.c),
 * an enhanced code's class equal to the reply's (Postfix), no NUL, line limits (libmilter).
 */
export function replyTextProblem(text: string): string | undefined {
  if (text.includes("\0")) return "text holds NUL";
  const lines = text.split("\r\n");
  if (lines.length > MAX_REPLY_LINES) return `more than ${MAX_REPLY_LINES} lines`;
  const code = text.slice(0, 3);
  for (const [i, line] of lines.entries()) {
    const last = i === lines.length - 1;
    if (!/^[45]\d\d$/.test(line.slice(0, 3)) || line.slice(0, 3) !== code) {
      return `line ${i + 1} does not start with the reply code ${code}`;
    }
    if (line[3] !== (last ? " " : "-")) {
      return `line ${i + 1}: expected "${last ? " " : "-"}" after the code`;
    }
    if (/^\d$/.test(line[4] ?? "") && line[4] !== code[0]) {
      return `line ${i + 1}: enhanced code class differs from the reply code`;
    }
    if (/[\r\n]/.test(line)) return `line ${i + 1} holds CR or LF`;
    if (line.replaceAll("%%", "").includes("%")) return `line ${i + 1} holds a lone %`;
    if (line.length > MAX_REPLY_LINE_LENGTH) return `line ${i + 1} over ${MAX_REPLY_LINE_LENGTH}`;
  }
  return undefined;
}

/**
 * Builds REPLYCODE text: `550 5.7.1 text`, or for several lines `550-5.7.1 a\r\n550 5.7.1 b`.
 * A `%` is doubled: Sendmail reads the text as a format string (mta-protocols.md 1.7).
 * @throws Error on a code outside 4xx/5xx, an enhanced code of another class, CR/LF/NUL.
 */
export function formatReplyCode(
  code: number,
  enhanced: string,
  text: string | readonly string[],
): string {
  const lines = typeof text === "string" ? [text] : text;
  if (!Number.isInteger(code) || code < 400 || code > 599) throw new Error(`reply code ${code}`);
  const cls = String(code)[0] ?? "";
  if (!new RegExp(`^${cls}\\.\\d{1,3}\\.\\d{1,3}$`).test(enhanced)) {
    throw new Error(`enhanced code ${JSON.stringify(enhanced)} does not fit ${code}`);
  }
  const out = lines.map((line, i) => {
    if (/[\r\n\0]/.test(line)) throw new Error(`reply line holds CR, LF or NUL`);
    return `${code}${i === lines.length - 1 ? " " : "-"}${enhanced} ${line.replaceAll("%", "%%")}`;
  });
  const joined = out.join("\r\n");
  const problem = replyTextProblem(joined);
  if (problem !== undefined) throw new Error(problem);
  return joined;
}
