/**
 * Fuzzing every protocol front door: no input may make a codec or session throw anything but its
 * documented error (STYLE.md "Tests"), memory must stay bounded, and a server under a flood of bad
 * input must keep answering a good session right. Not a test file: a run of minutes, printed as
 * two tables; exit status 1 if any unexpected throw, crash or good-session failure happened.
 *
 *   node --expose-gc bench/fuzz.ts [frames]     frames per codec, default 1 000 000
 *   FUZZ_SEED (default 1)                       the same seed feeds the same inputs
 *   FUZZ_CONNECTIONS (default 20 000)           connections and datagrams per server
 *   FUZZ_CODEC_SECONDS (default 45)             time budget per codec; a cut run says so
 *   FUZZ_ONLY (default all)                     e.g. "milter,whoson": names they start with
 *
 * Part 1, in process, per codec: `frames` inputs, 15% random bytes, 10% token soup (the
 * protocol's words, separators and digits in random order), 10% valid frames and 65% valid frames
 * mutated 1 to 4 times (bit flips, interesting bytes, truncation at either end, length-field or
 * limit corruption, duplication, splicing with a second valid frame, insertion, deletion). Valid
 * frames come from generators with random fields (a pool of 4096 made up front, 3% made
 * afresh). Each input goes through the pure codecs alone (the server's and our client's) and into
 * a long-lived session (replaced once it fails, and every SESSION_INPUTS inputs) in 1 to 3 chunks.
 * Expected: ProtocolError from codecs and sessions; nothing at all from the log-line parser,
 * syslogRecord, judgePolicyRequest and commandOf. The heap is read after a full GC before the
 * run, at every tenth of it (peak) and after dropping the sessions.
 *
 * Part 2, over loopback: each server on 127.0.0.1:0 with a trivial decision or sink gets
 * FUZZ_CONNECTIONS connections or datagrams of such inputs (TCP 64 at a time, each written, ended
 * and closed within 2 s; UDP paced at most 16 per millisecond; at most 60 s per server) while one
 * good session on its own connection (test/support clients) keeps asking and checks every answer.
 * Uncaught exceptions and unhandled rejections are counted as crashes instead of ending the run.
 */
import dgram from "node:dgram";
import http from "node:http";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { leaseKey, parseAddress } from "../shared/address.ts";
import type { Lease } from "../shared/lease.ts";
import { ProtocolError } from "../shared/protocol-error.ts";
import { DEFAULT_DECISION_CONFIG, decide } from "../services/milter/decide.ts";
import type { DecisionConfig, RelayRequest } from "../services/milter/decide.ts";
import { leaseAnswer, policyAction } from "../services/milter/milter.ts";
import type { LeaseLookup } from "../services/milter/mirror.ts";
import {
  decodeCommands,
  decodeReplies,
  encodeCommand,
} from "../services/milter/milter-protocol/codec.ts";
import type { MilterCommand } from "../services/milter/milter-protocol/codec.ts";
import { MilterSession } from "../services/milter/milter-protocol/session.ts";
import { startMilterServer } from "../services/milter/milter-protocol/server.ts";
import { decodePolicyRequests, encodePolicyRequest } from "../services/milter/policy/codec.ts";
import type { PolicyRequest } from "../services/milter/policy/codec.ts";
import { PolicySession } from "../services/milter/policy/session.ts";
import { startPolicyServer } from "../services/milter/policy/server.ts";
import {
  decodeSocketmapReplies,
  decodeSocketmapRequests,
  encodeNetstring,
  encodeSocketmapRequest,
} from "../services/milter/socketmap/codec.ts";
import { SocketmapSession } from "../services/milter/socketmap/session.ts";
import type { LeaseAnswer } from "../services/milter/socketmap/session.ts";
import { startSocketmapServer } from "../services/milter/socketmap/server.ts";
import {
  decodeWhosonDatagram,
  decodeWhosonReplies,
  decodeWhosonReplyDatagram,
  decodeWhosonRequests,
} from "../services/milter/whoson/codec.ts";
import { WhosonSession } from "../services/milter/whoson/session.ts";
import { startWhosonServer } from "../services/milter/whoson/server.ts";
import { parseAllowList } from "../services/watcher/drac/allow-list.ts";
import {
  DRACPROC_ADD,
  DRACPROG,
  DRACVERS,
  DRACVERS6,
  encodeDracAddArgs,
} from "../services/watcher/drac/drac-codec.ts";
import { dracProgram } from "../services/watcher/drac/drac-program.ts";
import {
  PMAPPROC_GETPORT,
  PMAP_PROG,
  PMAP_VERS,
  RPCBVERS,
  RPCBVERS4,
  decodePort,
  encodeMapping,
  encodeRpcb,
  portmapProgram,
} from "../services/watcher/drac/portmap.ts";
import type { Registration } from "../services/watcher/drac/portmap.ts";
import { decodeRecords, encodeRecord } from "../services/watcher/drac/record-marking.ts";
import {
  AUTH_NONE,
  AUTH_SYS,
  decodeCall,
  decodeReply,
  encodeCall,
} from "../services/watcher/drac/rpc-codec.ts";
import type { OpaqueAuth } from "../services/watcher/drac/rpc-codec.ts";
import { RpcStreamSession, dispatch } from "../services/watcher/drac/session.ts";
import type { CallContext } from "../services/watcher/drac/session.ts";
import { startDracServer } from "../services/watcher/drac/server.ts";
import {
  POLICY_REPLY,
  commandOf,
  judgePolicyRequest,
  parsePolicyBody,
} from "../services/watcher/dovecot-policy/codec.ts";
import { startDovecotPolicyServer } from "../services/watcher/dovecot-policy/server.ts";
import { parseLogLine, parseLogMessage } from "../services/watcher/log/parse.ts";
import { decodeSyslog } from "../services/watcher/log/syslog-codec.ts";
import { syslogRecord } from "../services/watcher/log/syslog.ts";
import { RpcClient, dracAddWith } from "../test/support/drac-client.ts";
import {
  MilterClient,
  POSTFIX_OFFER,
  V2_OFFER,
  replyVerdict,
} from "../test/support/milter-client.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../test/support/policy-client.ts";
import { SocketmapClient } from "../test/support/socketmap-client.ts";
import { WhosonTcpClient, WhosonUdpClient } from "../test/support/whoson-client.ts";

// ---- seeded randomness ---------------------------------------------------------------------------

/** sfc32 (PractRand), seeded through splitmix32: fast, and the same seed gives the same inputs. */
class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = next();
    this.#b = next();
    this.#c = next();
    this.#d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t0 = (this.#a + this.#b) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#d = (this.#d + 1) | 0;
    const t = (t0 + this.#d) | 0;
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** 0 <= int(n) < n. */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n);
  }

  chance(p: number): boolean {
    return this.u32() < p * 0x100000000;
  }

  pick<T>(xs: readonly T[]): T {
    const x = xs[this.int(xs.length)];
    if (x === undefined) throw new Error("pick from an empty list");
    return x;
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** Mostly short, sometimes a page, rarely past every limit of the codecs (8 to 64 KiB). */
  length(): number {
    const x = this.int(100);
    if (x < 70) return this.int(65);
    if (x < 97) return this.int(1025);
    return this.int(20_000);
  }
}

// ---- random fields -------------------------------------------------------------------------------

const WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(0x20 + i)).join("");
const WIDE = ["é", "ß", "ø", "ü", "€", "中", "😀", "\u00a0", "\ufeff"];

function word(r: Rng, max = 12): string {
  let s = "";
  for (let n = 1 + r.int(max); n > 0; n--) s += WORD[r.int(WORD.length)] ?? "x";
  return s;
}

/** Printable text, sometimes with non-ASCII characters; never a control character. */
function text(r: Rng, max = 40): string {
  let s = "";
  for (let n = r.int(max + 1); n > 0; n--) {
    s += r.chance(0.05) ? r.pick(WIDE) : (PRINTABLE[r.int(PRINTABLE.length)] ?? " ");
  }
  return s;
}

function ipv4(r: Rng): string {
  return `${r.int(256)}.${r.int(256)}.${r.int(256)}.${r.int(256)}`;
}

function ipv6(r: Rng): string {
  const groups = Array.from({ length: 8 }, () => r.int(0x10000).toString(16));
  if (r.chance(0.5)) {
    const at = r.int(7);
    return `${groups.slice(0, at).join(":")}::${groups.slice(at + 1 + r.int(7 - at)).join(":")}`;
  }
  return groups.join(":");
}

/** An address as some MTA, client or log writes it, or something that only looks like one. */
function address(r: Rng): string {
  switch (r.int(14)) {
    case 0:
    case 1:
    case 2:
      return ipv4(r);
    case 3:
    case 4:
      return ipv6(r);
    case 5:
      return `IPv6:${ipv6(r)}`;
    case 6:
      return `::ffff:${ipv4(r)}`;
    case 7:
      return `[${r.chance(0.5) ? ipv4(r) : ipv6(r)}]`;
    case 8:
      return r.pick(["unknown", "localhost", "0", "fe80::1%eth0", "010.1.1.1", "::", "1.2.3"]);
    case 9:
      return LEASED;
    case 10:
      return OTHER;
    default:
      return word(r, 20);
  }
}

