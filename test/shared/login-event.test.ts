// The login event codec: what a watcher writes the authorizer reads back unchanged; every bad
// body is a SchemaError naming the field, and no input throws anything else.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  MAX_EVENT_BYTES,
  canonicalIp,
  decodeLoginEvent,
  encodeLoginEvent,
  newEventId,
  type LoginEvent,
} from "../../shared/login-event.ts";
import { SchemaError, USER_NAME } from "../../shared/schema.ts";

const EVENT: LoginEvent = {
  id: "0b7f6a52-3f0e-4c59-9d2e-6a1f0c8e4b21",
  ip: "203.0.113.5",
  user: "alice@example.org",
  service: "imap",
  source: "http",
  watcher: "mx-1",
  loginAt: Date.parse("2024-05-01T12:34:56.789Z"),
};

/** The wire form of EVENT with some fields replaced (undefined removes a field). */
function body(patch: Record<string, unknown>): Uint8Array {
  const o: Record<string, unknown> = {
    id: EVENT.id,
    ip: EVENT.ip,
    user: EVENT.user,
    service: EVENT.service,
    source: EVENT.source,
    watcher: EVENT.watcher,
    loginAt: "2024-05-01T12:34:56.789Z",
    ...patch,
  };
  return Buffer.from(JSON.stringify(o));
}

function text(s: string): Uint8Array {
  return Buffer.from(s);
}

describe("login event round trip", () => {
  const cases: { name: string; event: LoginEvent }[] = [
    { name: "IPv4 with a user", event: EVENT },
    { name: "no user", event: { ...EVENT, user: undefined } },
    { name: "IPv6", event: { ...EVENT, ip: "2001:db8::5" } },
    { name: "fresh event id", event: { ...EVENT, id: newEventId() } },
    { name: "epoch", event: { ...EVENT, loginAt: 0 } },
    { name: "user with spaces and non-ASCII", event: { ...EVENT, user: "Jörg Müller ✉" } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(decodeLoginEvent(encodeLoginEvent(c.event)), c.event);
    });
  }

  it("writes loginAt as RFC 3339 UTC text", () => {
    const o = JSON.parse(Buffer.from(encodeLoginEvent(EVENT)).toString()) as Record<
      string,
      unknown
    >;
    assert.equal(o["loginAt"], "2024-05-01T12:34:56.789Z");
  });
});

describe("login event canonical addresses", () => {
  const cases: { name: string; ip: string; want: string }[] = [
    { name: "v4-mapped IPv6 becomes IPv4", ip: "::ffff:203.0.113.5", want: "203.0.113.5" },
    { name: "v4-mapped IPv6 in hex", ip: "::FFFF:cb00:7105", want: "203.0.113.5" },
    { name: "IPv6 is compressed and lowercased", ip: "2001:DB8:0:0:0:0:0:5", want: "2001:db8::5" },
    { name: "bracketed IPv4", ip: "[203.0.113.5]", want: "203.0.113.5" },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(decodeLoginEvent(body({ ip: c.ip })).ip, c.want);
    });
  }

  it("accepts fractional seconds up to nanoseconds, keeping milliseconds", () => {
    const e = decodeLoginEvent(body({ loginAt: "2024-05-01T12:34:56.789123456Z" }));
    assert.equal(e.loginAt, EVENT.loginAt);
  });
});

