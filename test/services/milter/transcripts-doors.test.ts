// The golden transcripts (test/services/milter/transcripts/*.txt) replayed through the three
// narrower SMTP-side front doors over real sockets on 127.0.0.1: the Postfix policy service, the
// socketmap service and the whoson service (TCP and UDP), each driven by our own client. The
// servers answer from the transcript's world through the production wiring of milter.ts: a
// TracedDecider over a LeaseLookup of the transcript's leases (read at the transcript's clock) and
// its DecisionConfig, then policyAction() or leaseAnswer().
//
// Each door answers a narrower question than the milter, so each expected verdict line is mapped
// to what that door must answer:
//
// Policy door (check_policy_service; `connect` is a request with protocol_state=CONNECT, `rcpt`
// one with protocol_state=RCPT, recipient=<it, without angle brackets>, sasl_username=<auth user
// or "">; a client without an address, milter family U or L, is client_address=unknown):
//   accept <any>             -> OK
//   tempfail stale           -> DEFER_IF_REJECT 4.7.1 ... (POLICY_DEFER_ACTION)
//   continue <any>           -> DUNNO
//   reject <any>             -> DUNNO (Postfix's own reject_unauth_destination rejects)
//   skipped: `rcpt ... mailer=X` expected `continue local-recipient` where X is not a remote
//     mailer and the domain is not in local-domains: the recipient is local only by
//     {rcpt_mailer}, which a policy request does not carry (Postfix decides locality itself).
//
// Socketmap door (`drac <client>`) and whoson door (`QUERY <client>`) are asked about the client
// alone, at `connect` and again at each `rcpt` (Postfix check_client_access in
// smtpd_relay_restrictions and Exim's whoson lookup in the RCPT ACL ask per recipient); the key
// is the address as the transcript writes it, `unknown` for families U and L:
//   reason leased (accept or continue)              -> leased   (OK <epoch s> / +<user>)
//   reason stale (continue, reject or tempfail)     -> stale    (TEMP ... / *...)
//   reason trusted, not-leased, relay-denied, no-address
//                                                   -> not-leased (NOTFOUND / -Not Logged in):
//     trust is the MTA's mynetworks, not a lease; a key that is not an address is never leased.
//   skipped: a `rcpt` expecting reason authenticated (SMTP AUTH is not part of a client lookup)
//     or local-recipient (a verdict on the recipient; it does not say whether the client is
//     stale or simply not leased).
//
// A skipped step shows in the replayed transcript as `(skipped: why)  # not asked`.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import type { ClientAddress } from "../../../shared/address.ts";
import { isLocalDomain, recipientDomain } from "../../../services/milter/decide.ts";
import {
  POLICY_DEFER_ACTION,
  TracedDecider,
  leaseAnswer,
  policyRequest,
  policyAction,
} from "../../../services/milter/milter.ts";
import type { LeaseLookup } from "../../../services/milter/mirror.ts";
import { startPolicyServer, type PolicyServer } from "../../../services/milter/policy/server.ts";
import type { SocketmapReply } from "../../../services/milter/socketmap/codec.ts";
import {
  startSocketmapServer,
  type SocketmapServer,
} from "../../../services/milter/socketmap/server.ts";
import type { LeaseAnswer } from "../../../services/milter/socketmap/session.ts";
import type { WhosonReply } from "../../../services/milter/whoson/codec.ts";
import { startWhosonServer, type WhosonServer } from "../../../services/milter/whoson/server.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../../support/policy-client.ts";
import { SocketmapClient } from "../../support/socketmap-client.ts";
import { loadTranscripts, replay } from "../../support/transcript.ts";
import type { Expectation, FrontDoor, Query, World } from "../../support/transcript.ts";
import { WhosonTcpClient, WhosonUdpClient } from "../../support/whoson-client.ts";

const TRANSCRIPTS = loadTranscripts(join(import.meta.dirname, "transcripts"));
const silent = pino({ level: "silent" });
/** Postfix `socketmap:inet:host:port:drac`, Sendmail `K drac socket ...`. */
const MAP_NAME = "drac";

/**
 * The decision as startMilter wires it, for the world as it is now: a TracedDecider over the
 * transcript's leases read at the transcript's clock (decide() reads the clock only for lease
 * lookups), its configuration, and its mirror state.
 */
function deciderFor(world: World): TracedDecider {
  const leases: LeaseLookup = { lookup: (key) => world.lookup.lookup(key, world.now) };
  return new TracedDecider(leases, world.config(), () => world.stale);
}

/** The `lookup` startMilter hands to the socketmap and whoson servers. */
function clientLookup(door: string, world: () => World): (a: ClientAddress) => LeaseAnswer {
  return (address) =>
    leaseAnswer(
      deciderFor(world()).decide(door, { clientAddress: address.text, stage: "connect" }),
    );
}

