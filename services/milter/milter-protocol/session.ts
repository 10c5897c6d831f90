/**
 * One milter connection as a state machine over commands, without sockets: bytes from the MTA
 * in, reply bytes out (mta-protocols.md sections 1.4-1.8, 2, 3, 7).
 *
 * Negotiation asks only for what the decision needs: CONNECT (the client address) and RCPT (the
 * recipient and its macros); every other step the MTA offers to skip is skipped (NOHELO NOMAIL
 * NOBODY NOHDRS NOEOH NOUNKNOWN NODATA: 0x376 from Postfix 3.7 and Sendmail 8.17). BODYEOB cannot
 * be skipped and gets CONTINUE. With acceptAt "rcpt" CONNECT needs no reply (NR_CONN, 0x1376).
 * Macros arrive even for skipped steps, so `{auth_authen}` still comes with `D M`; with
 * SETSYMLIST offered we also ask for `{rcpt_mailer} {auth_authen}` at SMFIM_ENVRCPT, which
 * replaces Postfix's and Sendmail's default RCPT list (both include `{rcpt_mailer}`). Only
 * offered bits are requested: Sendmail and Postfix drop a milter asking for more.
 *
 * Replies: CONNECT -> ACCEPT for a trusted or leased client (acceptAt "connect"; Postfix then
 * closes the milter connection without QUIT), else CONTINUE. RCPT -> ACCEPT (trusted, leased,
 * authenticated: a per-client verdict, which also ends this message's events), CONTINUE (local
 * recipient), REPLYCODE `550 5.7.1 <rejectText>` (relaying denied), or `451 4.7.1 ...` (fail mode
 * while stale, or a decision that threw). Never ACCEPT for a client that is not authorized.
 *
 * State: the negotiated options; the connection (client address, CONNECT and HELO macros), kept
 * across messages; per message the MAIL and RCPT macros, dropped by ABORT (Postfix sends one
 * between messages and `A A Q` at the end), by BODYEOB, and RCPT macros after each RCPT, so a
 * recipient never inherits another's `{rcpt_mailer}`. QUIT ends the session; QUIT_NC resets it
 * for a new CONNECT on the same connection. Commands before OPTNEG are a ProtocolError.
 *
 * Macro packets are kept as they came (checked as decodeCommand checks them, not split) and read
 * only when a RCPT is decided: a client accepted at CONNECT never needs them. Only the four stages
 * a RCPT reads (C H M R) are kept, so a peer cannot make a session hold a packet per stage byte.
 */
import type { AcceptAt, Decision, RelayRequest } from "../decide.ts";
import { ProtocolError } from "../../../shared/protocol-error.ts";
import * as C from "./constants.ts";
import {
  DEFAULT_MAX_FRAME_LENGTH,
  decodeCommand,
  encodeReply,
  formatReplyCode,
  macroStage,
  macroValue,
  readFrame,
} from "./codec.ts";
import type { MilterCommand, MilterReply, SymList } from "./codec.ts";

export interface MilterOffer {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
}

export interface Negotiated extends MilterOffer {
  readonly symlists: readonly SymList[];
}

export interface MilterSessionOptions {
  /** The relay decision for one question; synchronous (the mirror is in memory). */
  readonly decide: (request: RelayRequest) => Decision;
  /** Must match the decision config's acceptAt: with "rcpt", CONNECT gets no reply (NR_CONN). */
  readonly acceptAt: AcceptAt;
  /** Text of the 550 5.7.1 reply (RELAYLEASE_REJECT_TEXT). */
  readonly rejectText: string;
  readonly tempfailText?: string;
  readonly maxFrameLength?: number;
  /** decide() threw: our bug. The session has already answered the fail-safe reply. */
  readonly onDecisionError?: (err: unknown) => void;
}

export const DEFAULT_TEMPFAIL_TEXT = "Relay check temporarily unavailable, try again later";