function recipient(r: Rng): string {
  const local = r.chance(0.9) ? word(r, 10) : r.pick(["a%b", "b!a", '"a@b"', "@relay:a"]);
  const domain = r.pick(["example.org", "remote.example", "sub.example.org", word(r, 15), ""]);
  return r.chance(0.9) ? `${local}@${domain}` : local;
}

// ---- the decision behind the SMTP-side doors -----------------------------------------------------

/** The clock of the in-process decisions and log parsing. */
const NOW = Date.now();
const LEASED = "192.0.2.1";
const OTHER = "198.51.100.7";
const FAR = Date.now() + 10 * 365 * 86_400_000;
const LEASE: Lease = {
  ip: LEASED,
  user: "alice",
  service: "imap",
  source: "fuzz",
  watcher: "fuzz",
  loginAt: 0,
  expiresAt: FAR,
  event: "fuzz",
};
const LEASED_KEY = leaseKey(parseAddress(LEASED));
const LOOKUP: LeaseLookup = {
  lookup: (key, now) => (key === LEASED_KEY && LEASE.expiresAt > now ? LEASE : undefined),
};
const CONFIG: DecisionConfig = {
  ...DEFAULT_DECISION_CONFIG,
  localDomains: new Set(["example.org"]),
};
const STALE: DecisionConfig = { ...CONFIG, stale: true };
const REJECT_TEXT = "Relaying denied: check your mail first";

/** The policy door's question, as milter.ts asks it. */
function policyRequest(request: PolicyRequest): RelayRequest {
  return {
    clientAddress: request.get("client_address"),
    stage: request.get("protocol_state")?.toUpperCase() === "RCPT" ? "rcpt" : "connect",
    recipient: request.get("recipient"),
    authenticated: request.get("sasl_username"),
  };
}

function policyAnswer(request: PolicyRequest): string {
  return policyAction(decide(LOOKUP, policyRequest(request), Date.now(), CONFIG));
}

function clientAnswer(text: string): LeaseAnswer {
  return leaseAnswer(decide(LOOKUP, { clientAddress: text, stage: "connect" }, Date.now(), CONFIG));
}

// ---- tallies -------------------------------------------------------------------------------------

const isProtocolError = (err: unknown): boolean => err instanceof ProtocolError;
const nothing = (): boolean => false;

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

function hex(b: Buffer): string {
  const shown = b.subarray(0, 160).toString("hex");
  return b.length > 160 ? `${shown}... (${b.length} bytes)` : shown;
}

/** What one codec's run threw, by layer and error name. */
class Tally {
  readonly name: string;
  readonly seed: number;
  readonly errors = new Map<string, number>();
  unexpected = 0;
  readonly samples: string[] = [];
  index = 0;
  input: Buffer = Buffer.alloc(0);

  constructor(name: string, seed: number) {
    this.name = name;
    this.seed = seed;
  }

  threw(layer: string, err: unknown, expected: boolean): void {
    if (expected) {
      const key = `${layer} ${errorName(err)}`;
      this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
      return;
    }
    this.unexpected++;
    if (this.samples.length >= 5) return;
    const stack = err instanceof Error ? (err.stack ?? err.message) : String(err);
    this.samples.push(
      `${this.name} / ${layer}, input #${this.index} (FUZZ_SEED=${this.seed}):\n` +
        `  ${stack.split("\n").slice(0, 8).join("\n  ")}\n  input ${hex(this.input)}`,
    );
  }
}

/**
 * Runs one layer on the current input and tallies what it throws. Errors are built without a
 * stack during the run (Error.stackTraceLimit 0: a stack costs more than the decoding); an
 * unexpected one is run again with stacks on, so the report shows where it came from.
 */
function guard(t: Tally, layer: string, run: () => void, expected = isProtocolError): void {
  try {
    run();
  } catch (err) {
    if (expected(err)) t.threw(layer, err, true);
    else t.threw(layer, withStack(err, run), false);
  }
}

const STACK_FRAMES = 12;

function withStack(err: unknown, run: () => void): unknown {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = STACK_FRAMES;
  try {
    run();
    return err; // a session's second try need not fail the same way
  } catch (again) {
    return again;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The input as 1 to 3 non-empty chunks, as a socket may deliver it. */
function chunks(input: Buffer, r: Rng): Buffer[] {
  const cuts = r.int(3);
  if (cuts === 0 || input.length < 2) return [input];
  const at = Array.from({ length: cuts }, () => 1 + r.int(input.length - 1)).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of at) {
    if (c > from) out.push(input.subarray(from, c));
    from = c;
  }
  out.push(input.subarray(from));
  return out;
}

/**
 * Inputs one session takes before a new one: long enough for state and unfinished frames to carry
 * over, short enough that a session holding an unfinished 64 KiB milter frame (copied on every
 * chunk, as a real connection's would be) does not dominate the run.
 */
const SESSION_INPUTS = 64;

/** A session used for up to SESSION_INPUTS inputs, replaced at once when it has failed or closed. */
class Sessions<S> {
  readonly #make: () => S;
  readonly #done: (s: S) => boolean;
  #current: S | undefined;
  #fed = 0;

  constructor(make: () => S, done: (s: S) => boolean) {
    this.#make = make;
    this.#done = done;
  }

  get(): S {
    if (
      this.#current === undefined ||
      this.#done(this.#current) ||
      ++this.#fed % SESSION_INPUTS === 0
    ) {
      this.#current = this.#make();
    }
    return this.#current;
  }

  reset(): void {
    this.#current = undefined;
  }
}

// ---- mutation ------------------------------------------------------------------------------------

interface Target {
  readonly name: string;
  /** The layers each input goes through, for the table. */
  readonly layers: string;
  valid(r: Rng): Buffer;
  /** Words, separators and digits of the protocol, for token soup. */
  readonly tokens: readonly string[];
  /** The protocol's own length fields (or, for text, its limits) made wrong. */
  corruptLength(b: Buffer, r: Rng): Buffer;
  feed(input: Buffer, r: Rng, t: Tally): void | Promise<void>;
  /** Drops the long-lived sessions, so the heap after can be read. */
  reset(): void;
}

const INTERESTING_BYTES = [
  0x00, 0x01, 0x09, 0x0a, 0x0d, 0x20, 0x22, 0x2c, 0x2d, 0x3a, 0x3c, 0x3d, 0x3e, 0x5b, 0x5c, 0x5d,
  0x7f, 0x80, 0xbf, 0xc0, 0xed, 0xef, 0xf4, 0xff,
];
const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 12, 0x7f, 0x80, 0xff, 0x100, 400, 401, 0x3ff, 0x400, 0x401, 4096, 8191, 8192, 8193,
  0xffff, 0x10000, 0x10001, 0x7fffffff, 0x80000000, 0x80000001, 0x80002000, 0xfffffffe, 0xffffffff,
];

type Mutation = (b: Buffer, r: Rng, target: Target) => Buffer;

const MUTATIONS: readonly Mutation[] = [
  // bit flips
  (b, r) => {
    if (b.length === 0) return b;
    const out = Buffer.from(b);
    for (let n = 1 + r.int(8); n > 0; n--) {
      const i = r.int(out.length);
      out[i] = (out[i] ?? 0) ^ (1 << r.int(8));
    }
    return out;
  },
  // interesting bytes
  (b, r) => {
    if (b.length === 0) return Buffer.of(r.pick(INTERESTING_BYTES));
    const out = Buffer.from(b);
    for (let n = 1 + r.int(3); n > 0; n--) out[r.int(out.length)] = r.pick(INTERESTING_BYTES);
    return out;
  },
  // truncation, at the end or at the start
  (b, r) => b.subarray(0, r.int(b.length + 1)),
  (b, r) => b.subarray(r.int(b.length + 1)),
  // length fields and limits
  (b, r, target) => target.corruptLength(b, r),
  (b, r, target) => target.corruptLength(b, r),
  // duplication: the whole input again, or one slice of it twice
  (b, r) => {
    if (b.length < 8192 && r.chance(0.5)) {
      return Buffer.concat(Array.from({ length: 2 + r.int(3) }, () => b));
    }
    const from = r.int(b.length + 1);
    const to = from + r.int(b.length - from + 1);
    return Buffer.concat([b.subarray(0, to), b.subarray(from)]);
  },
  // splicing with a second valid frame: back to back, or one's head and the other's tail
  (b, r, target) => {
    const other = target.valid(r);
    if (r.chance(0.4)) return Buffer.concat(r.chance(0.5) ? [b, other] : [other, b]);
    return Buffer.concat([b.subarray(0, r.int(b.length + 1)), other.subarray(r.int(other.length))]);
  },
  (b, r) => {
    const at = r.int(b.length + 1);
    return Buffer.concat([b.subarray(0, at), r.bytes(1 + r.int(16)), b.subarray(at)]);
  },
  (b, r) => {
    const from = r.int(b.length + 1);
    return Buffer.concat([b.subarray(0, from), b.subarray(from + 1 + r.int(16))]);
  },
];

