import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { DEFAULT_DECISION_CONFIG, decide } from "../../../../services/milter/decide.ts";
import type { AcceptAt, Decision, RelayRequest } from "../../../../services/milter/decide.ts";
import {
  decodeReplies,
  encodeCommand,
  encodeReply,
} from "../../../../services/milter/milter-protocol/codec.ts";
import type {
  MilterCommand,
  MilterReply,
} from "../../../../services/milter/milter-protocol/codec.ts";
import * as C from "../../../../services/milter/milter-protocol/constants.ts";
import {
  MilterSession,
  RCPT_MACROS,
  negotiate,
} from "../../../../services/milter/milter-protocol/session.ts";
import type { MilterOffer } from "../../../../services/milter/milter-protocol/session.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { POSTFIX_OFFER, V2_OFFER, replyVerdict } from "../../../support/milter-client.ts";
import { loadTranscripts, replay } from "../../../support/transcript.ts";
import type { Expectation, FrontDoor, Query, World } from "../../../support/transcript.ts";

const REJECT_TEXT = "Relaying denied";
const LEASED = "203.0.113.5";

/** Stands in for the decision: LEASED is leased, `alice` authenticated, mailer local is local. */
function fakeDecide(r: RelayRequest): Decision {
  const lease = {
    ip: LEASED,
    service: "imap",
    source: "t",
    watcher: "w",
    loginAt: 0,
    expiresAt: 1,
    event: "e",
  };
  if (r.clientAddress === LEASED) return { verdict: "accept", reason: "leased", lease };
  if (r.stage !== "rcpt") return { verdict: "continue", reason: "not-leased" };
  if (r.authenticated === "alice") return { verdict: "accept", reason: "authenticated" };
  if (r.rcptMailer === "local") return { verdict: "continue", reason: "local-recipient" };
  return { verdict: "reject", reason: "relay-denied" };
}

function session(acceptAt: AcceptAt = "connect", decideFn = fakeDecide) {
  const asked: RelayRequest[] = [];
  const s = new MilterSession({
    decide: (r) => {
      asked.push(r);
      return decideFn(r);
    },
    acceptAt,
    rejectText: REJECT_TEXT,
  });
  return { s, asked };
}

/** Commands in one chunk; the replies that came back. */
function feed(s: MilterSession, ...commands: MilterCommand[]): MilterReply[] {
  const out = s.receive(Buffer.concat(commands.map(encodeCommand)));
  const { replies, consumed } = decodeReplies(out);
  assert.equal(consumed, out.length, "whole replies only");
  return replies;
}

const optneg = (o: MilterOffer = POSTFIX_OFFER): MilterCommand => ({ type: "optneg", ...o });
const macro = (stage: string, m: Record<string, string> = {}): MilterCommand => ({
  type: "macro",
  stage,
  macros: Object.entries(m),
});
const connect4 = (address: string): MilterCommand => ({
  type: "connect",
  hostname: "client.example",
  family: "4",
  port: 40000,
  address,
});
const rcpt = (to: string): MilterCommand => ({ type: "rcpt", args: [`<${to}>`] });
const ABORT: MilterCommand = { type: "abort" };
const QUIT: MilterCommand = { type: "quit" };
const EOB: MilterCommand = { type: "eob", chunk: Buffer.alloc(0) };
const REJECTED: MilterReply = { type: "replycode", text: `550 5.7.1 ${REJECT_TEXT}` };
const CONT: MilterReply = { type: "continue" };
const ACC: MilterReply = { type: "accept" };

