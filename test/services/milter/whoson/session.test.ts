import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { WhosonRequest } from "../../../../services/milter/whoson/codec.ts";
import {
  MAX_USER_BYTES,
  WhosonSession,
  answerWhoson,
  cleanUser,
} from "../../../../services/milter/whoson/session.ts";
import type {
  LeaseAnswer,
  WhosonLookup,
  WhosonOutcome,
} from "../../../../services/milter/whoson/session.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";

const EXPIRES_AT = Date.UTC(2026, 0, 1);

/** Leases by canonical address text; 198.51.100.66 is unknown to a stale mirror. */
const leases: WhosonLookup = ({ text }) => {
  if (text === "203.0.113.5" || text === "2001:db8::1") {
    return { kind: "leased", expiresAt: EXPIRES_AT, user: "alice" };
  }
  if (text === "203.0.113.6") return { kind: "leased", expiresAt: EXPIRES_AT };
  if (text === "198.51.100.66") return { kind: "stale" };
  return { kind: "not-leased" };
};

const q = (verb: string, ...args: string[]): WhosonRequest => ({ verb, args });

describe("answerWhoson: the replies Exim's lookup reads", () => {
  const cases: [WhosonRequest, string, WhosonOutcome["reason"]][] = [
    [q("QUERY", "203.0.113.5"), "+alice", "leased"],
    [q("QUERY", "203.0.113.6"), "+", "leased"], // a lease without a user: empty $value
    [q("QUERY", "2001:db8::1"), "+alice", "leased"], // Exim's $sender_host_address
    [q("QUERY", "2001:DB8:0:0:0:0:0:1"), "+alice", "leased"],
    [q("QUERY", "::ffff:203.0.113.5"), "+alice", "leased"],
    [q("QUERY", "203.0.113.5", "ignored"), "+alice", "leased"],
    [q("QUERY", "198.51.100.7"), "-Not Logged in", "not-leased"],
    [q("QUERY", "198.51.100.66"), "*Lease information unavailable (mirror stale)", "stale"],
    [q("QUERY"), "-Not Logged in", "not-an-address"],
    [q("QUERY", "mail.example.com"), "-Not Logged in", "not-an-address"],
    [q("QUERY", "203.0.113.005"), "-Not Logged in", "not-an-address"],
    [
      q("LOGIN", "192.0.2.1", "mallory"),
      "*Refused: relay leases come from POP/IMAP logins only",
      "refused",
    ],
    [
      q("LOGOUT", "203.0.113.5"),
      "*Refused: relay leases come from POP/IMAP logins only",
      "refused",
    ],
    [q("QUIT"), "+QUIT OK", "quit"],
    [q("LIST"), "*Unknown command", "unknown-command"],
    [q(""), "*Unknown command", "unknown-command"],
  ];
  for (const [request, reply, reason] of cases) {
    it(`${[request.verb, ...request.args].join(" ") || "(blank)"}: ${reply}`, () => {
      const outcome = answerWhoson(request, leases);
      assert.equal(outcome.reply.status + outcome.reply.text, reply);
      assert.equal(outcome.reason, reason);
    });
  }

  it("never asks the lookup about LOGIN, LOGOUT or a key that is not an address", () => {
    const asked: string[] = [];
    const spy: WhosonLookup = ({ text }) => {
      asked.push(text);
      return { kind: "stale" };
    };
    for (const request of [
      q("LOGIN", "192.0.2.1", "x"),
      q("LOGOUT", "192.0.2.1"),
      q("QUERY", "x"),
    ]) {
      answerWhoson(request, spy);
    }
    assert.deepEqual(asked, []);
  });

  for (const [name, failing] of [["throws", () => assert.fail("mirror exploded")]] as [
    string,
    WhosonLookup,
  ][]) {
    it(`answers * when the lookup ${name}`, () => {
      const outcome = answerWhoson(q("QUERY", "203.0.113.5"), failing);
      assert.deepEqual(outcome.reply, { status: "*", text: "Lease lookup failed" });
      assert.equal(outcome.reason, "lookup-failed");
      assert.ok(outcome.error instanceof Error);
    });
  }
});

