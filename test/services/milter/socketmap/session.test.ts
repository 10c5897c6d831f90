import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeSocketmapRequest } from "../../../../services/milter/socketmap/codec.ts";
import type { SocketmapRequest } from "../../../../services/milter/socketmap/codec.ts";
import {
  SocketmapSession,
  answerSocketmap,
} from "../../../../services/milter/socketmap/session.ts";
import type {
  LeaseAnswer,
  SocketmapLookup,
  SocketmapOutcome,
} from "../../../../services/milter/socketmap/session.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";

// 2026-01-01T00:00:00Z plus half a second: the reply is whole seconds, rounded down.
const EXPIRES_AT = 1_767_225_600_500;
const EXPIRES = "1767225600";

/** Leases by canonical address text; 198.51.100.66 is unknown to a stale mirror. */
const leases: SocketmapLookup = ({ text }) => {
  if (text === "203.0.113.5" || text === "2001:db8::1") {
    return { kind: "leased", expiresAt: EXPIRES_AT, user: "alice" };
  }
  if (text === "198.51.100.66") return { kind: "stale" };
  return { kind: "not-leased" };
};

const lookup = (key: string, mapName = "drac"): SocketmapRequest => ({
  kind: "lookup",
  mapName,
  key,
});

describe("answerSocketmap: keys as Sendmail and Postfix send them", () => {
  const cases: [string, string, SocketmapOutcome["reason"]][] = [
    ["203.0.113.5", `OK ${EXPIRES}`, "leased"],
    ["[203.0.113.5]", `OK ${EXPIRES}`, "leased"],
    ["::ffff:203.0.113.5", `OK ${EXPIRES}`, "leased"],
    ["ipv6:2001:db8:0:0:0:0:0:1", `OK ${EXPIRES}`, "leased"], // Sendmail, lowercased
    ["IPv6:2001:DB8:0:0:0:0:0:1", `OK ${EXPIRES}`, "leased"], // Sendmail -f
    ["2001:db8:0:0:0:0:0:1", `OK ${EXPIRES}`, "leased"], // Debian FEATURE(drac) retry
    ["2001:db8::1", `OK ${EXPIRES}`, "leased"], // Postfix
    ["[IPv6:2001:db8::1]", `OK ${EXPIRES}`, "leased"],
    ["198.51.100.7", "NOTFOUND", "not-leased"],
    ["198.51.100.66", "TEMP", "stale"],
    ["unknown", "NOTFOUND", "not-an-address"], // Postfix, no reverse name
    ["localhost", "NOTFOUND", "not-an-address"], // Postfix host name lookup
    ["mail.example.com", "NOTFOUND", "not-an-address"],
    ["0", "NOTFOUND", "not-an-address"], // Sendmail -bs
    ["", "NOTFOUND", "not-an-address"],
    ["203.0.113.5:25", "NOTFOUND", "not-an-address"],
    ["fe80::1%eth0", "NOTFOUND", "not-an-address"],
    ["203.0.113.005", "NOTFOUND", "not-an-address"],
  ];
  for (const [key, reply, reason] of cases) {
    it(`${JSON.stringify(key)}: ${reply}`, () => {
      const outcome = answerSocketmap(lookup(key), { lookup: leases });
      assert.equal(outcome.reason, reason);
      const { status } = outcome.reply;
      const value = "value" in outcome.reply ? ` ${outcome.reply.value}` : "";
      assert.equal(status + value, reply);
    });
  }

  it("never asks the lookup about a key that is not an address", () => {
    const asked: string[] = [];
    answerSocketmap(lookup("mail.example.com"), {
      lookup: (address) => {
        asked.push(address.text);
        return { kind: "stale" };
      },
    });
    assert.deepEqual(asked, [], "a host name is NOTFOUND even when the mirror is stale");
  });

  it("hands the lookup the canonical address", () => {
    const asked: string[] = [];
    answerSocketmap(lookup("ipv6:2001:db8:0:0:0:0:0:1"), {
      lookup: (address) => {
        asked.push(address.text);
        return { kind: "not-leased" };
      },
    });
    assert.deepEqual(asked, ["2001:db8::1"]);
  });
});