/** A big-endian uint32 somewhere in `b` (at a multiple of 4) set to an interesting value. */
function corruptWord(b: Buffer, r: Rng, offsets?: readonly number[]): Buffer {
  if (b.length < 4) return Buffer.concat([b, u32(r.pick(INTERESTING_U32))]);
  const candidates = (offsets ?? []).filter((o) => o + 4 <= b.length);
  const at =
    candidates.length > 0 && r.chance(0.7)
      ? r.pick(candidates)
      : 4 * r.int(Math.floor((b.length - 4) / 4) + 1);
  const out = Buffer.from(b);
  const old = out.readUInt32BE(at);
  const value = r.chance(0.6) ? r.pick(INTERESTING_U32) : old + r.int(9) - 4;
  out.writeUInt32BE(value >>> 0, at);
  return out;
}

function u32(v: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(v >>> 0);
  return out;
}

/** One line of a text input made `limit + delta` bytes long (delta in -1..+2, or far over). */
function stretchLine(b: Buffer, r: Rng, limit: number, fill = "x"): Buffer {
  const s = b.toString("latin1");
  const lines = s.split("\n");
  const i = r.int(lines.length);
  const want = r.chance(0.8) ? limit - 1 + r.int(4) : limit * 2;
  const line = lines[i] ?? "";
  lines[i] = line.length >= want ? line.slice(0, want) : line + fill.repeat(want - line.length);
  return Buffer.from(lines.join("\n"), "latin1");
}

function tokenSoup(tokens: readonly string[], r: Rng): Buffer {
  let s = "";
  for (let n = r.int(40); n > 0; n--) s += r.pick(tokens);
  return Buffer.from(s, "utf8");
}

/** Past every limit (the milter's 64 KiB frame is the largest), so repeated duplication stops. */
const MAX_INPUT_BYTES = 66_000;

function nextInput(target: Target, r: Rng): Buffer {
  const x = r.int(100);
  if (x < 15) return r.bytes(r.length());
  if (x < 25) return tokenSoup(target.tokens, r);
  let b = target.valid(r);
  if (x < 35) return b;
  for (let n = 1 + r.int(4); n > 0; n--) {
    b = r.pick(MUTATIONS)(b, r, target);
    if (b.length > MAX_INPUT_BYTES) b = b.subarray(0, MAX_INPUT_BYTES);
  }
  return b;
}

// ---- milter -----------------------------------------------------------------------------------

const MILTER_STAGES = ["C", "H", "M", "R", "T", "L", "N", "B", "E", "X"];
const MAILERS = ["esmtp", "smtp", "local", "virtual", "relay", "lmtp", ""];

function milterCommand(r: Rng): MilterCommand {
  switch (r.int(13)) {
    case 0:
    case 1: {
      const macros: [string, string][] = [];
      if (r.chance(0.5)) macros.push(["{rcpt_mailer}", r.pick(MAILERS)]);
      if (r.chance(0.3)) macros.push(["{auth_authen}", r.chance(0.5) ? "" : word(r)]);
      if (r.chance(0.3)) macros.push(["j", word(r)]);
      if (r.chance(0.2)) macros.push([`{${word(r, 6)}}`, text(r, 20).replaceAll("\0", "")]);
      return { type: "macro", stage: r.pick(MILTER_STAGES), macros };
    }
    case 2:
    case 3: {
      const family = r.pick(["4", "6", "L", "U"] as const);
      if (family === "U") return { type: "connect", hostname: word(r), family };
      return {
        type: "connect",
        hostname: word(r),
        family,
        port: r.int(65536),
        address: address(r),
      };
    }
    case 4:
      return { type: "helo", helo: word(r) };
    case 5:
      return { type: "mail", args: [`<${recipient(r)}>`, ...(r.chance(0.3) ? ["SIZE=100"] : [])] };
    case 6:
    case 7:
      return { type: "rcpt", args: [`<${recipient(r)}>`] };
    case 8:
      return { type: "header", name: word(r), value: text(r) };
    case 9:
      return { type: r.chance(0.5) ? "body" : "eob", chunk: r.bytes(r.int(64)) };
    case 10:
      return { type: r.pick(["abort", "data", "eoh", "quit-nc"] as const) };
    case 11:
      return { type: "unknown", line: text(r, 30) };
    default:
      return r.chance(0.1) ? { type: "quit" } : { type: "abort" };
  }
}

function milterValid(r: Rng): Buffer {
  const commands: MilterCommand[] = [];
  if (r.chance(0.9)) {
    const offer = r.chance(0.8)
      ? r.pick([POSTFIX_OFFER, V2_OFFER])
      : { version: r.int(8), actions: r.u32(), protocol: r.u32() };
    commands.push({ type: "optneg", ...offer });
  }
  for (let n = r.int(10); n > 0; n--) commands.push(milterCommand(r));
  return Buffer.concat(commands.map(encodeCommand));
}

/** Offsets where a frame starts, walking the length fields as they are. */
function milterFrames(b: Buffer): number[] {
  const out: number[] = [];
  for (let at = 0; at + 4 <= b.length && out.length < 64;) {
    out.push(at);
    const length = b.readUInt32BE(at);
    if (length === 0) break;
    at += 4 + length;
  }
  return out;
}

function milterTarget(): Target {
  let tally: Tally | undefined;
  const sessions = new Sessions(
    () => {
      const stale = tally !== undefined && tally.index % 10 === 0;
      return new MilterSession({
        decide: (request) => decide(LOOKUP, request, Date.now(), stale ? STALE : CONFIG),
        acceptAt: tally !== undefined && tally.index % 2 === 0 ? "connect" : "rcpt",
        rejectText: REJECT_TEXT,
        onDecisionError: (err) => tally?.threw("decide", err, false),
      });
    },
    (s) => s.closed,
  );
  return {
    name: "milter",
    layers: "decodeCommands, decodeReplies, MilterSession",
    valid: milterValid,
    tokens: [
      "\0\0\0\x01",
      "\0\0\0\x0d",
      "O",
      "D",
      "C",
      "R",
      "M",
      "Q",
      "K",
      "4",
      "6",
      "\0",
      "<a@b>",
    ],
    corruptLength: (b, r) => corruptWord(b, r, milterFrames(b)),
    feed: (input, r, t) => {
      tally = t;
      guard(t, "codec", () => decodeCommands(input));
      guard(t, "client codec", () => decodeReplies(input));
      const s = sessions.get();
      for (const chunk of chunks(input, r)) {
        guard(t, "session", () => s.receive(chunk));
        if (s.closed) break;
      }
    },
    reset: () => {
      sessions.reset();
    },
  };
}

// ---- Postfix policy ---------------------------------------------------------------------------

function policyValid(r: Rng): Buffer {
  const requests: Buffer[] = [];
  for (let n = 1 + r.int(3); n > 0; n--) {
    const attrs: Record<string, string> = {};
    for (const [name, value] of Object.entries(POSTFIX_RCPT_REQUEST)) {
      if (r.chance(0.7)) attrs[name] = value;
    }
    attrs["client_address"] = address(r);
    attrs["protocol_state"] = r.pick(["RCPT", "CONNECT", "rcpt", "DATA", "END-OF-MESSAGE", ""]);
    attrs["recipient"] = recipient(r);
    if (r.chance(0.3)) attrs["sasl_username"] = r.chance(0.8) ? word(r) : "";
    if (r.chance(0.2)) attrs[word(r)] = text(r);
    requests.push(encodePolicyRequest(attrs));
  }
  return Buffer.concat(requests);
}

function policyTarget(): Target {
  const sessions = new Sessions(
    () => new PolicySession(policyAnswer),
    (s) => s.failed,
  );
  return {
    name: "policy",
    layers: "decodePolicyRequests, PolicySession",
    valid: policyValid,
    tokens: ["\n", "\n\n", "=", "client_address", "protocol_state=RCPT", "request", "é", "\0", "a"],
    corruptLength: (b, r) => {
      switch (r.int(3)) {
        case 0:
          return stretchLine(b, r, 4096);
        case 1: // attributes over the count limit
          return Buffer.concat([
            Buffer.from(Array.from({ length: 60 + r.int(10) }, (_, i) => `a${i}=x\n`).join("")),
            b,
          ]);
        default: // a request over the byte limit
          return stretchLine(b, r, 16384);
      }
    },
    feed: (input, r, t) => {
      guard(t, "codec", () => decodePolicyRequests(input));
      const s = sessions.get();
      for (const chunk of chunks(input, r)) {
        guard(t, "session", () => s.receive(chunk));
        if (s.failed) break;
      }
    },
    reset: () => {
      sessions.reset();
    },
  };
}

// ---- socketmap --------------------------------------------------------------------------------

function socketmapValid(r: Rng): Buffer {
  const out: Buffer[] = [];
  for (let n = 1 + r.int(3); n > 0; n--) {
    if (r.chance(0.1)) out.push(encodeNetstring(Buffer.from(word(r), "latin1")));
    else out.push(encodeSocketmapRequest(r.pick(["drac", "relay", "m"]), address(r)));
  }
  return Buffer.concat(out);
}

const NETSTRING_LENGTHS = [
  "",
  "0",
  "00",
  "01",
  "-1",
  "+5",
  " 5",
  "1e3",
  "1024",
  "1025",
  "99999999999999999999",
];

