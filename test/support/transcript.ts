/**
 * Golden transcripts of relay decisions, Postfix-style (STYLE.md "Tests"), and a runner that
 * replays them through any front door.
 *
 * A transcript is lines of `>>> directive args`, each question followed by the expected verdict
 * line (`accept leased`, `reject relay-denied`, ...); `#` starts a comment. State directives:
 *   lease <address> <duration>   a live lease from now on (`2001:db8:1:2::/64` leases a /64)
 *   revoke <address>             removes it
 *   wait <duration>              moves the clock on
 *   trusted <networks>           sets RELAYLEASE_TRUSTED_NETWORKS (same parser)
 *   local-domains <domains>      sets RELAYLEASE_LOCAL_DOMAINS
 *   remote-mailers <mailers>     sets RELAYLEASE_REMOTE_MAILERS
 *   fail-mode <mode>, accept-at <stage>
 *   stale / fresh                the mirror's state
 *   auth <user>                  the current SMTP session authenticated as <user>
 * Questions (each needs a verdict line):
 *   connect <address>            a new SMTP session; `unknown` is milter family U, `unix:<path>` L
 *   rcpt <recipient> [mailer=X]  a recipient of the current session; X is `{rcpt_mailer}`
 *
 * A FrontDoor answers a question in its own protocol and says how an expected verdict looks
 * there; replay() renders the transcript with the door's answers next to the expected ones, so a
 * failure reads as a diff of two transcripts.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { leaseKey, parseAddress, type Network } from "../../shared/address.ts";
import { parseDuration } from "../../shared/config.ts";
import type { Lease } from "../../shared/lease.ts";
import { DEFAULT_REMOTE_MAILERS } from "../../services/milter/decide.ts";
import type {
  AcceptAt,
  DecisionConfig,
  FailMode,
  Reason,
  RelayRequest,
  Verdict,
} from "../../services/milter/decide.ts";
import type { LeaseLookup } from "../../services/milter/mirror.ts";
import {
  milterSettings,
  parseLocalDomains,
  parseRemoteMailers,
} from "../../services/milter/settings.ts";

export type Family = "4" | "6" | "L" | "U";

export type Query =
  | { readonly kind: "connect"; readonly family: Family; readonly address: string }
  | { readonly kind: "rcpt"; readonly recipient: string; readonly mailer: string | undefined };

export interface Expectation {
  readonly verdict: Verdict;
  readonly reason: Reason;
}

export type Step =
  | {
      readonly kind: "state";
      readonly line: number;
      readonly text: string;
      readonly apply: (w: World) => void;
    }
  | {
      readonly kind: "ask";
      readonly line: number;
      readonly text: string;
      readonly query: Query;
      readonly expect: Expectation;
    };

export interface Transcript {
  readonly name: string;
  readonly steps: readonly Step[];
}

/** The SMTP session a transcript is in: what the MTA knows about the client. */
export interface ClientSession {
  readonly family: Family;
  /** As the MTA writes it; "" for families U and L. */
  readonly address: string;
  authenticated: string | undefined;
}

const START = Date.UTC(2026, 0, 1, 12);

/** Everything a transcript has set so far: leases, clock, configuration, the current session. */
export class World {
  now = START;
  readonly leases = new Map<string, Lease>();
  trustedNetworks: Network[] = [];
  localDomains: ReadonlySet<string> = new Set();
  remoteMailers: ReadonlySet<string> = new Set(DEFAULT_REMOTE_MAILERS);
  failMode: FailMode = "tempfail";
  acceptAt: AcceptAt = "connect";
  stale = false;
  session: ClientSession | undefined;

  readonly lookup: LeaseLookup = {
    lookup: (key, now) => {
      const lease = this.leases.get(key);
      return lease !== undefined && lease.expiresAt > now ? lease : undefined;
    },
  };

  config(): DecisionConfig {
    const { trustedNetworks, localDomains, remoteMailers, failMode, acceptAt, stale } = this;
    return { trustedNetworks, localDomains, remoteMailers, failMode, acceptAt, stale };
  }
}