describe("answerSocketmap: map names and failures", () => {
  it("serves any map name by default", () => {
    const outcome = answerSocketmap(lookup("203.0.113.5", "relay"), { lookup: leases });
    assert.equal(outcome.reason, "leased");
  });

  it("answers PERM for a map name not configured", () => {
    const outcome = answerSocketmap(lookup("203.0.113.5", "other"), {
      lookup: leases,
      mapNames: ["drac"],
    });
    assert.deepEqual(outcome.reply, { status: "PERM", reason: 'unknown map name "other"' });
    assert.equal(outcome.reason, "unknown-map");
  });

  it("answers PERM for a malformed request", () => {
    const outcome = answerSocketmap(
      { kind: "malformed", reason: "empty map name" },
      { lookup: leases },
    );
    assert.deepEqual(outcome.reply, { status: "PERM", reason: "empty map name" });
  });

  const failing: [string, SocketmapLookup][] = [
    ["throws", () => assert.fail("mirror exploded")],
    ["returns an expiry before 1970", () => ({ kind: "leased", expiresAt: -1 })],
    ["returns a NaN expiry", () => ({ kind: "leased", expiresAt: Number.NaN })],
  ];
  for (const [name, failingLookup] of failing) {
    it(`answers TEMP when the lookup ${name}, and passes the error on`, () => {
      const outcome = answerSocketmap(lookup("203.0.113.5"), { lookup: failingLookup });
      assert.equal(outcome.reply.status, "TEMP");
      assert.equal(outcome.reason, "lookup-failed");
      assert.ok(outcome.error instanceof Error);
    });
  }
});

describe("SocketmapSession", () => {
  it("answers pipelined requests in order, across chunk boundaries", () => {
    const session = new SocketmapSession({
      lookup: ({ text }): LeaseAnswer => ({
        kind: "leased",
        expiresAt: Number(text.slice(-1)) * 1000,
      }),
    });
    const wire = Buffer.concat(
      ["192.0.2.1", "192.0.2.2", "192.0.2.3"].map((k) => encodeSocketmapRequest("drac", k)),
    );
    const first = session.receive(wire.subarray(0, 20));
    const second = session.receive(wire.subarray(20));
    assert.equal(first.toString() + second.toString(), "4:OK 1,4:OK 2,4:OK 3,");
  });

  it("keeps an unfinished request for the next chunk", () => {
    const session = new SocketmapSession({ lookup: leases });
    assert.equal(session.receive(Buffer.from("16:drac 203.0")).length, 0);
    assert.equal(session.buffered, 13);
    assert.equal(session.receive(Buffer.from(".113.5,")).toString(), `13:OK ${EXPIRES},`);
    assert.equal(session.buffered, 0);
  });

  it("goes on after a PERM reply", () => {
    const session = new SocketmapSession({ lookup: leases, mapNames: ["drac"] });
    const replies = session.receive(
      Buffer.concat([
        Buffer.from("4:drac,"),
        encodeSocketmapRequest("x", "203.0.113.5"),
        encodeSocketmapRequest("drac", "203.0.113.5"),
      ]),
    );
    assert.equal(
      replies.toString(),
      `38:PERM no space between map name and key,25:PERM unknown map name "x",13:OK ${EXPIRES},`,
    );
    assert.equal(session.failed, false);
  });

  it("fails on broken framing, and answers nothing after it", () => {
    const seen: SocketmapOutcome[] = [];
    const session = new SocketmapSession({ lookup: leases, observe: (o) => seen.push(o) });
    assert.throws(() => session.receive(Buffer.from("12:drac 1.2.3.4;")), ProtocolError);
    assert.equal(session.failed, true);
    assert.equal(session.buffered, 0);
    assert.equal(session.receive(encodeSocketmapRequest("drac", "1.2.3.4")).length, 0);
    assert.equal(seen.length, 0);
  });

  it("tells observe of every reply", () => {
    const seen: string[] = [];
    const session = new SocketmapSession({ lookup: leases, observe: (o) => seen.push(o.reason) });
    session.receive(
      Buffer.concat(
        ["203.0.113.5", "unknown", "198.51.100.7", "198.51.100.66"].map((k) =>
          encodeSocketmapRequest("drac", k),
        ),
      ),
    );
    assert.deepEqual(seen, ["leased", "not-an-address", "not-leased", "stale"]);
  });
});