/** The client as the MTA writes it: its address, or `unknown` for families U and L. */
function clientKey(world: World): string {
  const s = world.session;
  if (s === undefined) throw new Error("question before connect");
  return s.family === "U" || s.family === "L" ? "unknown" : s.address;
}

function bare(recipient: string): string {
  return recipient.startsWith("<") && recipient.endsWith(">") ? recipient.slice(1, -1) : recipient;
}

/** Holds the world of the transcript being replayed, for the server's callbacks. */
abstract class WorldDoor implements FrontDoor {
  abstract readonly name: string;
  #world: World | undefined;

  get world(): World {
    if (this.#world === undefined) throw new Error(`${this.name}: asked outside a transcript`);
    return this.#world;
  }

  begin(world: World): Promise<void> {
    this.#world = world;
    return this.open();
  }

  async end(): Promise<void> {
    await this.close();
    this.#world = undefined;
  }

  /** Why this door cannot express the step, or undefined if it can. */
  abstract skip(e: Expectation, query: Query): string | undefined;
  abstract answer(e: Expectation, query: Query): string;
  abstract query(query: Query): Promise<string>;
  /** Starts and stops the door's server (once for all transcripts). */
  abstract start(): Promise<void>;
  abstract stop(): Promise<void>;
  /** Opens and closes the MTA's connection (once per transcript). */
  abstract open(): Promise<void>;
  abstract close(): Promise<void>;

  expected(e: Expectation, query: Query): string {
    const why = this.skip(e, query);
    return why === undefined ? this.answer(e, query) : `(skipped: ${why})`;
  }

  /** Every answer this door gave, to check that the replay reached each kind. */
  readonly seen = new Set<string>();

  async ask(_world: World, query: Query, e: Expectation): Promise<string | undefined> {
    if (this.skip(e, query) !== undefined) return undefined;
    const answer = await this.query(query);
    this.seen.add(answer);
    return answer;
  }
}

class PolicyDoor extends WorldDoor {
  readonly name = "policy";
  server: PolicyServer | undefined;
  #client: PolicyClient | undefined;

  async start(): Promise<void> {
    this.server = await startPolicyServer({
      listen: "127.0.0.1:0",
      answer: (request) =>
        policyAction(deciderFor(this.world).decide("policy", policyRequest(request))),
      log: silent,
    });
  }

  async stop(): Promise<void> {
    await this.server?.close();
  }

  async open(): Promise<void> {
    this.#client = await PolicyClient.connect(this.server?.address ?? "");
  }

  async close(): Promise<void> {
    await this.#client?.close();
  }

  skip(e: Expectation, query: Query): string | undefined {
    if (query.kind !== "rcpt" || e.reason !== "local-recipient" || query.mailer === undefined) {
      return undefined;
    }
    const domain = recipientDomain(query.recipient);
    const byDomain = domain !== undefined && isLocalDomain(domain, this.world.localDomains);
    const remoteMailer = this.world.remoteMailers.has(query.mailer.toLowerCase());
    if (byDomain || remoteMailer) return undefined;
    return "local only by {rcpt_mailer}, which a policy request does not carry";
  }

  answer(e: Expectation): string {
    if (e.verdict === "accept") return "OK";
    return e.verdict === "tempfail" ? POLICY_DEFER_ACTION : "DUNNO";
  }

  query(query: Query): Promise<string> {
    const client = this.#client;
    if (client === undefined) throw new Error("policy: no connection");
    const rcpt = query.kind === "rcpt";
    return client.query({
      ...POSTFIX_RCPT_REQUEST,
      protocol_state: rcpt ? "RCPT" : "CONNECT",
      client_address: clientKey(this.world),
      sender: rcpt ? "a@example.org" : "",
      recipient: rcpt ? bare(query.recipient) : "",
      sasl_method: this.world.session?.authenticated === undefined ? "" : "PLAIN",
      sasl_username: this.world.session?.authenticated ?? "",
    });
  }
}

/** The client-only question shared by socketmap and whoson. */
abstract class ClientDoor extends WorldDoor {
  skip(e: Expectation, query: Query): string | undefined {
    if (query.kind !== "rcpt") return undefined;
    if (e.reason === "authenticated") return "SMTP AUTH is not part of a client lookup";
    if (e.reason === "local-recipient") return "a verdict on the recipient, not the client";
    return undefined;
  }

  answer(e: Expectation): string {
    if (e.reason === "leased") return "leased";
    return e.reason === "stale" ? "stale" : "not-leased";
  }

  /** An OK value must be the lease's expiry in whole epoch seconds, in the transcript's future. */
  protected expiry(value: string): string {
    if (!/^[1-9]\d*$/.test(value)) return `leased with a bad value ${JSON.stringify(value)}`;
    return Number(value) * 1000 > this.world.now - 1000 ? "leased" : `leased until ${value}`;
  }
}

class SocketmapDoor extends ClientDoor {
  readonly name = "socketmap";
  server: SocketmapServer | undefined;
  #client: SocketmapClient | undefined;