/** Steps skipped when offered: everything but CONNECT, RCPT and (unskippable) BODYEOB. */
export const SKIPPED_STEPS =
  C.SMFIP_NOHELO |
  C.SMFIP_NOMAIL |
  C.SMFIP_NOBODY |
  C.SMFIP_NOHDRS |
  C.SMFIP_NOEOH |
  C.SMFIP_NOUNKNOWN |
  C.SMFIP_NODATA;

/** The RCPT-stage macros asked for with SETSYMLIST. */
export const RCPT_MACROS = "{rcpt_mailer} {auth_authen}";

/**
 * The OPTNEG reply to an MTA's offer. Version: min(offer, 6), as libmilter; below 2 is refused.
 * Zero actions or protocol mean the version 1 sets (libmilter engine.c st_optionneg).
 */
export function negotiate(offer: MilterOffer, acceptAt: AcceptAt): Negotiated {
  if (offer.version < C.SMFI_PROT_VERSION_MIN) {
    throw new ProtocolError(`SMFIC_OPTNEG: MTA protocol version ${offer.version} below 2`);
  }
  const actionsOffered = offer.actions === 0 ? C.SMFI_V1_ACTS : offer.actions;
  const stepsOffered = offer.protocol === 0 ? C.SMFI_V1_PROT : offer.protocol;
  const wanted = SKIPPED_STEPS | (acceptAt === "rcpt" ? C.SMFIP_NR_CONN : 0);
  const symlist = (actionsOffered & C.SMFIF_SETSYMLIST) !== 0;
  return {
    version: Math.min(offer.version, C.SMFI_PROT_VERSION),
    actions: symlist ? C.SMFIF_SETSYMLIST : 0,
    protocol: (wanted & stepsOffered) >>> 0,
    symlists: symlist ? [{ stage: C.SMFIM_ENVRCPT, macros: RCPT_MACROS }] : [],
  };
}

/** The no-reply bit of each step that has one (mfdef.h SMFIP_NR_*). */
const NO_REPLY: Partial<Record<MilterCommand["type"], number>> = {
  connect: C.SMFIP_NR_CONN,
  helo: C.SMFIP_NR_HELO,
  mail: C.SMFIP_NR_MAIL,
  rcpt: C.SMFIP_NR_RCPT,
  data: C.SMFIP_NR_DATA,
  unknown: C.SMFIP_NR_UNKN,
  eoh: C.SMFIP_NR_EOH,
  body: C.SMFIP_NR_BODY,
  header: C.SMFIP_NR_HDR,
};

/** Macro stages in SMTP order; a macro packet drops the stages after its own (libmilter). */
const STAGE_ORDER = "CHMRTLNBE";
/** The stages kept: a RCPT looks its macros up in R, then M, H, C (libmilter's order). */
const KEPT_STAGES = 4;
const HELO_STAGE = STAGE_ORDER.indexOf("H");
const MESSAGE_STAGE = STAGE_ORDER.indexOf("M");
const RCPT_STAGE = STAGE_ORDER.indexOf("R");

const CONTINUE: MilterReply = { type: "continue" };
const ACCEPT: MilterReply = { type: "accept" };
const NOTHING = Buffer.alloc(0);

// A session is made per SMTP connection, and making the same replies again for each one showed
// in the role's profile under Postfix: REPLYCODE replies are kept by their text, the OPTNEG reply
// by the MTA's offer (one MTA makes the same offer every time; found by comparing numbers, as a
// string key would be built and hashed per connection), and each reply's bytes with it.
const replyCodes = new Map<string, MilterReply>();
const MAX_CACHED_REPLY_CODES = 16;
interface OptnegReply extends MilterOffer {
  readonly acceptAt: AcceptAt;
  readonly negotiated: Negotiated;
  readonly reply: MilterReply;
}
const optnegReplies: OptnegReply[] = [];
const MAX_CACHED_OPTNEG_REPLIES = 16;
const encodedReplies = new WeakMap<MilterReply, Buffer>();