describe("milter session: negotiation", () => {
  const envrcpt = [{ stage: C.SMFIM_ENVRCPT, macros: RCPT_MACROS }];
  const cases: {
    name: string;
    offer: MilterOffer;
    acceptAt: AcceptAt;
    want: ReturnType<typeof negotiate>;
  }[] = [
    {
      name: "Postfix 3.7 / Sendmail 8.17 (v6, all offered), accept at connect",
      offer: POSTFIX_OFFER,
      acceptAt: "connect",
      want: { version: 6, actions: C.SMFIF_SETSYMLIST, protocol: 0x376, symlists: envrcpt },
    },
    {
      name: "v6, accept per recipient: CONNECT needs no reply",
      offer: POSTFIX_OFFER,
      acceptAt: "rcpt",
      want: { version: 6, actions: C.SMFIF_SETSYMLIST, protocol: 0x1376, symlists: envrcpt },
    },
    {
      name: "Postfix milter_protocol = 2: no SETSYMLIST, no NR bits, no NODATA/NOUNKNOWN",
      offer: V2_OFFER,
      acceptAt: "rcpt",
      want: { version: 2, actions: 0, protocol: 0x76, symlists: [] },
    },
    {
      name: "zero actions and protocol mean the version 1 sets",
      offer: { version: 2, actions: 0, protocol: 0 },
      acceptAt: "connect",
      want: { version: 2, actions: 0, protocol: 0x36, symlists: [] },
    },
    {
      name: "Sendmail with MDS bits offered: not asked for",
      offer: { version: 6, actions: 0x1ff, protocol: 0x1fffff | 0x30000000 },
      acceptAt: "connect",
      want: { version: 6, actions: C.SMFIF_SETSYMLIST, protocol: 0x376, symlists: envrcpt },
    },
    {
      name: "v6 without SETSYMLIST or NOMAIL offered: only what is offered",
      offer: { version: 6, actions: 0xff, protocol: 0x1fffff & ~C.SMFIP_NOMAIL },
      acceptAt: "connect",
      want: { version: 6, actions: 0, protocol: 0x372, symlists: [] },
    },
    {
      name: "a future version 7 gets 6",
      offer: { version: 7, actions: 0x1ff, protocol: 0x1fffff },
      acceptAt: "connect",
      want: { version: 6, actions: C.SMFIF_SETSYMLIST, protocol: 0x376, symlists: envrcpt },
    },
    {
      name: "version 4 gets 4",
      offer: { version: 4, actions: 0x1ff, protocol: 0x3ff },
      acceptAt: "connect",
      want: { version: 4, actions: C.SMFIF_SETSYMLIST, protocol: 0x376, symlists: envrcpt },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = negotiate(c.offer, c.acceptAt);
      assert.deepEqual(got, c.want);
      assert.equal(
        got.actions & ~(c.offer.actions || C.SMFI_V1_ACTS),
        0,
        "actions within the offer",
      );
      assert.equal(
        got.protocol & ~(c.offer.protocol || C.SMFI_V1_PROT),
        0,
        "steps within the offer",
      );
    });
  }

  it("refuses version 1", () => {
    assert.throws(
      () => negotiate({ version: 1, actions: 0, protocol: 0 }, "connect"),
      ProtocolError,
    );
  });

  it("answers OPTNEG with the reference's reply bytes (v6, 0x1376, ENVRCPT list)", () => {
    const { s } = session("rcpt");
    const out = s.receive(encodeCommand(optneg()));
    const want = Buffer.concat([
      Buffer.from("0000002d4f00000006000001000000137600000003", "hex"),
      Buffer.from("{rcpt_mailer} {auth_authen}\0"),
    ]);
    assert.deepEqual(out, want);
  });

  it("refuses anything before OPTNEG", () => {
    const { s } = session();
    assert.throws(() => s.receive(encodeCommand(connect4("1.2.3.4"))), /before SMFIC_OPTNEG/);
    assert.equal(s.failed, true);
    assert.deepEqual(
      s.receive(encodeCommand(optneg())),
      Buffer.alloc(0),
      "a failed session is deaf",
    );
  });
});