  async start(): Promise<void> {
    this.server = await startSocketmapServer({
      listen: "127.0.0.1:0",
      lookup: clientLookup("socketmap", () => this.world),
      mapNames: [MAP_NAME],
      log: silent,
    });
  }

  async stop(): Promise<void> {
    await this.server?.close();
  }

  async open(): Promise<void> {
    this.#client = await SocketmapClient.connect(this.server?.address ?? "");
  }

  async close(): Promise<void> {
    await this.#client?.close();
  }

  async query(): Promise<string> {
    const client = this.#client;
    if (client === undefined) throw new Error("socketmap: no connection");
    return this.#read(await client.lookup(MAP_NAME, clientKey(this.world)));
  }

  #read(reply: SocketmapReply): string {
    switch (reply.status) {
      case "OK":
        return this.expiry(reply.value);
      case "NOTFOUND":
        return "not-leased";
      case "TEMP":
        return "stale";
      default:
        return `${reply.status} ${reply.reason}`;
    }
  }
}

class WhosonDoor extends ClientDoor {
  readonly name: string;
  readonly #udp: boolean;
  server: WhosonServer | undefined;
  #client: WhosonTcpClient | WhosonUdpClient | undefined;

  constructor(udp: boolean) {
    super();
    this.#udp = udp;
    this.name = udp ? "whoson udp" : "whoson tcp";
  }

  async start(): Promise<void> {
    this.server = await startWhosonServer({
      listen: "127.0.0.1:0",
      lookup: clientLookup("whoson", () => this.world),
      udp: this.#udp,
      log: silent,
    });
  }

  async stop(): Promise<void> {
    await this.server?.close();
  }

  async open(): Promise<void> {
    const server = this.server;
    if (server === undefined) throw new Error("whoson: not started");
    this.#client = this.#udp
      ? await WhosonUdpClient.open(server.udpAddress ?? "")
      : await WhosonTcpClient.connect(server.address);
  }

  async close(): Promise<void> {
    await this.#client?.close();
  }

  async query(): Promise<string> {
    const client = this.#client;
    if (client === undefined) throw new Error("whoson: no connection");
    return this.#read(await client.query(clientKey(this.world)));
  }

  #read(reply: WhosonReply): string {
    switch (reply.status) {
      case "+":
        // The transcripts' leases carry no user: `+` and an empty text.
        return reply.text === "" ? "leased" : `leased by ${JSON.stringify(reply.text)}`;
      case "-":
        return "not-leased";
      case "*":
        return reply.text.includes("stale") ? "stale" : `* ${reply.text}`;
    }
  }
}

function started<T>(server: T | undefined): T {
  if (server === undefined) throw new Error("server not started");
  return server;
}

const policy = new PolicyDoor();
const socketmap = new SocketmapDoor();
const whosonTcp = new WhosonDoor(false);
const whosonUdp = new WhosonDoor(true);
const DOORS = [policy, socketmap, whosonTcp, whosonUdp];

describe("golden transcripts through the policy, socketmap and whoson doors", () => {
  before(async () => {
    await Promise.all(DOORS.map((door) => door.start()));
  });

  after(async () => {
    await Promise.all(DOORS.map((door) => door.stop()));
  });

  for (const door of DOORS) {
    describe(door.name, () => {
      for (const t of TRANSCRIPTS) {
        it(t.name, async (ctx) => {
          const { expected, actual, asked } = await replay(t, door);
          assert.equal(actual, expected);
          assert.ok(asked > 0, "the door is asked something");
          const lines = expected.split("\n");
          for (const [i, line] of lines.entries()) {
            if (line.startsWith("(skipped: ")) ctx.diagnostic(`${lines[i - 1] ?? ""}  ${line}`);
          }
        });
      }
    });
  }

  it("reached every answer of each door", () => {
    assert.deepEqual([...policy.seen].sort(), ["DUNNO", "OK", POLICY_DEFER_ACTION].sort());
    for (const door of [socketmap, whosonTcp, whosonUdp]) {
      assert.deepEqual([...door.seen].sort(), ["leased", "not-leased", "stale"], door.name);
    }
  });

  it("answered without a protocol error or a failed lookup", () => {
    const p = started(policy.server).stats;
    assert.deepEqual([p.protocolErrors, p.answerErrors], [0, 0]);
    const m = started(socketmap.server).stats;
    assert.deepEqual([m.protocolErrors, m.lookupErrors, m.malformed], [0, 0, 0]);
    for (const door of [whosonTcp, whosonUdp]) {
      const w = started(door.server).stats;
      assert.deepEqual([w.protocolErrors, w.lookupErrors], [0, 0], door.name);
    }
  });
});