function socketmapTarget(): Target {
  const lookup = (a: { text: string }): LeaseAnswer => {
    const last = a.text.charCodeAt(a.text.length - 1);
    if (last % 17 === 0) throw new Error("lookup failed (the fuzzer's own)");
    if (last % 5 === 0) return { kind: "stale" };
    return clientAnswer(a.text);
  };
  const sessions = new Sessions(
    () => new SocketmapSession({ lookup }),
    (s) => s.failed,
  );
  return {
    name: "socketmap",
    layers: "decodeSocketmapRequests, decodeSocketmapReplies, SocketmapSession",
    valid: socketmapValid,
    tokens: ["1", "2", "9", "10", ":", ",", " ", "drac", "OK", "NOTFOUND", LEASED, "0:,"],
    corruptLength: (b, r) => {
      const colon = b.indexOf(0x3a);
      const digits = colon < 0 ? 0 : colon;
      const length = r.chance(0.5) ? r.pick(NETSTRING_LENGTHS) : String(digits + r.int(5) - 2);
      return Buffer.concat([Buffer.from(length, "latin1"), b.subarray(digits)]);
    },
    feed: (input, r, t) => {
      guard(t, "codec", () => decodeSocketmapRequests(input));
      guard(t, "client codec", () => decodeSocketmapReplies(input));
      const s = sessions.get();
      for (const chunk of chunks(input, r)) {
        guard(t, "session", () => s.receive(chunk));
        if (s.failed) break;
      }
    },
    reset: () => {
      sessions.reset();
    },
  };
}

// ---- whoson -----------------------------------------------------------------------------------

const WHOSON_VERBS = ["QUERY", "query", "LOGIN", "LOGOUT", "QUIT", "HELP", ""];

function whosonValid(r: Rng): Buffer {
  let s = "";
  for (let n = 1 + r.int(3); n > 0; n--) {
    const eol = r.chance(0.7) ? "\r\n" : "\n";
    if (r.chance(0.1)) s += eol;
    const args = Array.from({ length: r.int(3) }, () => address(r));
    s += [r.pick(WHOSON_VERBS), ...args].join(r.chance(0.9) ? " " : "\t") + eol + eol;
  }
  return Buffer.from(s, "utf8");
}

/** User names a lookup might hand over: plain, with control characters, lone surrogates, huge. */
const USERS = ["alice", "", "a\nb\r\0c", "\ud800x", "é😀", "u".repeat(2000), "é".repeat(700)];

function whosonTarget(): Target {
  let n = 0;
  const lookup = (a: { text: string }): LeaseAnswer => {
    n++;
    if (n % 7 === 0) return { kind: "leased", expiresAt: FAR, user: USERS[n % USERS.length] };
    if (n % 23 === 0) throw new Error("lookup failed (the fuzzer's own)");
    return clientAnswer(a.text);
  };
  const sessions = new Sessions(
    () => new WhosonSession({ lookup }),
    (s) => s.failed || s.closed,
  );
  return {
    name: "whoson",
    layers: "decodeWhosonRequests/Datagram, decodeWhosonReplies/ReplyDatagram, WhosonSession",
    valid: whosonValid,
    tokens: ["QUERY", "QUIT", "LOGIN", " ", "\t", "\r\n", "\n", "\r", "+", "-", "*", LEASED, "é"],
    corruptLength: (b, r) => stretchLine(b, r, 512, r.chance(0.5) ? "x" : " "),
    feed: (input, r, t) => {
      guard(t, "codec", () => decodeWhosonRequests(input));
      guard(t, "udp codec", () => decodeWhosonDatagram(input));
      guard(t, "client codec", () => decodeWhosonReplies(input));
      guard(t, "client udp codec", () => decodeWhosonReplyDatagram(input));
      const s = sessions.get();
      for (const chunk of chunks(input, r)) {
        guard(t, "session", () => s.receive(chunk));
        if (s.failed || s.closed) break;
      }
    },
    reset: () => {
      sessions.reset();
    },
  };
}

// ---- ONC RPC: record marking, DRAC, portmap and rpcbind ------------------------------------------

const NONE: OpaqueAuth = { flavor: AUTH_NONE, body: Buffer.alloc(0) };
const REGISTRATIONS: readonly Registration[] = [DRACVERS, DRACVERS6].flatMap((vers) =>
  (["udp", "tcp"] as const).map((netid) => ({
    prog: DRACPROG,
    vers,
    netid,
    host: undefined,
    port: 2989,
  })),
);
const RPC_PROGRAMS = [
  dracProgram(() => parseAllowList("127.0.0.0/8\n").list),
  portmapProgram(() => REGISTRATIONS),
];
const TCP_CONTEXT: CallContext = {
  caller: parseAddress("192.0.2.9"),
  transport: "tcp",
  localHost: undefined,
};
const RPC_CONTEXTS: readonly CallContext[] = [
  { caller: parseAddress("127.0.0.1"), transport: "udp", localHost: "127.0.0.1" },
  TCP_CONTEXT,
  { caller: undefined, transport: "udp", localHost: undefined },
];

function rpcCredential(r: Rng): OpaqueAuth {
  const x = r.int(10);
  if (x < 7) return NONE;
  if (x < 9) return { flavor: AUTH_SYS, body: r.bytes(r.int(120)) };
  return { flavor: r.int(8), body: r.bytes(r.int(40)) };
}

function rpcCallArgs(r: Rng): { prog: number; vers: number; proc: number; args: Buffer } {
  switch (r.int(8)) {
    case 0:
      return {
        prog: DRACPROG,
        vers: DRACVERS,
        proc: DRACPROC_ADD,
        args: encodeDracAddArgs(1, r.bytes(4)),
      };
    case 1: {
      const args = encodeDracAddArgs(DRACVERS6, r.bytes(16), r.chance(0.5));
      return { prog: DRACPROG, vers: DRACVERS6, proc: DRACPROC_ADD, args };
    }
    case 2:
      return { prog: DRACPROG, vers: r.int(4), proc: r.int(3), args: r.bytes(r.int(8)) };
    case 3: {
      const prot = r.pick([6, 17, r.u32()]);
      const args = encodeMapping({
        prog: r.pick([DRACPROG, r.u32()]),
        vers: r.int(4),
        prot,
        port: r.int(65536),
      });
      return { prog: PMAP_PROG, vers: PMAP_VERS, proc: r.int(6), args };
    }
    case 4:
    case 5: {
      const args = encodeRpcb({
        prog: r.pick([DRACPROG, r.u32()]),
        vers: r.int(4),
        netid: r.pick(["udp", "tcp", "udp6", "tcp6", word(r, 8)]),
        addr: r.pick(["", "127.0.0.1.11.173", word(r, 20)]),
        owner: r.pick(["", "relaylease", word(r)]),
      });
      return { prog: PMAP_PROG, vers: r.pick([RPCBVERS, RPCBVERS4]), proc: r.int(12), args };
    }
    case 6:
      return { prog: r.u32(), vers: r.int(3), proc: r.int(3), args: r.bytes(r.int(16)) };
    default:
      return { prog: PMAP_PROG, vers: r.int(6), proc: r.int(6), args: Buffer.alloc(0) };
  }
}

/** One RPC call message, as a datagram carries it (no record marking). */
function rpcValid(r: Rng): Buffer {
  const call = { xid: r.u32(), ...rpcCallArgs(r), cred: rpcCredential(r), verf: rpcCredential(r) };
  return encodeCall(call, r.chance(0.95) ? 2 : r.int(5));
}

/** cred flavor and length, verf flavor and length for an empty credential, first args. */
const RPC_WORDS = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44];

function rpcTarget(): Target {
  const sessions = new Sessions(
    () => new RpcStreamSession(RPC_PROGRAMS, TCP_CONTEXT),
    (s) => s.failed,
  );
  return {
    name: "drac/portmap rpc",
    layers: "decodeRecords, decodeCall, decodeReply, dispatch (UDP), RpcStreamSession (TCP)",
    valid: rpcValid,
    tokens: [
      "\0\0\0\0",
      "\0\0\0\x01",
      "\0\0\0\x02",
      "\x80\0\0\x28",
      "\0\x0d\xbc\x25",
      "\0\x01\x86\xa0",
      "\xff\xff\xff\xff",
    ],
    corruptLength: (b, r) => corruptWord(b, r, RPC_WORDS),
    feed: (input, r, t) => {
      guard(t, "codec", () => decodeCall(input));
      guard(t, "client codec", () => decodeReply(input));
      guard(t, "record codec", () => decodeRecords(input));
      guard(t, "udp dispatch", () => dispatch(input, RPC_PROGRAMS, r.pick(RPC_CONTEXTS)));
      let stream = input;
      if (r.chance(0.6)) {
        stream = encodeRecord(input, 1 + r.int(Math.max(1, input.length)));
        if (r.chance(0.3)) stream = corruptWord(stream, r, [0]);
      }
      const s = sessions.get();
      for (const chunk of chunks(stream, r)) {
        guard(t, "session", () => s.receive(chunk));
        if (s.failed) break;
      }
    },
    reset: () => {
      sessions.reset();
    },
  };
}

// ---- syslog and log lines ----------------------------------------------------------------------