describe("milter session: CONNECT per family", () => {
  const cases: { name: string; command: MilterCommand; address: string | undefined }[] = [
    { name: "family 4", command: connect4("127.0.0.1"), address: "127.0.0.1" },
    {
      name: "family 6 (Postfix)",
      command: { type: "connect", hostname: "h", family: "6", port: 25, address: "2001:db8::1" },
      address: "2001:db8::1",
    },
    {
      name: "family 6 (Sendmail IPV6_FULL)",
      command: {
        type: "connect",
        hostname: "h",
        family: "6",
        port: 25,
        address: "IPv6:2001:db8:0:0:0:0:0:1",
      },
      address: "IPv6:2001:db8:0:0:0:0:0:1",
    },
    {
      name: "family L: a unix socket client has no address",
      command: {
        type: "connect",
        hostname: "localhost",
        family: "L",
        port: 0,
        address: "/run/s.sock",
      },
      address: undefined,
    },
    {
      name: "family U: unknown",
      command: { type: "connect", hostname: "localhost", family: "U" },
      address: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const { s, asked } = session();
      feed(s, optneg());
      assert.deepEqual(feed(s, macro("C", { j: "mx" }), c.command), [CONT]);
      assert.deepEqual(asked, [{ clientAddress: c.address, stage: "connect" }]);
      assert.deepEqual(
        feed(s, macro("R", { "{rcpt_mailer}": "esmtp" }), rcpt("a@remote.example")),
        [REJECTED],
      );
      assert.equal(asked[1]?.clientAddress, c.address);
    });
  }

  it("accepts a leased client at CONNECT (Postfix then closes without QUIT)", () => {
    const { s } = session("connect");
    feed(s, optneg());
    assert.deepEqual(feed(s, macro("C"), connect4(LEASED)), [ACC]);
  });

  it("with accept per recipient, CONNECT gets no reply (NR_CONN) and RCPT decides", () => {
    const { s, asked } = session("rcpt");
    feed(s, optneg());
    assert.deepEqual(feed(s, macro("C"), connect4(LEASED)), []);
    assert.equal(asked.length, 1);
    assert.deepEqual(feed(s, macro("R", { "{rcpt_mailer}": "esmtp" }), rcpt("a@remote.example")), [
      ACC,
    ]);
  });
});

