/**
 * Postfix SMTP access policy delegation codec (SMTPD_POLICY_README, "Protocol description";
 * Postfix attr_scan_plain.c). Pure: bytes in, requests out, or a ProtocolError.
 *
 * Accepts from Postfix smtpd (check_policy_service): requests of `name=value` lines, each ending
 * in LF (no CR: a CR belongs to the value), closed by an empty line. Postfix reuses a connection
 * for many requests, so the decoder is incremental: it returns every complete request in the
 * buffer and how many bytes they took; the caller keeps the rest.
 *
 * Limits (Postfix itself sets no length bound, so these are ours; see DEFAULT_POLICY_LIMITS):
 * line length, attributes per request, bytes per request. Unterminated data is checked too, so a
 * peer that never sends LF costs at most one request's worth of memory before it is cut off.
 *
 * Duplicate names: the last one wins, as in Postfix's example server (examples/smtpd-policy/
 * greylist.pl fills a hash line by line). Postfix does not send one name twice today, but the
 * README does not promise it, so a duplicate is not an error.
 */
import { isUtf8 } from "node:buffer";
import { ProtocolError } from "../../../shared/protocol-error.ts";

export interface PolicyLimits {
  /** Longest `name=value` line in bytes, without its LF. */
  maxLineBytes: number;
  /** Most `name=value` lines in one request. */
  maxAttributes: number;
  /** Most bytes in one request, its final empty line included. */
  maxRequestBytes: number;
}

/**
 * Budget for one request. Postfix 3.7 sends 29 attributes and later versions add a few
 * (SMTPD_POLICY_README lists them by version), so 64 leaves room. The long values come from SMTP commands (helo_name, sender, recipient) that
 * smtpd already cuts at line_length_limit (2048 bytes by default); sasl_username and the ccert_*
 * names are shorter in practice. 4096 per line is twice that; 16 KiB per request holds three
 * such lines plus the short rest. A request over any limit is a ProtocolError: the connection is
 * closed, Postfix retries and then applies its default action (fail closed, never a relay grant).
 */
export const DEFAULT_POLICY_LIMITS: Readonly<PolicyLimits> = Object.freeze({
  maxLineBytes: 4096,
  maxAttributes: 64,
  maxRequestBytes: 16384,
});

/** One request: attribute name to value. */
export type PolicyRequest = ReadonlyMap<string, string>;

const LF = 0x0a;
const NUL = 0x00;
const EQUALS = 0x3d;

/**
 * Decodes every complete request at the start of `buf`. `consumed` is the byte count of those
 * requests; the bytes after it are an unfinished request to be completed by later data.
 * @throws ProtocolError on the first bad or oversized request, finished or not.
 */
export function decodePolicyRequests(
  buf: Buffer,
  limits: PolicyLimits = DEFAULT_POLICY_LIMITS,
): { requests: PolicyRequest[]; consumed: number } {
  const requests: PolicyRequest[] = [];
  let consumed = 0;
  for (;;) {
    const end = findRequestEnd(buf, consumed);
    if (end < 0) break;
    requests.push(parseRequest(buf.subarray(consumed, end), limits));
    consumed = end;
  }
  checkUnfinished(buf.subarray(consumed), limits);
  return { requests, consumed };
}

/** Index just past the empty line that closes the request starting at `start`, or -1. */
function findRequestEnd(buf: Buffer, start: number): number {
  if (start >= buf.length) return -1;
  if (buf[start] === LF) return start + 1; // empty request, rejected by parseRequest
  const at = buf.indexOf("\n\n", start);
  return at < 0 ? -1 : at + 2;
}

/** `bytes` is one whole request, final empty line included. */
function parseRequest(bytes: Buffer, limits: PolicyLimits): PolicyRequest {
  if (bytes.length === 1) throw new ProtocolError("empty request (no attributes)");
  if (bytes.length > limits.maxRequestBytes) throw tooLong(limits);
  const body = bytes.subarray(0, bytes.length - 1); // every line still ends in LF
  // The byte checks once for the whole body; only a bad one is searched line by line, for the
  // line number. The rest is read from one string: a request costs one decode, not one per line.
  if (body.includes(NUL) || !isUtf8(body)) checkLines(body, limits);
  const text = body.toString("utf8");
  const request = new Map<string, string>();
  for (let start = 0, n = 1; start < text.length; n++) {
    const lf = text.indexOf("\n", start);
    const eq = checkLine(text, start, lf, n, limits);
    request.set(text.slice(start, eq), text.slice(eq + 1, lf));
    start = lf + 1;
  }
  return request;
}

/**
 * The line text[start, lf) of a body already known to be UTF-8 without NUL, as checkLines;
 * returns where its "=" is.
 */