const TS = "Nov 28 12:34:56";
const SID = "RkamOl1hNJh/AAAB";
/** Real-looking login and logout lines of each server family (test/services/watcher/log). */
const LOG_LINES = [
  `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=12345, TLS, session=<${SID}>`,
  `Nov 28 21:55:04 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=16473, secured, session=<${SID}>`,
  `2026-11-28T12:34:56.123456+01:00 mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=::ffff:203.0.113.5, lip=192.0.2.10`,
  `${TS} mail dovecot: imap-login: Login: alice [203.0.113.5]`,
  `${TS} mail dovecot: imap(alice)<12345><${SID}>: Disconnected: Logged out in=12 out=345`,
  `${TS} mail ipop3d[123]: Login user=alice host=client.example.com [203.0.113.5] nmsgs=3/3`,
  `${TS} mail imapd[123]: [ID 748625 mail.info] Login user=alice host=client.example.com [203.0.113.5]`,
  `${TS} mail imapd: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[51234], protocol=IMAP`,
  `${TS} mail pop3d: DISCONNECTED, user=alice, ip=[::ffff:203.0.113.5], port=[51234], top=0, retr=0, rcvd=6, sent=30, time=0`,
  `${TS} mail cyrus/imap[4242]: login: client.example.com [203.0.113.5] alice PLAIN+TLS User logged in SESSIONID=<m-1>`,
  `${TS} mail pop3d[77]: login: [203.0.113.5] alice plaintext User logged in`,
  `${TS} mail popper[123]: (v4.0.5) POP login by user "alice" at (client.example.com) 203.0.113.5`,
  `${TS} mail qpopper[123]: Stats: alice 2 2048 0 0 client.example.com 203.0.113.5`,
  `${TS} mail dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, rip=203.0.113.5`,
  `${TS} mail postfix/smtpd[1]: connect from unknown[203.0.113.5]`,
];
const LOG_PROGRAMS = [
  "dovecot",
  "imap-login",
  "pop3-login",
  "imapd",
  "ipop3d",
  "pop3d",
  "imap",
  "cyrus/imap",
  "popper",
  "couriertcpd",
  "imap(alice)",
  "postfix/smtpd",
  "",
];

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** Classic and RFC 3339 timestamps, in range and just out of it (Feb 30, 24:00, :60, +14:01). */
function timestamp(r: Rng): string {
  const day = r.pick([1, 9, 10, 28, 29, 30, 31, 32, 0]);
  const time = `${pad(r.pick([0, 12, 23, 24]))}:${pad(r.int(61))}:${pad(r.pick([0, 59, 60, 61]))}`;
  if (r.chance(0.5)) return `${r.pick([...MONTHS, "Foo"])} ${String(day).padStart(2, " ")} ${time}`;
  const year = pad(r.pick([1969, 1970, 2026, 2028, 9999, 0]), 4);
  const month = pad(r.pick([1, 2, 12, 13, 0]));
  const fraction = r.pick(["", ".0", ".123456", ".123456789123", "."]);
  const zone = r.pick(["Z", "z", "+01:00", "-00:00", "+14:00", "+14:01", "+0100", ""]);
  return `${year}-${month}-${pad(day)}${r.pick(["T", "t", " "])}${time}${fraction}${zone}`;
}

/** Clocks that put classic timestamps (no year) in another year, or on a leap day. */
const CLOCKS = [
  NOW,
  new Date(2027, 0, 1, 0, 0, 30).getTime(),
  new Date(2026, 11, 31, 23, 59, 59).getTime(),
  new Date(2028, 1, 29, 12).getTime(),
];

/** A corpus line with another address, user and timestamp. */
function logLine(r: Rng): string {
  let line = r.pick(LOG_LINES).replaceAll("203.0.113.5", address(r));
  if (r.chance(0.3)) line = line.replace(/^(Nov 28 \S+|\S+T\S+)/, timestamp(r));
  if (r.chance(0.3)) line = line.replaceAll("alice", r.chance(0.5) ? word(r, 30) : text(r, 30));
  return line;
}

function logTarget(): Target {
  return {
    name: "log lines",
    layers: "parseLogLine, parseLogMessage (nothing may throw)",
    valid: (r) => Buffer.from(logLine(r), "utf8"),
    tokens: [
      TS,
      " ",
      ": ",
      "mail ",
      "dovecot",
      "imap-login",
      "Login",
      "user=<",
      ">",
      ", ",
      "rip=",
      "[",
      "]",
      "(",
      ")",
      LEASED,
      "::",
    ],
    corruptLength: (b, r) =>
      r.chance(0.5)
        ? stretchLine(b, r, 8192)
        : Buffer.concat([b, Buffer.from("u".repeat(250 + r.int(10)))]),
    feed: (input, r, t) => {
      const line = input.toString(r.chance(0.8) ? "utf8" : "latin1");
      const now = r.pick(CLOCKS);
      guard(t, "parseLogLine", () => parseLogLine(line, now), nothing);
      // As the follower hands it over: one line of a string holding its neighbours too.
      const text = `${line}\n${line}\n${line}`;
      const start = line.length + 1;
      guard(t, "parseLogLine", () => parseLogLine(text, now, start, 2 * start - 1), nothing);
      guard(t, "parseLogMessage", () => parseLogMessage(r.pick(LOG_PROGRAMS), line), nothing);
    },
    reset: () => undefined,
  };
}

function syslogValid(r: Rng): Buffer {
  const pri = r.chance(0.9) ? r.int(192) : r.int(1000);
  const line = logLine(r);
  const message = line.slice(line.indexOf(": ") + 2);
  const app = r.pick(LOG_PROGRAMS) || "dovecot";
  switch (r.int(3)) {
    case 0:
      return Buffer.from(`<${pri}>${line}${r.pick(["", "\n", "\r\n", "\0"])}`, "utf8");
    case 1: {
      const sd = r.pick(["-", '[a@1 x="y"]', '[a@1 x="a\\"b\\]"][b@2]', "[x]"]);
      const ts = r.chance(0.3) ? "-" : timestamp(r);
      return Buffer.from(
        `<${pri}>1 ${ts} ${word(r)} ${app} ${r.int(99999)} ${word(r, 8)} ${sd} ${r.chance(0.3) ? "\ufeff" : ""}${message}`,
        "utf8",
      );
    }
    default:
      return Buffer.from(`<${pri}>${app}[${r.int(99999)}]: ${message}`, "utf8");
  }
}

function syslogTarget(): Target {
  return {
    name: "syslog",
    layers: "decodeSyslog, syslogRecord (nothing may throw)",
    valid: syslogValid,
    tokens: [
      "<",
      ">",
      "1",
      "13",
      "191",
      "192",
      " ",
      "-",
      "[",
      "]",
      '"',
      "=",
      "\\",
      TS,
      "dovecot: ",
      "\ufeff",
    ],
    corruptLength: (b, r) => {
      const x = r.int(3);
      if (x === 0) return stretchLine(b, r, 8192);
      if (x === 1)
        return Buffer.concat([
          Buffer.from(r.pick(["<999>", "<01>", "<-1>", "<1922>", "<>", "<"])),
          b.subarray(Math.max(0, b.indexOf(0x3e) + 1)),
        ]);
      return Buffer.from(
        b.toString("utf8").replace(/ \S+/, ` ${"a".repeat(47 + r.int(4))}`),
        "utf8",
      );
    },
    feed: (input, r, t) => {
      let message: ReturnType<typeof decodeSyslog> | undefined;
      guard(t, "codec", () => {
        message = decodeSyslog(input, r.pick(CLOCKS));
      });
      if (message !== undefined) {
        const m = message;
        guard(t, "syslogRecord", () => syslogRecord(m), nothing);
      }
    },
    reset: () => undefined,
  };
}

// ---- Dovecot auth policy ---------------------------------------------------------------------

const POLICY_TARGETS = [
  "/?command=report",
  "/?command=allow",
  "/",
  "/p?x=1&command=report",
  "/?command=%zz",
  "/?command=report&command=allow",
  "?",
  "",
];

function dovecotBody(r: Rng): string {
  const body: Record<string, unknown> = {};
  const value = (good: unknown): unknown =>
    r.chance(0.9) ? good : r.pick([null, 1, "true", [], {}, { a: [1] }, true]);
  if (r.chance(0.7)) body["device_id"] = "";
  if (r.chance(0.9)) body["login"] = value(r.chance(0.8) ? word(r) : text(r, 300));
  if (r.chance(0.9))
    body["protocol"] = value(r.pick(["imap", "pop3", "IMAP", "smtp", "submission", ""]));
  if (r.chance(0.9)) body["remote"] = value(address(r));
  if (r.chance(0.5)) body["local"] = value(address(r));
  if (r.chance(0.5)) body["session_id"] = value(SID);
  if (r.chance(0.9)) body["success"] = value(r.chance(0.7));
  if (r.chance(0.7)) body["policy_reject"] = value(r.chance(0.2));
  if (r.chance(0.7)) body["tls"] = value(r.chance(0.5));
  if (r.chance(0.1)) body[word(r)] = { nested: [word(r), r.int(10)] };
  return JSON.stringify(body);
}