/** The reply's frame; shared replies are encoded once. */
function encoded(reply: MilterReply): Buffer {
  let bytes = encodedReplies.get(reply);
  if (bytes === undefined) {
    bytes = encodeReply(reply);
    encodedReplies.set(reply, bytes);
  }
  return bytes;
}

function optnegReply(offer: MilterOffer, acceptAt: AcceptAt): OptnegReply {
  for (const known of optnegReplies) {
    if (
      known.version === offer.version &&
      known.actions === offer.actions &&
      known.protocol === offer.protocol &&
      known.acceptAt === acceptAt
    ) {
      return known;
    }
  }
  const negotiated = negotiate(offer, acceptAt);
  const { version, actions, protocol } = offer;
  const reply: MilterReply = { type: "optneg", ...negotiated };
  const known = { version, actions, protocol, acceptAt, negotiated, reply };
  if (optnegReplies.length >= MAX_CACHED_OPTNEG_REPLIES) optnegReplies.length = 0;
  optnegReplies.push(known);
  return known;
}

function replyCode(code: number, enhanced: string, text: string): MilterReply {
  const key = `${code} ${enhanced} ${text}`;
  let reply = replyCodes.get(key);
  if (reply === undefined) {
    reply = { type: "replycode", text: formatReplyCode(code, enhanced, text) };
    if (replyCodes.size >= MAX_CACHED_REPLY_CODES) replyCodes.clear();
    replyCodes.set(key, reply);
  }
  return reply;
}

export class MilterSession {
  readonly #options: MilterSessionOptions;
  readonly #maxFrameLength: number;
  #negotiated: Negotiated | undefined;
  #clientAddress: string | undefined;
  /** The last macro packet (stage byte, pairs) of each kept stage, by its place in STAGE_ORDER. */
  readonly #macros: (Buffer | undefined)[] = [undefined, undefined, undefined, undefined];
  #buffer: Buffer = NOTHING;
  #failed = false;
  #closed = false;
  #decisions = 0;

  constructor(options: MilterSessionOptions) {
    this.#options = options;
    this.#maxFrameLength = options.maxFrameLength ?? DEFAULT_MAX_FRAME_LENGTH;
  }

  /** Made when needed: most sessions are accepted and never use it. */
  #tempfail(): MilterReply {
    return replyCode(451, "4.7.1", this.#options.tempfailText ?? DEFAULT_TEMPFAIL_TEXT);
  }

  get negotiated(): Negotiated | undefined {
    return this.#negotiated;
  }
  /** QUIT received (or the session failed): the caller closes the connection. */
  get closed(): boolean {
    return this.#closed || this.#failed;
  }
  get failed(): boolean {
    return this.#failed;
  }
  /** Bytes of an unfinished frame held for the next chunk. */
  get buffered(): number {
    return this.#buffer.length;
  }
  /** Relay decisions asked so far. */
  get decisions(): number {
    return this.#decisions;
  }