describe("milter session: messages", () => {
  it("Postfix pipelining with 0x1376: the buffered no-reply packets and RCPT in one write", () => {
    const { s, asked } = session("rcpt");
    feed(s, optneg());
    const replies = feed(
      s,
      macro("C", { j: "mx" }),
      connect4("198.51.100.7"),
      macro("H"),
      macro("M", { i: "", "{auth_authen}": "alice" }),
      macro("R", { "{rcpt_mailer}": "smtp", "{auth_authen}": "alice" }),
      rcpt("a@remote.example"),
    );
    assert.deepEqual(replies, [ACC]);
    assert.deepEqual(asked[1], {
      clientAddress: "198.51.100.7",
      stage: "rcpt",
      recipient: "<a@remote.example>",
      rcptMailer: "smtp",
      authenticated: "alice",
    });
  });

  it("many messages on one connection; ABORT drops the message's macros, keeps the client", () => {
    const { s, asked } = session();
    feed(s, optneg());
    feed(s, macro("C"), connect4("198.51.100.7"), macro("H"));
    // Message 1: authenticated (the auth macro arrives with D M, MAIL itself skipped).
    feed(s, macro("M", { "{auth_authen}": "alice" }));
    assert.deepEqual(feed(s, macro("R", { "{rcpt_mailer}": "esmtp" }), rcpt("a@remote.example")), [
      ACC,
    ]);
    // Postfix: one ABORT between messages.
    assert.deepEqual(feed(s, ABORT), []);
    // Message 2: no auth any more; local recipient continues, remote is rejected.
    feed(s, macro("M"));
    assert.deepEqual(feed(s, macro("R", { "{rcpt_mailer}": "local" }), rcpt("b@example.org")), [
      CONT,
    ]);
    assert.deepEqual(feed(s, macro("R", { "{rcpt_mailer}": "esmtp" }), rcpt("a@remote.example")), [
      REJECTED,
    ]);
    assert.deepEqual(feed(s, macro("T"), macro("E"), EOB), [CONT]);
    // Message 3 after end of message: client address still known.
    feed(s, macro("M"));
    feed(s, macro("R", { "{rcpt_mailer}": "local" }), rcpt("b@example.org"));
    assert.equal(asked.at(-1)?.clientAddress, "198.51.100.7");
    // Postfix's session end: A A Q.
    assert.deepEqual(feed(s, ABORT, ABORT, QUIT), []);
    assert.equal(s.closed, true);
  });

  it("a RCPT without its own D R does not inherit the previous recipient's mailer", () => {
    const { s, asked } = session();
    feed(s, optneg(), macro("C"), connect4("198.51.100.7"));
    assert.deepEqual(feed(s, macro("R", { "{rcpt_mailer}": "local" }), rcpt("b@example.org")), [
      CONT,
    ]);
    assert.deepEqual(feed(s, rcpt("a@remote.example")), [REJECTED]);
    assert.equal(asked.at(-1)?.rcptMailer, undefined);
  });

  it("CONNECT macros last the connection; a new CONNECT drops the old session's", () => {
    const { s, asked } = session();
    feed(s, optneg(), macro("M", { "{auth_authen}": "stale" }));
    feed(s, macro("C", { "{auth_authen}": "conn" }), connect4("198.51.100.7"));
    feed(s, macro("H"), macro("M"), rcpt("a@remote.example"));
    assert.equal(asked.at(-1)?.authenticated, "conn", "D C kept, D M before CONNECT dropped");
  });

  it("a new D M drops the RCPT macros of the message before", () => {
    const { s, asked } = session();
    feed(
      s,
      optneg(),
      macro("C"),
      connect4("198.51.100.7"),
      macro("M"),
      macro("R", { "{rcpt_mailer}": "local" }),
    );
    feed(s, macro("M"), rcpt("a@remote.example"));
    assert.equal(asked.at(-1)?.rcptMailer, undefined);
  });

  it("ABORT without MAIL, repeated ABORTs: no reply, no error", () => {
    const { s } = session();
    feed(s, optneg());
    assert.deepEqual(feed(s, ABORT, ABORT, macro("C"), connect4("198.51.100.7"), ABORT, ABORT), [
      CONT,
    ]);
  });

  it("v2: no macro list asked; the auth macro from D M still counts at RCPT", () => {
    const { s, asked } = session("rcpt");
    const [reply] = feed(s, optneg(V2_OFFER));
    assert.deepEqual(reply, {
      type: "optneg",
      version: 2,
      actions: 0,
      protocol: 0x76,
      symlists: [],
    });
    assert.deepEqual(feed(s, macro("C"), connect4("198.51.100.7")), [CONT], "no NR_CONN in v2");
    feed(s, macro("H"), macro("M", { i: "4A1B2", "{auth_authen}": "alice" }));
    assert.deepEqual(
      feed(s, macro("R", { i: "4A1B2", "{rcpt_mailer}": "smtp" }), rcpt("a@remote.example")),
      [ACC],
    );
    assert.equal(asked.at(-1)?.authenticated, "alice");
  });

  it("steps the MTA sends anyway are answered CONTINUE, BODYEOB always", () => {
    const { s } = session();
    feed(s, optneg({ version: 6, actions: 0x1ff, protocol: 0 }));
    const replies = feed(
      s,
      connect4("198.51.100.7"),
      { type: "helo", helo: "client.example" },
      { type: "mail", args: ["<a@example.org>"] },
      { type: "data" },
      { type: "header", name: "Subject", value: "x" },
      { type: "eoh" },
      { type: "body", chunk: Buffer.from("hi") },
      { type: "unknown", line: "XYZZY" },
      EOB,
    );
    assert.deepEqual(replies, Array(9).fill(CONT));
  });

  it("QUIT ends the session; what follows is not read", () => {
    const { s } = session();
    feed(s, optneg());
    const out = s.receive(Buffer.concat([encodeCommand(QUIT), Buffer.from("GET / HTTP/1.0\r\n")]));
    assert.equal(out.length, 0);
    assert.equal(s.closed, true);
    assert.equal(s.failed, false);
  });

  it("QUIT_NC: a new CONNECT follows on the same connection, with nothing carried over", () => {
    const { s, asked } = session();
    feed(
      s,
      optneg(),
      macro("C"),
      connect4("198.51.100.7"),
      macro("M", { "{auth_authen}": "alice" }),
    );
    assert.deepEqual(feed(s, { type: "quit-nc" }), []);
    assert.equal(s.closed, false);
    assert.deepEqual(feed(s, macro("C"), connect4(LEASED)), [ACC]);
    feed(s, { type: "quit-nc" }, macro("C"), { type: "connect", hostname: "h", family: "U" });
    assert.deepEqual(feed(s, rcpt("a@remote.example")), [REJECTED]);
    assert.deepEqual(asked.at(-1), {
      clientAddress: undefined,
      stage: "rcpt",
      recipient: "<a@remote.example>",
      rcptMailer: undefined,
      authenticated: undefined,
    });
  });

  it("a decision that throws is answered 451 at RCPT, CONTINUE at CONNECT", () => {
    const errors: unknown[] = [];
    const s = new MilterSession({
      decide: () => {
        throw new Error("bug");
      },
      acceptAt: "connect",
      rejectText: REJECT_TEXT,
      onDecisionError: (err) => errors.push(err),
    });
    feed(s, optneg());
    assert.deepEqual(feed(s, connect4(LEASED)), [CONT]);
    const [reply] = feed(s, rcpt("a@remote.example"));
    assert.equal(reply?.type === "replycode" ? reply.text.slice(0, 10) : reply?.type, "451 4.7.1 ");
    assert.equal(errors.length, 2);
  });

  it("replies to one chunk are one buffer, in command order", () => {
    const { s } = session();
    feed(s, optneg(), macro("C"), connect4("198.51.100.7"));
    const out = s.receive(
      Buffer.concat(
        [rcpt("a@remote.example"), macro("R", { "{rcpt_mailer}": "local" }), rcpt("b@x"), EOB].map(
          encodeCommand,
        ),
      ),
    );
    assert.deepEqual(
      out,
      Buffer.concat([encodeReply(REJECTED), encodeReply(CONT), encodeReply(CONT)]),
    );
  });

  it("a frame split anywhere is buffered, then answered", () => {
    const { s } = session();
    feed(s, optneg(), macro("C"), connect4("198.51.100.7"));
    const wire = Buffer.concat(
      [macro("R", { "{rcpt_mailer}": "esmtp" }), rcpt("a@remote.example")].map(encodeCommand),
    );
    for (let i = 0; i < wire.length - 1; i++) {
      assert.equal(s.receive(wire.subarray(i, i + 1)).length, 0);
      assert.ok(s.buffered <= 5 + wire.length);
    }
    assert.deepEqual(decodeReplies(s.receive(wire.subarray(-1))).replies, [REJECTED]);
    assert.equal(s.buffered, 0);
  });

  it("garbage is a ProtocolError and the session fails", () => {
    const { s } = session();
    feed(s, optneg());
    assert.throws(() => s.receive(Buffer.from("GET / HTTP/1.0\r\n")), ProtocolError);
    assert.equal(s.failed, true);
    assert.equal(s.closed, true);
  });
});