function dovecotTarget(): Target {
  return {
    name: "dovecot policy",
    layers: "commandOf, parsePolicyBody, judgePolicyRequest",
    valid: (r) => Buffer.from(dovecotBody(r), "utf8"),
    tokens: [
      "{",
      "}",
      "[",
      "]",
      '"',
      ":",
      ",",
      "true",
      "null",
      '"remote"',
      '"success"',
      "1e999",
      "\\u0000",
      "é",
    ],
    corruptLength: (b, r) => {
      switch (r.int(3)) {
        case 0: // deep nesting
          return Buffer.from("[".repeat(1 + r.int(1000)) + b.toString("latin1"));
        case 1: // over DEFAULT_MAX_BODY_BYTES
          return Buffer.concat([
            b.subarray(0, b.length - 1),
            Buffer.from(`,"pad":"${"x".repeat(16_384)}"}`),
          ]);
        default: // a field of the wrong type
          return Buffer.from(
            b
              .toString("utf8")
              .replace(/(true|false|"[^"]*")/, r.pick(["1", "{}", "[]", '"x"', "null"])),
            "utf8",
          );
      }
    },
    feed: (input, r, t) => {
      const target = r.chance(0.8) ? r.pick(POLICY_TARGETS) : input.toString("latin1");
      let command: string | undefined;
      guard(t, "commandOf", () => (command = commandOf(target)), nothing);
      let body: ReturnType<typeof parsePolicyBody> | undefined;
      guard(t, "codec", () => (body = parsePolicyBody(input.toString("utf8"))));
      if (body !== undefined) {
        const b = body;
        guard(t, "judgePolicyRequest", () => judgePolicyRequest(command, b), nothing);
      }
    },
    reset: () => undefined,
  };
}

// ---- part 1: the codecs in process -------------------------------------------------------------

function heapMB(): number {
  return process.memoryUsage().heapUsed / 1048576;
}

function fullGc(): void {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error("run with node --expose-gc");
  gc();
  gc();
}

interface CodecRow {
  name: string;
  layers: string;
  inputs: number;
  errors: Map<string, number>;
  unexpected: number;
  samples: string[];
  before: number;
  peak: number;
  after: number;
  seconds: number;
}

async function fuzzCodec(
  target: Target,
  frames: number,
  budgetS: number,
  seed: number,
  index: number,
): Promise<CodecRow> {
  const r = new Rng(seed * 1009 + index);
  const t = new Tally(target.name, seed);
  fullGc();
  const before = heapMB();
  let peak = before;
  const every = Math.max(1, Math.floor(frames / 10));
  const t0 = performance.now();
  const deadline = t0 + budgetS * 1000;
  let fed = 0;
  for (let i = 0; i < frames; i++) {
    if ((i & 1023) === 0 && performance.now() > deadline) break;
    fed++;
    const input = nextInput(target, r);
    t.index = i;
    t.input = input;
    const pending = target.feed(input, r, t);
    if (pending !== undefined) await pending;
    if ((i + 1) % every === 0) {
      fullGc();
      peak = Math.max(peak, heapMB());
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  target.reset();
  fullGc();
  const after = heapMB();
  const { errors, unexpected, samples } = t;
  return {
    name: target.name,
    layers: target.layers,
    inputs: fed,
    errors,
    unexpected,
    samples,
    before,
    peak,
    after,
    seconds,
  };
}

// ---- part 2: the servers under a flood -----------------------------------------------------------

const silent = pino({ level: "silent" });

/** Exceptions nothing caught: a server's bug that would have ended the process. */
const crashes: string[] = [];
let phase = "start";
process.on("uncaughtException", (err) => {
  crashes.push(`${phase}: uncaught ${err.stack ?? String(err)}`);
});
process.on("unhandledRejection", (err) => {
  crashes.push(
    `${phase}: unhandled rejection ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
  );
});

interface HostPort {
  host: string;
  port: number;
}

function hostPort(address: string): HostPort {
  const colon = address.lastIndexOf(":");
  return {
    host: address.slice(0, colon).replace(/^\[|\]$/g, ""),
    port: Number(address.slice(colon + 1)),
  };
}

/** One TCP connection: the chunks written, our side ended, closed by 2 s at the latest. */
function tcpShot(to: HostPort, data: readonly Buffer[]): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(to.port, to.host);
    const timer = setTimeout(() => socket.destroy(), 2000);
    socket.on("error", () => undefined);
    socket.on("data", () => undefined);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect", () => {
      for (const chunk of data) socket.write(chunk);
      socket.end();
    });
  });
}

/** `run(i)` for i < n, `concurrency` at a time, until `deadlineMs`; resolves to how many ran. */
async function pool(
  n: number,
  concurrency: number,
  deadlineMs: number,
  run: (i: number) => Promise<void>,
): Promise<number> {
  let next = 0;
  const end = performance.now() + deadlineMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n && performance.now() < end) await run(next++);
    }),
  );
  return next;
}

interface Hammer {
  readonly label: string;
  readonly count: number;
  readonly concurrency: number;
  /** Sends the i-th connection's or datagram's bytes. */
  shoot(i: number): Promise<void>;
}

function tcpHammer(
  label: string,
  address: string,
  count: number,
  target: Target,
  r: Rng,
  concurrency = 64,
  frame = (b: Buffer) => b,
): Hammer {
  const to = hostPort(address);
  return {
    label,
    count,
    concurrency,
    shoot: () => tcpShot(to, chunks(frame(nextInput(target, r)), r)),
  };
}

async function udpHammer(
  label: string,
  address: string,
  count: number,
  target: Target,
  r: Rng,
): Promise<Hammer & { close(): void }> {
  const to = hostPort(address);
  const socket = dgram.createSocket("udp4");
  socket.on("message", () => undefined);
  socket.on("error", () => undefined);
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return {
    label,
    count,
    concurrency: 16,
    shoot: async () => {
      const datagram = nextInput(target, r).subarray(0, 60_000);
      await new Promise<void>((resolve) => {
        socket.send(datagram, to.port, to.host, () => {
          resolve();
        });
      });
      await sleep(1);
    },
    close: () => socket.close(),
  };
}

/** A session of our own client that must be answered right the whole time. */
interface GoodSession {
  open(): Promise<void>;
  /** Asks one round; resolves to the answers checked, throws on any wrong one. */
  round(i: number): Promise<number>;
  /** A final check once the flood is over (e.g. every login reached the sink). */
  finish?(): Promise<number>;
  close(): Promise<void>;
}

/** A good session over one client: `connect` at open, `round` each round, closed at the end. */
function clientSession<C extends { close(): Promise<unknown> }>(
  connect: () => Promise<C>,
  round: (client: C) => Promise<number>,
): GoodSession {
  let client: C | undefined;
  return {
    open: async () => {
      client = await connect();
    },
    round: () => {
      if (client === undefined) throw new Error("not connected");
      return round(client);
    },
    close: async () => {
      await client?.close();
    },
  };
}

interface Setup {
  hammers: Hammer[];
  good: GoodSession;
  /** Server-side counters worth printing, nonzero ones only. */
  counters(): Record<string, number>;
  /** Connections the server still holds; undefined if it does not count them. */
  open(): number | undefined;
  close(): Promise<void>;
}

interface Scenario {
  name: string;
  setup(n: number, r: Rng): Promise<Setup>;
}

function expect(what: string, got: unknown, want: unknown): void {
  if (got !== want)
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: no answer within ${ms} ms`));
    }, ms);
  });
  return Promise.race([p, timeout]).finally(() => {
    clearTimeout(timer);
  });
}

/**
 * The target with its valid frames drawn mostly from a pool of 4096 made up front (generating
 * one costs more than decoding it), and 3% made afresh.
 */
function pooled(target: Target, seed: number): Target {
  const r = new Rng(seed);
  const pool = Array.from({ length: 4096 }, () => target.valid(r));
  return { ...target, valid: (rng) => (rng.chance(0.03) ? target.valid(rng) : rng.pick(pool)) };
}

const TARGETS = {
  milter: pooled(milterTarget(), 1),
  policy: pooled(policyTarget(), 2),
  socketmap: pooled(socketmapTarget(), 3),
  whoson: pooled(whosonTarget(), 4),
  rpc: pooled(rpcTarget(), 5),
  syslog: pooled(syslogTarget(), 6),
  log: pooled(logTarget(), 7),
  dovecot: pooled(dovecotTarget(), 8),
};

const milterScenario: Scenario = {
  name: "milter (TCP)",
  setup: async (n, r) => {
    const server = await startMilterServer({
      listen: "127.0.0.1:0",
      decide: (request) => decide(LOOKUP, request, Date.now(), CONFIG),
      acceptAt: "connect",
      rejectText: REJECT_TEXT,
      log: silent,
    });
    let client: MilterClient | undefined;
    const good: GoodSession = {
      open: async () => {
        client = await MilterClient.connect(server.address);
        await client.negotiate();
      },
      round: async () => {
        const c = client;
        if (c === undefined) throw new Error("not connected");
        expect(
          "CONNECT leased",
          replyVerdict(await c.connectStep({ family: "4", address: LEASED })),
          "accept",
        );
        await c.send({ type: "quit-nc" });
        expect(
          "CONNECT other",
          replyVerdict(await c.connectStep({ family: "4", address: OTHER })),
          "continue",
        );
        expect(
          "RCPT remote",
          replyVerdict(await c.rcpt("a@remote.example", { "{rcpt_mailer}": "esmtp" })),
          "reject",
        );
        expect(
          "RCPT local",
          replyVerdict(await c.rcpt("b@example.org", { "{rcpt_mailer}": "local" })),
          "continue",
        );
        await c.abort();
        await c.send({ type: "quit-nc" });
        return 4;
      },
      close: async () => {
        client?.destroy();
        await client?.closed;
      },
    };
    return {
      hammers: [tcpHammer("connections", server.address, n, TARGETS.milter, r)],
      good,
      counters: () => ({ ...server.stats }),
      open: () => server.stats.connections,
      close: () => server.close(),
    };
  },
};