function checkLine(
  text: string,
  start: number,
  lf: number,
  n: number,
  limits: PolicyLimits,
): number {
  // A UTF-16 unit is at most three UTF-8 bytes: only a long line needs its bytes counted.
  const chars = lf - start;
  if (
    chars * 3 > limits.maxLineBytes &&
    Buffer.byteLength(text.slice(start, lf)) > limits.maxLineBytes
  ) {
    throw new ProtocolError(`line ${n}: longer than ${limits.maxLineBytes} bytes`);
  }
  if (n > limits.maxAttributes) {
    throw new ProtocolError(`more than ${limits.maxAttributes} attributes in one request`);
  }
  const eq = text.indexOf("=", start);
  if (eq < 0 || eq > lf) throw new ProtocolError(`line ${n}: no "=" after the attribute name`);
  if (eq === start) throw new ProtocolError(`line ${n}: empty attribute name`);
  return eq;
}

/**
 * Fails early on an unfinished request that is already bad or can only end up over a limit,
 * so a peer that never finishes a request is cut off within one request's worth of bytes.
 */
function checkUnfinished(rest: Buffer, limits: PolicyLimits): void {
  if (rest.length === 0) return;
  // A complete request may reach maxRequestBytes, and this one needs at least one more byte.
  if (rest.length >= limits.maxRequestBytes) throw tooLong(limits);
  checkLines(rest, limits);
}

function tooLong(limits: PolicyLimits): ProtocolError {
  return new ProtocolError(`request longer than ${limits.maxRequestBytes} bytes`);
}

/**
 * Checks the lines of a request body, or of an unfinished request whose last line may still be
 * growing: length and count for every line, the rest only once a line has its LF.
 */
function checkLines(bytes: Buffer, limits: PolicyLimits): void {
  let start = 0;
  for (let n = 1; start < bytes.length; n++) {
    const lf = bytes.indexOf(LF, start);
    const end = lf < 0 ? bytes.length : lf;
    if (end - start > limits.maxLineBytes) {
      throw new ProtocolError(`line ${n}: longer than ${limits.maxLineBytes} bytes`);
    }
    if (n > limits.maxAttributes) {
      throw new ProtocolError(`more than ${limits.maxAttributes} attributes in one request`);
    }
    const line = bytes.subarray(start, end);
    if (line.includes(NUL)) throw new ProtocolError(`line ${n}: NUL byte`);
    if (lf >= 0) checkCompleteLine(line, n);
    start = end + 1;
  }
}

function checkCompleteLine(line: Buffer, n: number): void {
  const eq = line.indexOf(EQUALS);
  if (eq < 0) throw new ProtocolError(`line ${n}: no "=" after the attribute name`);
  if (eq === 0) throw new ProtocolError(`line ${n}: empty attribute name`);
  // LF never occurs inside a UTF-8 sequence, so lines can be checked one by one.
  if (!isUtf8(line)) throw new ProtocolError(`line ${n}: not valid UTF-8`);
}

/**
 * Encodes a reply: `action=<action>\n\n` (SMTPD_POLICY_README). Postfix ignores other reply
 * attributes, so none are offered. The role's few actions are encoded once each.
 * @throws Error if `action` is empty or holds LF, CR, NUL or a lone surrogate: a bug on our side.
 */
export function encodePolicyReply(action: string): Buffer {
  const known = encodedReplies.get(action);
  if (known !== undefined) return known;
  if (action === "" || /[\r\n\0]/.test(action) || !action.isWellFormed()) {
    throw new Error(`invalid policy action ${JSON.stringify(action)}`);
  }
  const reply = Buffer.from(`action=${action}\n\n`, "utf8");
  if (encodedReplies.size < MAX_ENCODED_REPLIES) encodedReplies.set(action, reply);
  return reply;
}

/** OK, DUNNO and the defer text, and room for a configured few more; never a growing set. */
const MAX_ENCODED_REPLIES = 16;
const encodedReplies = new Map<string, Buffer>();

/**
 * Encodes a request the way Postfix does, for our own client and tests (a reply's attribute
 * block has the same form).
 * @throws Error on no attributes, a name that is empty or holds "=", a name or value with LF or
 * NUL, or a lone UTF-16 surrogate (it has no UTF-8 form).
 */
export function encodePolicyRequest(
  attrs: PolicyRequest | Readonly<Record<string, string>>,
): Buffer {
  const entries = isMap(attrs) ? [...attrs] : Object.entries(attrs);
  if (entries.length === 0) throw new Error("a policy request needs at least one attribute");
  let text = "";
  for (const [name, value] of entries) {
    if (!encodable(name, value)) {
      throw new Error(`cannot encode policy attribute ${JSON.stringify(name)}`);
    }
    text += `${name}=${value}\n`;
  }
  return Buffer.from(`${text}\n`, "utf8");
}

function isMap(x: PolicyRequest | Readonly<Record<string, string>>): x is PolicyRequest {
  return x instanceof Map;
}

function encodable(name: string, value: string): boolean {
  return (
    name !== "" &&
    !/[=\n\0]/.test(name) &&
    !/[\n\0]/.test(value) &&
    name.isWellFormed() &&
    value.isWellFormed()
  );
}