  /**
   * Takes the next bytes from the MTA; returns the replies to every command they complete, in
   * one buffer for one write. After QUIT the rest is ignored.
   * @throws ProtocolError on bad input; the session is then failed and answers nothing more.
   */
  receive(chunk: Buffer): Buffer {
    if (this.closed) return NOTHING;
    try {
      const buf = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      const replies: Buffer[] = [];
      let offset = 0;
      while (!this.#closed) {
        const next = readFrame(buf, offset, this.#maxFrameLength);
        if (next === undefined) break;
        offset = next.end;
        const { frame } = next;
        if (frame.code === C.SMFIC_MACRO) {
          this.#setMacros(frame.data);
          continue; // no reply
        }
        const reply = this.#handle(decodeCommand(frame));
        if (reply !== undefined) replies.push(encoded(reply));
      }
      // Copy an unfinished tail so it does not pin the whole chunk it came in.
      const rest =
        this.#closed || offset === buf.length ? NOTHING : Buffer.from(buf.subarray(offset));
      this.#buffer = rest;
      return replies.length === 1 ? (replies[0] ?? NOTHING) : Buffer.concat(replies);
    } catch (err) {
      this.#failed = true;
      this.#buffer = NOTHING;
      throw err;
    }
  }

  /** Applies one command; returns its reply, or undefined where the protocol has none. */
  #handle(c: MilterCommand): MilterReply | undefined {
    if (c.type === "optneg") {
      const { negotiated, reply } = optnegReply(c, this.#options.acceptAt);
      this.#negotiated = negotiated;
      this.#reset();
      return reply;
    }
    const negotiated = this.#negotiated;
    if (negotiated === undefined) {
      throw new ProtocolError(`${c.type} before SMFIC_OPTNEG`);
    }
    const reply = this.#apply(c);
    const nr = NO_REPLY[c.type];
    return nr !== undefined && (negotiated.protocol & nr) !== 0 ? undefined : reply;
  }

  #apply(c: MilterCommand): MilterReply | undefined {
    switch (c.type) {
      case "macro": // read by receive() without decoding; here for completeness
        return undefined;
      case "connect":
        this.#dropFrom(HELO_STAGE); // keep the `D C` that came just before
        this.#clientAddress = c.family === "4" || c.family === "6" ? c.address : undefined;
        return this.#ask({ clientAddress: this.#clientAddress, stage: "connect" }, CONTINUE);
      case "rcpt":
        return this.#rcpt(c.args[0] ?? "");
      case "abort":
      case "eob":
        this.#dropFrom(MESSAGE_STAGE);
        return c.type === "eob" ? CONTINUE : undefined;
      case "quit":
        this.#closed = true;
        return undefined;
      case "quit-nc":
        this.#reset();
        return undefined;
      default:
        return CONTINUE; // helo, mail, data, header, eoh, body, unknown: nothing to decide
    }
  }

  #rcpt(recipient: string): MilterReply {
    const request: RelayRequest = {
      clientAddress: this.#clientAddress,
      stage: "rcpt",
      recipient,
      rcptMailer: this.#macro("rcpt_mailer"),
      authenticated: this.#macro("auth_authen"),
    };
    this.#macros[RCPT_STAGE] = undefined;
    return this.#ask(request, this.#tempfail());
  }

  /** Decides and maps the verdict; `onError` is the fail-safe reply if decide() throws. */
  #ask(request: RelayRequest, onError: MilterReply): MilterReply {
    this.#decisions++;
    let d: Decision;
    try {
      d = this.#options.decide(request);
    } catch (err) {
      this.#options.onDecisionError?.(err);
      return onError;
    }
    switch (d.verdict) {
      case "accept":
        return ACCEPT;
      case "continue":
        return CONTINUE;
      case "reject":
        return replyCode(550, "5.7.1", this.#options.rejectText);
      case "tempfail":
        return this.#tempfail();
    }
  }

  #setMacros(packet: Buffer): void {
    if (this.#negotiated === undefined) throw new ProtocolError("macro before SMFIC_OPTNEG");
    const order = STAGE_ORDER.indexOf(macroStage(packet));
    if (order < 0) return; // a stage we do not know: nothing reads it
    this.#dropFrom(order + 1);
    // A copy, so that a kept packet does not pin the whole chunk it came in.
    if (order < KEPT_STAGES) this.#macros[order] = Buffer.from(packet);
  }

  /** Forgets the macros of stage `order` and later. */
  #dropFrom(order: number): void {
    for (let i = order; i < KEPT_STAGES; i++) this.#macros[i] = undefined;
  }

  /** A macro as libmilter finds it: the RCPT stage first, then the earlier ones. */
  #macro(name: string): string | undefined {
    for (let i = KEPT_STAGES - 1; i >= 0; i--) {
      const packet = this.#macros[i];
      const value = packet === undefined ? undefined : macroValue(packet.subarray(1), name);
      if (value !== undefined) return value;
    }
    return undefined;
  }

  #reset(): void {
    this.#dropFrom(0);
    this.#clientAddress = undefined;
  }
}