describe("login event rejections", () => {
  const cases: { name: string; body: Uint8Array; message: RegExp }[] = [
    { name: "missing id", body: body({ id: undefined }), message: /"id"/ },
    { name: "id with bad characters", body: body({ id: "a b/c" }), message: /"id"/ },
    { name: "id too long", body: body({ id: "a".repeat(65) }), message: /"id"/ },
    { name: "id a number", body: body({ id: 42 }), message: /"id"/ },
    { name: "missing ip", body: body({ ip: undefined }), message: /"ip"/ },
    { name: "ip not an address", body: body({ ip: "999.1.1.1" }), message: /"ip"/ },
    { name: "ip a hostname", body: body({ ip: "mail.example.org" }), message: /"ip"/ },
    { name: "ip with a port", body: body({ ip: "203.0.113.5:110" }), message: /"ip"/ },
    { name: "ip empty", body: body({ ip: "" }), message: /"ip"/ },
    { name: "ip over 64 characters", body: body({ ip: "1".repeat(65) }), message: /"ip"/ },
    { name: "user with a newline", body: body({ user: "alice\nbob" }), message: /"user"/ },
    { name: "user with NUL", body: body({ user: "alice\u0000" }), message: /"user"/ },
    { name: "user empty", body: body({ user: "" }), message: /"user"/ },
    { name: "user too long", body: body({ user: "u".repeat(257) }), message: /"user"/ },
    { name: "service uppercase", body: body({ service: "IMAP" }), message: /"service"/ },
    { name: "service missing", body: body({ service: undefined }), message: /"service"/ },
    { name: "source with a dot", body: body({ source: "dovecot.log" }), message: /"source"/ },
    { name: "watcher with a space", body: body({ watcher: "mx 1" }), message: /"watcher"/ },
    { name: "loginAt date only", body: body({ loginAt: "2024-05-01" }), message: /"loginAt"/ },
    {
      name: "loginAt with a space for T",
      body: body({ loginAt: "2024-05-01 12:34:56Z" }),
      message: /"loginAt"/,
    },
    {
      name: "loginAt with an offset, not UTC",
      body: body({ loginAt: "2024-05-01T14:34:56+02:00" }),
      message: /"loginAt"/,
    },
    {
      name: "loginAt without a zone",
      body: body({ loginAt: "2024-05-01T12:34:56" }),
      message: /"loginAt"/,
    },
    { name: "loginAt garbage", body: body({ loginAt: "yesterday" }), message: /"loginAt"/ },
    {
      name: "loginAt epoch milliseconds",
      body: body({ loginAt: 1714566896789 }),
      message: /"loginAt"/,
    },
    {
      name: "loginAt month 13",
      body: body({ loginAt: "2024-13-01T00:00:00Z" }),
      message: /"loginAt"/,
    },
    {
      name: "loginAt February 30",
      body: body({ loginAt: "2024-02-30T00:00:00Z" }),
      message: /"loginAt"/,
    },
    {
      name: "loginAt hour 24",
      body: body({ loginAt: "2024-05-01T24:00:00Z" }),
      message: /"loginAt"/,
    },
    {
      name: "body over 4 KiB",
      body: body({ pad: "x".repeat(MAX_EVENT_BYTES) }),
      message: /4 KiB/,
    },
    { name: "not JSON", body: text("id=1&ip=203.0.113.5"), message: /not valid JSON/ },
    { name: "truncated JSON", body: body({}).subarray(0, 40), message: /not valid JSON/ },
    { name: "empty body", body: new Uint8Array(0), message: /not valid JSON/ },
    { name: "JSON array", body: text("[1,2,3]"), message: /must be a JSON object/ },
    { name: "JSON null", body: text("null"), message: /must be a JSON object/ },
    { name: "JSON string", body: text('"event"'), message: /must be a JSON object/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.throws(
        () => decodeLoginEvent(c.body),
        (err: unknown) => {
          assert.ok(err instanceof SchemaError, `not a SchemaError: ${String(err)}`);
          assert.match(err.message, c.message);
          return true;
        },
      );
    });
  }

  it("accepts a body of exactly 4 KiB", () => {
    const base = body({ pad: "" }).length;
    const exact = body({ pad: "x".repeat(MAX_EVENT_BYTES - base) });
    assert.equal(exact.length, MAX_EVENT_BYTES);
    assert.equal(decodeLoginEvent(exact).id, EVENT.id);
  });
});

// ---- properties ---------------------------------------------------------------------------

const labelArb = fc.stringMatching(/^[a-z][a-z0-9_-]{0,31}$/);
const wordArb = fc.stringMatching(/^[-\w]{1,64}$/);
const ipArb = fc.oneof(fc.ipV4(), fc.ipV6());
/** loginAt within what toISOString writes as four-digit years (0000..9999). */
const timeArb = fc.integer({
  min: Date.parse("0000-01-01T00:00:00Z"),
  max: Date.parse("9999-12-31T23:59:59.999Z"),
});
const userArb = fc.option(
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 256 }).filter((s) => USER_NAME.test(s)),
  { nil: undefined },
);

const eventArb: fc.Arbitrary<LoginEvent> = fc.record({
  id: wordArb,
  ip: ipArb,
  user: userArb,
  service: labelArb,
  source: labelArb,
  watcher: wordArb,
  loginAt: timeArb,
});

/** Bodies near the real thing: each field a valid value, junk, or absent. */
const nearBodyArb = fc
  .record({
    id: fc.oneof(wordArb, fc.anything()),
    ip: fc.oneof(ipArb, fc.string(), fc.anything()),
    user: fc.oneof(userArb, fc.string({ unit: "binary" }), fc.anything()),
    service: fc.oneof(labelArb, fc.anything()),
    source: fc.oneof(labelArb, fc.anything()),
    watcher: fc.oneof(wordArb, fc.anything()),
    loginAt: fc.oneof(
      timeArb.map((ms) => new Date(ms).toISOString()),
      fc.string(),
      fc.anything(),
    ),
  })
  .map((o) => Buffer.from(JSON.stringify(o)) as Uint8Array);

const anyBodyArb = fc.oneof(
  fc.uint8Array({ maxLength: 5000 }),
  fc.json().map((s) => Buffer.from(s) as Uint8Array),
  nearBodyArb,
);

describe("login event properties", () => {
  it("decode(encode(e)) is e, with the address canonical", () => {
    fc.assert(
      fc.property(eventArb, (e) => {
        const d = decodeLoginEvent(encodeLoginEvent(e));
        assert.deepEqual(d, { ...e, ip: canonicalIp(e.ip) });
        assert.deepEqual(decodeLoginEvent(encodeLoginEvent(d)), d);
      }),
    );
  });

  it("any body decodes or throws SchemaError, nothing else", () => {
    fc.assert(
      fc.property(anyBodyArb, (b) => {
        try {
          decodeLoginEvent(b);
        } catch (err) {
          if (!(err instanceof SchemaError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