describe("milter session: never ACCEPT for an unauthorized client", () => {
  const mailer = fc.constantFrom("smtp", "esmtp", "local", "virtual", "relay", "error", "");
  const step = fc.oneof(
    mailer.map((m): MilterCommand => macro("R", m === "" ? {} : { "{rcpt_mailer}": m })),
    fc.constantFrom("a@remote.example", "b@example.org", "root", "").map(rcpt),
    fc.constantFrom(ABORT, EOB, macro("M"), macro("H"), {
      type: "helo",
      helo: "x",
    } as MilterCommand),
  );
  it("whatever the recipients, mailers and message boundaries", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), fc.boolean(), (steps, stale) => {
        const config = {
          ...DEFAULT_DECISION_CONFIG,
          localDomains: new Set(["example.org"]),
          stale,
        };
        const s = new MilterSession({
          decide: (r) => decide({ lookup: () => undefined }, r, 0, config),
          acceptAt: "connect",
          rejectText: REJECT_TEXT,
        });
        const replies = feed(s, optneg(), macro("C"), connect4("198.51.100.7"), ...steps);
        assert.ok(replies.every((r) => r.type !== "accept"));
      }),
      { numRuns: 500 },
    );
  });
});

/**
 * The golden transcripts through the milter session, as Postfix would drive it: OPTNEG and
 * CONNECT per SMTP session; per recipient `D M` (with `{auth_authen}` once authenticated), `D R`
 * with `{rcpt_mailer}`, RCPT; an ABORT between recipients (one message each). After an ACCEPT at
 * CONNECT Postfix closes the milter connection: later recipients are not asked.
 */