describe("cleanUser", () => {
  const cases: [string, string][] = [
    ["alice", "alice"],
    ["jörg@example.org", "jörg@example.org"],
    ["a\r\n+b", "a??+b"],
    ["tab\there", "tab?here"],
    ["\u0000\u007f\u0085", "???"],
    ["lone \ud800 surrogate", "lone \ufffd surrogate"],
  ];
  for (const [user, clean] of cases) {
    it(`${JSON.stringify(user)} -> ${JSON.stringify(clean)}`, () => {
      assert.equal(cleanUser(user), clean);
    });
  }

  it("cuts at MAX_USER_BYTES on a character boundary", () => {
    const user = "ö".repeat(MAX_USER_BYTES); // 2 bytes each
    const clean = cleanUser(user);
    assert.equal(Buffer.byteLength(clean), MAX_USER_BYTES);
    assert.equal(clean, "ö".repeat(MAX_USER_BYTES / 2));
    const odd = cleanUser(`x${user}`);
    assert.equal(odd, `x${"ö".repeat(MAX_USER_BYTES / 2 - 1)}`);
  });
});

describe("WhosonSession", () => {
  it("answers pipelined requests in order, across chunk boundaries", () => {
    const session = new WhosonSession({
      lookup: ({ text }): LeaseAnswer => ({
        kind: "leased",
        expiresAt: EXPIRES_AT,
        user: text.slice(-1),
      }),
    });
    const wire = "QUERY 192.0.2.1\r\n\r\nQUERY 192.0.2.2\r\n\r\nQUERY 192.0.2.3\r\n\r\n";
    const first = session.receive(Buffer.from(wire.slice(0, 25)));
    const second = session.receive(Buffer.from(wire.slice(25)));
    assert.equal(first.toString() + second.toString(), "+1\r\n\r\n+2\r\n\r\n+3\r\n\r\n");
  });

  it("stops at QUIT: answers it, reads nothing after it", () => {
    const session = new WhosonSession({ lookup: leases });
    const replies = session.receive(
      Buffer.from("QUERY 203.0.113.5\r\n\r\nQUIT\r\n\r\nQUERY 203.0.113.5\r\n\r\n"),
    );
    assert.equal(replies.toString(), "+alice\r\n\r\n+QUIT OK\r\n\r\n");
    assert.equal(session.closed, true);
    assert.equal(session.buffered, 0);
    assert.equal(session.receive(Buffer.from("QUERY 1.2.3.4\r\n\r\n")).length, 0);
  });

  it("answers an unknown command with * and goes on", () => {
    const session = new WhosonSession({ lookup: leases });
    const replies = session.receive(Buffer.from("LIST\r\n\r\nQUERY 203.0.113.5\r\n\r\n"));
    assert.equal(replies.toString(), "*Unknown command\r\n\r\n+alice\r\n\r\n");
    assert.equal(session.failed, false);
  });

  it("fails on broken framing, and answers nothing after it", () => {
    const seen: WhosonOutcome[] = [];
    const session = new WhosonSession({ lookup: leases, observe: (o) => seen.push(o) });
    assert.throws(
      () => session.receive(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n")),
      ProtocolError,
    );
    assert.equal(session.failed, true);
    assert.equal(session.receive(Buffer.from("QUERY 1.2.3.4\r\n\r\n")).length, 0);
    assert.equal(seen.length, 0);
  });

  it("never lets a user name break the reply framing", () => {
    const session = new WhosonSession({
      lookup: () => ({ kind: "leased", expiresAt: EXPIRES_AT, user: "x\r\n\r\n+root" }),
    });
    const replies = session.receive(Buffer.from("QUERY 192.0.2.1\r\n\r\n"));
    assert.equal(replies.toString(), "+x????+root\r\n\r\n");
  });
});