const policyScenario: Scenario = {
  name: "policy (TCP)",
  setup: async (n, r) => {
    const server = await startPolicyServer({
      listen: "127.0.0.1:0",
      answer: policyAnswer,
      log: silent,
    });
    const good = clientSession(
      () => PolicyClient.connect(server.address),
      async (c) => {
        expect("leased", await c.query({ ...POSTFIX_RCPT_REQUEST, client_address: LEASED }), "OK");
        expect("other", await c.query({ ...POSTFIX_RCPT_REQUEST, client_address: OTHER }), "DUNNO");
        return 2;
      },
    );
    return {
      hammers: [tcpHammer("connections", server.address, n, TARGETS.policy, r)],
      good,
      counters: () => ({ ...server.stats }),
      open: () => server.stats.connections,
      close: () => server.close(),
    };
  },
};

const socketmapScenario: Scenario = {
  name: "socketmap (TCP)",
  setup: async (n, r) => {
    const server = await startSocketmapServer({
      listen: "127.0.0.1:0",
      lookup: (a) => clientAnswer(a.text),
      log: silent,
    });
    const expiry = String(Math.floor(FAR / 1000));
    const good = clientSession(
      () => SocketmapClient.connect(server.address),
      async (c) => {
        expect(
          "leased",
          JSON.stringify(await c.lookup("drac", LEASED)),
          JSON.stringify({ status: "OK", value: expiry }),
        );
        expect("other", (await c.lookup("drac", OTHER)).status, "NOTFOUND");
        return 2;
      },
    );
    return {
      hammers: [tcpHammer("connections", server.address, n, TARGETS.socketmap, r)],
      good,
      counters: () => ({ ...server.stats }),
      open: () => server.stats.connections,
      close: () => server.close(),
    };
  },
};

const whosonScenario: Scenario = {
  name: "whoson (TCP+UDP)",
  setup: async (n, r) => {
    const server = await startWhosonServer({
      listen: "127.0.0.1:0",
      lookup: (a) => clientAnswer(a.text),
      log: silent,
    });
    const udpAddress = server.udpAddress ?? "";
    let tcp: WhosonTcpClient | undefined;
    let udp: WhosonUdpClient | undefined;
    const good: GoodSession = {
      open: async () => {
        tcp = await WhosonTcpClient.connect(server.address);
        udp = await WhosonUdpClient.open(udpAddress);
      },
      round: async () => {
        if (tcp === undefined || udp === undefined) throw new Error("not connected");
        const want = JSON.stringify({ status: "+", text: "alice" });
        expect("tcp leased", JSON.stringify(await tcp.query(LEASED)), want);
        expect("tcp other", (await tcp.query(OTHER)).status, "-");
        expect("udp leased", JSON.stringify(await udp.query(LEASED)), want);
        expect("udp other", (await udp.query(OTHER)).status, "-");
        return 4;
      },
      close: async () => {
        await tcp?.close();
        await udp?.close();
      },
    };
    const datagrams = await udpHammer(
      "datagrams",
      udpAddress,
      Math.floor(n / 2),
      TARGETS.whoson,
      r,
    );
    return {
      hammers: [
        tcpHammer("connections", server.address, n - datagrams.count, TARGETS.whoson, r),
        datagrams,
      ],
      good,
      counters: () => ({ ...server.stats }),
      open: () => server.stats.connections,
      close: async () => {
        datagrams.close();
        await server.close();
      },
    };
  },
};

/** Distinct addresses for the good session's DRAC logins, out of the hammer's usual way. */
function goodIp(i: number): string {
  return `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`;
}

const dracScenario: Scenario = {
  name: "drac + portmap (UDP+TCP)",
  setup: async (n, r) => {
    const logins = new Set<string>();
    const server = await startDracServer({
      listen: "127.0.0.1:0",
      portmapListen: "127.0.0.1:0",
      allowList: parseAllowList("127.0.0.0/8\n").list,
      sink: { login: (report) => logins.add(report.ip) },
      log: silent,
    });
    const added: string[] = [];
    let udp: RpcClient | undefined;
    let tcp: RpcClient | undefined;
    let pmap: RpcClient | undefined;
    const portmapAddress = server.portmapAddress ?? "";
    const good: GoodSession = {
      open: async () => {
        udp = await RpcClient.open(server.address, { transport: "udp" });
        tcp = await RpcClient.open(server.address, { transport: "tcp" });
        pmap = await RpcClient.open(portmapAddress, { transport: "udp" });
      },
      round: async (i) => {
        if (udp === undefined || tcp === undefined || pmap === undefined)
          throw new Error("not connected");
        for (const [client, k] of [
          [udp, 2 * i],
          [tcp, 2 * i + 1],
        ] as const) {
          const ip = goodIp(k);
          expect(`DRACPROC_ADD ${ip}`, await dracAddWith(client, ip), 0);
          added.push(ip);
        }
        const reply = await pmap.call({
          prog: PMAP_PROG,
          vers: PMAP_VERS,
          proc: PMAPPROC_GETPORT,
          args: encodeMapping({ prog: DRACPROG, vers: DRACVERS, prot: 17, port: 0 }),
        });
        expect(
          "GETPORT",
          reply.kind === "success" ? decodePort(reply.result) : reply.kind,
          server.port,
        );
        return 3;
      },
      finish: async () => {
        await sleep(100); // the sink is told once each reply is on its way
        const missing = added.filter((ip) => !logins.has(ip));
        if (missing.length > 0)
          throw new Error(
            `${missing.length} good logins never reached the sink, e.g. ${missing[0] ?? ""}`,
          );
        return added.length;
      },
      close: async () => {
        udp?.close();
        tcp?.close();
        pmap?.close();
        await Promise.resolve();
      },
    };
    const rpcUdp = await udpHammer(
      "DRAC datagrams",
      server.address,
      Math.floor(n / 2),
      TARGETS.rpc,
      r,
    );
    const pmapUdp = await udpHammer(
      "portmap datagrams",
      portmapAddress,
      Math.floor(n / 4),
      TARGETS.rpc,
      r,
    );
    const record = (b: Buffer): Buffer =>
      r.chance(0.8) ? encodeRecord(b, 1 + r.int(Math.max(1, b.length))) : b;
    const tcpCount = n - rpcUdp.count - pmapUdp.count;
    return {
      // 32 at a time: the RPC server takes 64 TCP connections (rpc-server.ts).
      hammers: [
        rpcUdp,
        pmapUdp,
        tcpHammer("DRAC TCP connections", server.address, tcpCount, TARGETS.rpc, r, 32, record),
      ],
      good,
      counters: () => {
        const { drac, portmap } = server.stats;
        const out: Record<string, number> = {
          logins: server.stats.logins,
          denied: server.stats.denied,
          sinkErrors: server.stats.sinkErrors,
        };
        for (const [prefix, s] of [
          ["drac", drac],
          ["portmap", portmap],
        ] as const) {
          if (s === undefined) continue;
          for (const key of [
            "protocolErrors",
            "rejected",
            "timeouts",
            "udpMessages",
            "tcpMessages",
          ] as const)
            out[`${prefix}.${key}`] = s[key];
          for (const [event, count] of Object.entries(s.events)) out[`${prefix}.${event}`] = count;
        }
        return out;
      },
      open: () => server.stats.drac.connections,
      close: async () => {
        rpcUdp.close();
        pmapUdp.close();
        await server.close();
      },
    };
  },
};

function httpRequest(r: Rng): Buffer {
  const body = r.chance(0.8) ? nextInput(TARGETS.dovecot, r) : TARGETS.dovecot.valid(r);
  if (r.chance(0.15)) return body; // not HTTP at all
  const length = r.chance(0.8)
    ? body.length
    : r.pick([0, body.length + 10, body.length - 1, 99999999]);
  const chunked = r.chance(0.1);
  const head =
    `${r.pick(["POST", "POST", "GET", "PUT", "XYZ"])} ${r.pick(POLICY_TARGETS) || "/"} HTTP/1.1\r\n` +
    "Host: relaylease\r\nContent-Type: application/json\r\n" +
    (chunked ? "Transfer-Encoding: chunked\r\n" : `Content-Length: ${length}\r\n`) +
    (r.chance(0.2) ? "Connection: keep-alive\r\n" : "Connection: close\r\n") +
    "\r\n";
  const payload = chunked
    ? Buffer.concat([
        Buffer.from(`${body.length.toString(16)}\r\n`),
        body,
        Buffer.from("\r\n0\r\n\r\n"),
      ])
    : body;
  let request: Buffer = Buffer.concat([Buffer.from(head, "latin1"), payload]);
  if (r.chance(0.3)) request = r.pick(MUTATIONS)(request, r, TARGETS.dovecot);
  return request;
}