class MilterSessionDoor implements FrontDoor {
  readonly name = "milter session";
  #session: MilterSession | undefined;
  #acceptedAtConnect = false;
  #messages = 0;

  expected(e: Expectation): string {
    return e.verdict;
  }

  ask(world: World, query: Query): string | undefined {
    if (query.kind === "connect") return this.#connect(world, query.family, query.address);
    const s = this.#session;
    if (s === undefined) throw new Error("rcpt before connect");
    if (this.#acceptedAtConnect) return undefined;
    if (this.#messages++ > 0) feed(s, ABORT);
    const auth = world.session?.authenticated;
    const m: Record<string, string> = auth === undefined ? {} : { "{auth_authen}": auth };
    const r: Record<string, string> =
      query.mailer === undefined ? {} : { "{rcpt_mailer}": query.mailer };
    const to = query.recipient.startsWith("<") ? query.recipient.slice(1, -1) : query.recipient;
    const replies = feed(s, macro("M", m), macro("R", { ...r, ...m }), rcpt(to));
    assert.equal(replies.length, 1);
    return this.#verdict(replies[0]);
  }

  #connect(world: World, family: "4" | "6" | "L" | "U", address: string): string {
    const s = new MilterSession({
      decide: (r) => decide(world.lookup, r, world.now, world.config()),
      acceptAt: world.acceptAt,
      rejectText: REJECT_TEXT,
    });
    this.#session = s;
    this.#messages = 0;
    feed(s, optneg());
    const command: MilterCommand =
      family === "U"
        ? { type: "connect", hostname: "unknown", family }
        : { type: "connect", hostname: "unknown", family, port: 40000, address };
    const [reply] = feed(s, macro("C"), command, macro("H"));
    this.#acceptedAtConnect = reply?.type === "accept";
    return this.#verdict(reply);
  }

  #verdict(reply: MilterReply | undefined): string {
    if (reply?.type === "replycode" && !/^(550 5\.7\.1|451 4\.7\.1) /.test(reply.text)) {
      return `bad reply ${reply.text}`;
    }
    return replyVerdict(reply);
  }
}

describe("golden transcripts through the milter session", () => {
  for (const t of loadTranscripts(join(import.meta.dirname, "..", "transcripts"))) {
    it(t.name, async () => {
      const { expected, actual, asked } = await replay(t, new MilterSessionDoor());
      assert.equal(actual, expected);
      assert.ok(asked > 0);
    });
  }
});