/** The RelayRequest an MTA's question amounts to, for doors that call decide() in process. */
export function requestOf(world: World, query: Query): RelayRequest {
  const s = world.session;
  const clientAddress = s === undefined || s.address === "" ? undefined : s.address;
  if (query.kind === "connect") return { clientAddress, stage: "connect" };
  return {
    clientAddress,
    stage: "rcpt",
    recipient: query.recipient,
    rcptMailer: query.mailer,
    authenticated: s?.authenticated,
  };
}

export interface FrontDoor {
  readonly name: string;
  /** How the expected verdict reads at this door (e.g. "OK", "accept", "reject relay-denied"). */
  expected(e: Expectation, query: Query): string;
  /**
   * This door's answer, normalised like expected(); undefined if the MTA would not ask it, or the
   * door cannot express the question (`expect` lets a door tell which steps those are).
   */
  ask(
    world: World,
    query: Query,
    expect: Expectation,
  ): string | undefined | Promise<string | undefined>;
  /** Called before and after each transcript (open and close connections, servers...). */
  begin?(world: World): void | Promise<void>;
  end?(): void | Promise<void>;
}

/** The transcript twice, with the expected and with the door's answers: assert them equal. */
export async function replay(
  t: Transcript,
  door: FrontDoor,
): Promise<{ expected: string; actual: string; asked: number }> {
  const world = new World();
  const expected: string[] = [];
  const actual: string[] = [];
  let asked = 0;
  await door.begin?.(world);
  try {
    for (const step of t.steps) {
      expected.push(`>>> ${step.text}`);
      actual.push(`>>> ${step.text}`);
      if (step.kind === "state") {
        step.apply(world);
        continue;
      }
      if (step.query.kind === "connect") world.session = sessionOf(step.query);
      const want = door.expected(step.expect, step.query);
      const got = await door.ask(world, step.query, step.expect);
      if (got !== undefined) asked++;
      expected.push(got === undefined ? `${want}  # not asked` : want);
      actual.push(got === undefined ? `${want}  # not asked` : got);
    }
  } finally {
    await door.end?.();
  }
  return { expected: expected.join("\n"), actual: actual.join("\n"), asked };
}

function sessionOf(q: Extract<Query, { kind: "connect" }>): ClientSession {
  return { family: q.family, address: q.address, authenticated: undefined };
}

// ---- parsing ----------------------------------------------------------------------------------

const VERDICTS: readonly Verdict[] = ["accept", "continue", "reject", "tempfail"];
const REASONS: readonly Reason[] = [
  "trusted",
  "leased",
  "authenticated",
  "local-recipient",
  "not-leased",
  "no-address",
  "relay-denied",
  "stale",
];

export function loadTranscripts(dir: string): Transcript[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort()
    .map((f) => parseTranscript(readFileSync(join(dir, f), "utf8"), f));
}

export function parseTranscript(text: string, name: string): Transcript {
  const steps: Step[] = [];
  let pending: { line: number; text: string; query: Query } | undefined;
  let connected = false;
  for (const [i, raw] of text.split("\n").entries()) {
    const line = i + 1;
    const content = raw.trim();
    if (content === "" || content.startsWith("#")) continue;
    const fail = (why: string): never => {
      throw new Error(`${name}:${line}: ${why}: ${JSON.stringify(content)}`);
    };
    if (pending !== undefined) {
      if (content.startsWith(">>>")) fail(`no verdict line after "${pending.text}"`);
      steps.push({ kind: "ask", ...pending, expect: parseExpectation(content, fail) });
      pending = undefined;
      continue;
    }
    if (!content.startsWith(">>> ")) fail("expected a >>> directive");
    const directive = content.slice(4).trim();
    const [word = "", ...args] = directive.split(/\s+/);
    if (word === "connect" || word === "rcpt") {
      if (word === "rcpt" && !connected) fail("rcpt before any connect");
      connected = true;
      pending = { line, text: directive, query: parseQuery(word, args, fail) };
      continue;
    }
    steps.push({ kind: "state", line, text: directive, apply: parseState(word, args, fail) });
  }
  if (pending !== undefined) throw new Error(`${name}: no verdict line after "${pending.text}"`);
  return { name, steps };
}