const dovecotScenario: Scenario = {
  name: "dovecot policy (HTTP)",
  setup: async (n, r) => {
    const logins = new Set<string>();
    const server = await startDovecotPolicyServer({
      listen: "127.0.0.1:0",
      sink: { login: (report) => logins.add(report.ip) },
      log: silent,
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const to = hostPort(server.address);
    const sent: string[] = [];
    const post = (ip: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const body = JSON.stringify({
          device_id: "",
          login: "alice",
          protocol: "imap",
          remote: ip,
          success: true,
          policy_reject: false,
          tls: false,
        });
        const req = http.request(
          {
            host: to.host,
            port: to.port,
            path: "/?command=report",
            method: "POST",
            agent,
            headers: {
              "content-type": "application/json",
              "content-length": Buffer.byteLength(body),
            },
          },
          (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => (text += c));
            res.on("end", () => {
              resolve({ status: res.statusCode ?? 0, body: text });
            });
            res.on("error", reject);
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    const good: GoodSession = {
      open: () => Promise.resolve(),
      round: async (i) => {
        const ip = goodIp(i);
        const res = await post(ip);
        expect("status", res.status, 200);
        expect("body", res.body, POLICY_REPLY);
        sent.push(ip);
        return 1;
      },
      finish: async () => {
        await sleep(100);
        const missing = sent.filter((ip) => !logins.has(ip));
        if (missing.length > 0)
          throw new Error(
            `${missing.length} good reports never reached the sink, e.g. ${missing[0] ?? ""}`,
          );
        return sent.length;
      },
      close: () => {
        agent.destroy();
        return Promise.resolve();
      },
    };
    const hammer: Hammer = {
      label: "connections",
      count: n,
      concurrency: 64,
      shoot: () => tcpShot(to, chunks(httpRequest(r), r)),
    };
    return {
      hammers: [hammer],
      good,
      counters: () => {
        const { ignored, ...rest } = server.stats;
        const out: Record<string, number> = { ...rest };
        for (const [reason, count] of Object.entries(ignored)) out[`ignored.${reason}`] = count;
        return out;
      },
      open: () => undefined,
      close: () => server.close(),
    };
  },
};

interface ServerRow {
  name: string;
  sent: string;
  counters: Record<string, number>;
  crashes: number;
  before: number;
  after: number;
  ok: number;
  failed: number;
  failures: string[];
  openAfter: number | undefined;
  seconds: number;
}

async function goodLoop(
  good: GoodSession,
  stop: { done: boolean },
): Promise<{ ok: number; failed: number; failures: string[] }> {
  let ok = 0;
  let failed = 0;
  const failures: string[] = [];
  for (let i = 0; !stop.done; i++) {
    try {
      ok += await withTimeout(good.round(i), 5000, "good session");
    } catch (err) {
      failed++;
      if (failures.length < 3) failures.push(err instanceof Error ? err.message : String(err));
      try {
        await good.close();
        await good.open();
      } catch (reopen) {
        failures.push(`reconnect: ${String(reopen)}`);
        await sleep(100);
      }
    }
  }
  return { ok, failed, failures };
}

async function flood(
  scenario: Scenario,
  n: number,
  seed: number,
  index: number,
): Promise<ServerRow> {
  phase = scenario.name;
  const crashed = crashes.length;
  const r = new Rng(seed * 7919 + index);
  const setup = await scenario.setup(n, r);
  await setup.good.open();
  fullGc();
  const before = heapMB();
  const t0 = performance.now();
  const stop = { done: false };
  const looping = goodLoop(setup.good, stop);
  const sent = await Promise.all(
    setup.hammers.map(
      async (h) =>
        `${(await pool(h.count, h.concurrency, 60_000, (i) => h.shoot(i))).toLocaleString("en")} ${h.label}`,
    ),
  );
  stop.done = true;
  const { ok, failed, failures } = await looping;
  let finished = ok;
  let failedAll = failed;
  try {
    finished += (await setup.good.finish?.()) ?? 0;
  } catch (err) {
    failedAll++;
    failures.push(err instanceof Error ? err.message : String(err));
  }
  const seconds = (performance.now() - t0) / 1000;
  // The good session's connection stays open; every hammer connection must be gone.
  for (let waited = 0; (setup.open() ?? 0) > 1 && waited < 5000; waited += 50) await sleep(50);
  await sleep(100);
  const openAfter = setup.open();
  fullGc();
  const after = heapMB();
  const counters = setup.counters();
  await setup.good.close();
  await setup.close();
  return {
    name: scenario.name,
    sent: sent.join(" + "),
    counters,
    crashes: crashes.length - crashed,
    before,
    after,
    ok: finished,
    failed: failedAll,
    failures,
    openAfter,
    seconds,
  };
}

// ---- report ---------------------------------------------------------------------------------------

function fmt(n: number): string {
  return n.toLocaleString("en");
}

function mb(n: number): string {
  return `${n >= 0 ? "+" : ""}${n.toFixed(1)}`;
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

function codecTable(rows: readonly CodecRow[]): string {
  return table(
    [
      "protocol",
      "inputs fed",
      "unexpected",
      "heap MB before",
      "after",
      "peak",
      "growth",
      "inputs/s",
      "s",
      "errors by type (layer name count)",
    ],
    rows.map((row) => [
      row.name,
      fmt(row.inputs),
      fmt(row.unexpected),
      row.before.toFixed(1),
      row.after.toFixed(1),
      row.peak.toFixed(1),
      mb(row.after - row.before),
      fmt(Math.round(row.inputs / row.seconds)),
      row.seconds.toFixed(1),
      [...row.errors].map(([k, v]) => `${k} ${fmt(v)}`).join("; ") || "none",
    ]),
  );
}

function serverTable(rows: readonly ServerRow[]): string {
  return table(
    [
      "server",
      "crashes",
      "heap growth MB",
      "good ok/failed",
      "open after",
      "s",
      "inputs fed",
      "server-side errors and events",
    ],
    rows.map((row) => [
      row.name,
      fmt(row.crashes),
      mb(row.after - row.before),
      `${fmt(row.ok)}/${fmt(row.failed)}`,
      row.openAfter === undefined ? "-" : String(row.openAfter),
      row.seconds.toFixed(1),
      row.sent,
      Object.entries(row.counters)
        .filter(([, v]) => v !== 0)
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(", "),
    ]),
  );
}

/** FUZZ_ONLY=milter,whoson runs the codecs and servers whose names start with one of those. */
function wanted(name: string): boolean {
  const only = process.env["FUZZ_ONLY"];
  if (only === undefined || only === "") return true;
  return only.split(",").some((prefix) => name.startsWith(prefix.trim()));
}

async function main(): Promise<void> {
  const frames = Number(process.argv[2] ?? 1_000_000);
  const seed = Number(process.env["FUZZ_SEED"] ?? 1);
  const connections = Number(process.env["FUZZ_CONNECTIONS"] ?? 20_000);
  const budgetS = Number(process.env["FUZZ_CODEC_SECONDS"] ?? 45);
  if (!Number.isSafeInteger(frames) || frames < 1)
    throw new Error("usage: node --expose-gc bench/fuzz.ts [frames]");
  if (globalThis.gc === undefined) throw new Error("run with node --expose-gc bench/fuzz.ts");
  // Every rejected input builds a ProtocolError or several; see guard().
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const started = performance.now();
  process.stdout.write(
    `fuzz: ${fmt(frames)} inputs per codec, ${fmt(connections)} per server, FUZZ_SEED=${seed}\n\n`,
  );

  const codecRows: CodecRow[] = [];
  for (const [i, target] of Object.values(TARGETS).entries()) {
    if (!wanted(target.name)) continue;
    phase = `codec ${target.name}`;
    const row = await fuzzCodec(target, frames, budgetS, seed, i);
    codecRows.push(row);
    const cut = row.inputs < frames ? ` (stopped at the ${budgetS} s budget)` : "";
    process.stdout.write(
      `  ${target.name}: ${fmt(row.inputs)} inputs in ${row.seconds.toFixed(1)} s${cut}: ${row.layers}\n`,
    );
  }
  process.stdout.write(`\n${codecTable(codecRows)}\n\n`);
  Error.stackTraceLimit = stackTraceLimit;

  const serverRows: ServerRow[] = [];
  const scenarios = [
    milterScenario,
    policyScenario,
    socketmapScenario,
    whosonScenario,
    dracScenario,
    dovecotScenario,
  ];
  for (const [i, scenario] of scenarios.entries()) {
    if (!wanted(scenario.name)) continue;
    const row = await flood(scenario, connections, seed, i);
    serverRows.push(row);
    process.stdout.write(`  ${scenario.name}: ${row.sent} in ${row.seconds.toFixed(1)} s\n`);
  }
  process.stdout.write(`\n${serverTable(serverRows)}\n\n`);

  const problems = [
    ...codecRows.flatMap((row) => row.samples),
    ...serverRows.flatMap((row) => row.failures.map((f) => `${row.name}: good session: ${f}`)),
    ...crashes,
  ];
  for (const p of problems) process.stdout.write(`${p}\n`);
  const unexpected = codecRows.reduce((n, row) => n + row.unexpected, 0);
  const failed = serverRows.reduce((n, row) => n + row.failed, 0);
  const wall = (performance.now() - started) / 1000;
  process.stdout.write(
    `unexpected throws ${fmt(unexpected)}, crashes ${fmt(crashes.length)}, good-session failures ${fmt(failed)}; wall time ${wall.toFixed(1)} s\n`,
  );
  process.exitCode = unexpected > 0 || crashes.length > 0 || failed > 0 ? 1 : 0;
}

await main().catch((err: unknown) => {
  process.stderr.write(
    `fuzz failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exitCode = 2;
});