function parseExpectation(content: string, fail: (why: string) => never): Expectation {
  const [verdict, reason, ...rest] = content.split(/\s+/);
  const v = VERDICTS.find((x) => x === verdict);
  const r = REASONS.find((x) => x === reason);
  if (v === undefined || r === undefined || rest.length > 0) fail("expected '<verdict> <reason>'");
  return { verdict: v, reason: r };
}

function parseQuery(word: string, args: string[], fail: (why: string) => never): Query {
  if (word === "connect") {
    const [address] = args;
    if (address === undefined || args.length !== 1) return fail("connect takes one address");
    if (address === "unknown") return { kind: "connect", family: "U", address: "" };
    if (address.startsWith("unix:"))
      return { kind: "connect", family: "L", address: address.slice(5) };
    return { kind: "connect", family: address.includes(":") ? "6" : "4", address };
  }
  const [recipient, option, ...rest] = args;
  if (recipient === undefined || rest.length > 0) return fail("rcpt takes a recipient [mailer=X]");
  if (option !== undefined && !option.startsWith("mailer=")) return fail("unknown rcpt option");
  return { kind: "rcpt", recipient, mailer: option?.slice("mailer=".length) };
}

function parseState(
  word: string,
  args: string[],
  fail: (why: string) => never,
): (w: World) => void {
  const rest = args.join(" ");
  const parse = <T>(p: (raw: string) => T): T => {
    try {
      return p(rest);
    } catch (err) {
      return fail(err instanceof Error ? err.message : String(err));
    }
  };
  switch (word) {
    case "lease": {
      const [address = "", ttl = ""] = args;
      const key = parse(() => leaseKeyOf(address));
      const ttlMs = parse(() => parseDuration(ttl));
      return (w) => w.leases.set(key, leaseOf(address, w.now, ttlMs));
    }
    case "revoke": {
      const key = parse(() => leaseKeyOf(args[0] ?? ""));
      return (w) => w.leases.delete(key);
    }
    case "wait": {
      const ms = parse(parseDuration);
      return (w) => (w.now += ms);
    }
    case "trusted": {
      const networks = parse(milterSettings.trustedNetworks.parse);
      return (w) => (w.trustedNetworks = networks);
    }
    case "local-domains": {
      const domains = parse(parseLocalDomains);
      return (w) => (w.localDomains = domains);
    }
    case "remote-mailers": {
      const mailers = parse(parseRemoteMailers);
      return (w) => (w.remoteMailers = mailers);
    }
    case "fail-mode": {
      const mode = parse(milterSettings.failMode.parse);
      return (w) => (w.failMode = mode);
    }
    case "accept-at": {
      const at = parse(milterSettings.acceptAt.parse);
      return (w) => (w.acceptAt = at);
    }
    case "stale":
    case "fresh":
      if (args.length > 0) fail(`${word} takes no arguments`);
      return (w) => (w.stale = word === "stale");
    case "auth": {
      const user = args[0];
      if (user === undefined || args.length > 1) return fail("auth takes one user name");
      return (w) => {
        if (w.session === undefined) throw new Error("auth before connect");
        w.session.authenticated = user;
      };
    }
    default:
      return fail(`unknown directive "${word}"`);
  }
}

/** `203.0.113.5`, `2001:db8::1`, or a /64 prefix `2001:db8:1:2::/64`. */
function leaseKeyOf(address: string): string {
  if (address.endsWith("/64")) return leaseKey(parseAddress(address.slice(0, -3)), 64);
  return leaseKey(parseAddress(address));
}

function leaseOf(ip: string, now: number, ttlMs: number): Lease {
  return {
    ip,
    service: "imap",
    source: "transcript",
    watcher: "test",
    loginAt: now,
    expiresAt: now + ttlMs,
    event: `transcript-${ip}`,
  };
}
