// The lease value codec: a lease is its event plus the TTL; the bucket gives back what the
// authorizer wrote; every bad value is a SchemaError naming the field, and nothing else is thrown.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { decodeBucketValue, decodeLeaseView, encodeRevocation } from "../../shared/bucket-value.ts";
import { decodeLease, encodeLease, leaseFromEvent, type Lease } from "../../shared/lease.ts";
import { canonicalIp, type LoginEvent } from "../../shared/login-event.ts";
import { SchemaError, USER_NAME } from "../../shared/schema.ts";

const TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const EVENT: LoginEvent = {
  id: "e-1",
  ip: "203.0.113.5",
  user: "alice",
  service: "pop3",
  source: "dovecot-log",
  watcher: "mx-1",
  loginAt: Date.parse("2024-05-01T12:00:00.000Z"),
};

const LEASE: Lease = leaseFromEvent(EVENT, 30 * 60_000, TRACE);

/** The wire form of LEASE with some fields replaced (undefined removes a field). */
function body(patch: Record<string, unknown>): Uint8Array {
  const o = JSON.parse(Buffer.from(encodeLease(LEASE)).toString()) as Record<string, unknown>;
  return Buffer.from(JSON.stringify({ ...o, ...patch }));
}

describe("leaseFromEvent", () => {
  const cases: { name: string; ttlMs: number; trace: string | undefined; expiresAt: string }[] = [
    { name: "30 minutes", ttlMs: 30 * 60_000, trace: TRACE, expiresAt: "2024-05-01T12:30:00.000Z" },
    { name: "one second", ttlMs: 1000, trace: undefined, expiresAt: "2024-05-01T12:00:01.000Z" },
    { name: "a day", ttlMs: 86_400_000, trace: TRACE, expiresAt: "2024-05-02T12:00:00.000Z" },
  ];
  for (const c of cases) {
    it(`expiresAt is loginAt + ${c.name}`, () => {
      const l = leaseFromEvent(EVENT, c.ttlMs, c.trace);
      assert.deepEqual(l, {
        ip: EVENT.ip,
        user: EVENT.user,
        service: EVENT.service,
        source: EVENT.source,
        watcher: EVENT.watcher,
        loginAt: EVENT.loginAt,
        expiresAt: Date.parse(c.expiresAt),
        event: EVENT.id,
        trace: c.trace,
      });
    });
  }
});

describe("lease round trip", () => {
  const cases: { name: string; lease: Lease }[] = [
    { name: "with user and trace", lease: LEASE },
    { name: "no user", lease: { ...LEASE, user: undefined } },
    { name: "no trace", lease: { ...LEASE, trace: undefined } },
    { name: "IPv6", lease: { ...LEASE, ip: "2001:db8::5" } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(decodeLease(encodeLease(c.lease)), c.lease);
    });
  }

  it("writes times as RFC 3339 UTC text", () => {
    const o = JSON.parse(Buffer.from(encodeLease(LEASE)).toString()) as Record<string, unknown>;
    assert.equal(o["loginAt"], "2024-05-01T12:00:00.000Z");
    assert.equal(o["expiresAt"], "2024-05-01T12:30:00.000Z");
  });

  it("canonicalises the address it reads", () => {
    assert.equal(decodeLease(body({ ip: "::ffff:203.0.113.5" })).ip, "203.0.113.5");
  });
});

describe("lease rejections", () => {
  const cases: { name: string; body: Uint8Array; message: RegExp }[] = [
    { name: "trace not a traceparent", body: body({ trace: "abc" }), message: /"trace"/ },
    {
      name: "trace in upper case",
      body: body({ trace: TRACE.toUpperCase() }),
      message: /"trace"/,
    },
    {
      name: "trace with a short span id",
      body: body({ trace: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa-01" }),
      message: /"trace"/,
    },
    { name: "trace a number", body: body({ trace: 1 }), message: /"trace"/ },
    { name: "expiresAt garbage", body: body({ expiresAt: "soon" }), message: /"expiresAt"/ },
    { name: "expiresAt missing", body: body({ expiresAt: undefined }), message: /"expiresAt"/ },
    {
      name: "expiresAt not UTC",
      body: body({ expiresAt: "2024-05-01T14:30:00+02:00" }),
      message: /"expiresAt"/,
    },
    {
      name: "expiresAt epoch milliseconds",
      body: body({ expiresAt: 1714566600000 }),
      message: /"expiresAt"/,
    },
    { name: "loginAt garbage", body: body({ loginAt: "then" }), message: /"loginAt"/ },
    { name: "ip a hostname", body: body({ ip: "mx.example.org" }), message: /"ip"/ },
    { name: "ip missing", body: body({ ip: undefined }), message: /"ip"/ },
    { name: "event with a slash", body: body({ event: "a/b" }), message: /"event"/ },
    { name: "event missing", body: body({ event: undefined }), message: /"event"/ },
    { name: "service uppercase", body: body({ service: "POP3" }), message: /"service"/ },
    { name: "user with a tab", body: body({ user: "a\tb" }), message: /"user"/ },
    { name: "not JSON", body: Buffer.from("lease"), message: /not valid JSON/ },
    { name: "JSON array", body: Buffer.from("[]"), message: /must be a JSON object/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.throws(
        () => decodeLease(c.body),
        (err: unknown) => {
          assert.ok(err instanceof SchemaError, `not a SchemaError: ${String(err)}`);
          assert.match(err.message, c.message);
          return true;
        },
      );
    });
  }
});

// ---- properties ---------------------------------------------------------------------------

const labelArb = fc.stringMatching(/^[a-z][a-z0-9_-]{0,31}$/);
const wordArb = fc.stringMatching(/^[-\w]{1,64}$/);
const ipArb = fc.oneof(fc.ipV4(), fc.ipV6());
/** Times toISOString writes with a four-digit year (0000..9999). */
const timeArb = fc.integer({
  min: Date.parse("0000-01-01T00:00:00Z"),
  max: Date.parse("9999-12-31T23:59:59.999Z"),
});
const traceArb = fc.option(
  fc.stringMatching(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/),
  {
    nil: undefined,
  },
);
const userArb = fc.option(
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 256 }).filter((s) => USER_NAME.test(s)),
  { nil: undefined },
);

const leaseArb: fc.Arbitrary<Lease> = fc.record({
  ip: ipArb,
  user: userArb,
  service: labelArb,
  source: labelArb,
  watcher: wordArb,
  loginAt: timeArb,
  expiresAt: timeArb,
  event: wordArb,
  trace: traceArb,
});

/** Values near the real thing: each field a valid value, junk, or absent. */
const nearBodyArb = fc
  .record({
    ip: fc.oneof(ipArb, fc.string(), fc.anything()),
    user: fc.oneof(userArb, fc.string({ unit: "binary" }), fc.anything()),
    service: fc.oneof(labelArb, fc.anything()),
    source: fc.oneof(labelArb, fc.anything()),
    watcher: fc.oneof(wordArb, fc.anything()),
    loginAt: fc.oneof(
      timeArb.map((ms) => new Date(ms).toISOString()),
      fc.string(),
    ),
    expiresAt: fc.oneof(
      timeArb.map((ms) => new Date(ms).toISOString()),
      fc.anything(),
    ),
    event: fc.oneof(wordArb, fc.anything()),
    trace: fc.oneof(traceArb, fc.string(), fc.anything()),
  })
  .map((o) => Buffer.from(JSON.stringify(o)) as Uint8Array);

const anyBodyArb = fc.oneof(
  fc.uint8Array({ maxLength: 2000 }),
  fc.json().map((s) => Buffer.from(s) as Uint8Array),
  nearBodyArb,
);

describe("lease properties", () => {
  it("decode(encode(l)) is l, with the address canonical", () => {
    fc.assert(
      fc.property(leaseArb, (l) => {
        assert.deepEqual(decodeLease(encodeLease(l)), { ...l, ip: canonicalIp(l.ip) });
      }),
    );
  });

  it("any value decodes or throws SchemaError, nothing else", () => {
    fc.assert(
      fc.property(anyBodyArb, (b) => {
        try {
          decodeLease(b);
        } catch (err) {
          if (!(err instanceof SchemaError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("decodeBucketValue", () => {
  it("reads a value that is a view into a larger buffer", () => {
    const lease = encodeLease(LEASE);
    const framed = new Uint8Array(lease.length + 20).fill(0x7b);
    framed.set(lease, 10);
    assert.deepEqual(decodeBucketValue(framed.subarray(10, 10 + lease.length)), {
      kind: "lease",
      lease: LEASE,
    });
  });

  it("reads a revocation", () => {
    const r = encodeRevocation({ revokedAt: LEASE.loginAt, by: "cli", user: "alice" });
    assert.deepEqual(decodeBucketValue(r), {
      kind: "revoked",
      revokedAt: LEASE.loginAt,
      by: "cli",
      user: "alice",
    });
  });

  it("rejects an unknown kind and what is not JSON, naming the problem", () => {
    assert.throws(() => decodeBucketValue(Buffer.from('{"kind":"other"}')), /"kind"/);
    assert.throws(() => decodeBucketValue(Buffer.from("\uFEFF{}")), /not valid JSON/);
  });
});

describe("decodeLeaseView", () => {
  it("keeps only the decision's fields, and only those present", () => {
    assert.deepEqual(decodeLeaseView(encodeLease(LEASE)), {
      expiresAt: LEASE.expiresAt,
      user: "alice",
      trace: TRACE,
    });
    const bare = decodeLeaseView(encodeLease({ ...LEASE, user: undefined, trace: undefined }));
    assert.deepEqual(bare, { expiresAt: LEASE.expiresAt });
    const noUser = decodeLeaseView(encodeLease({ ...LEASE, user: undefined }));
    assert.deepEqual(Object.keys(noUser ?? {}), ["expiresAt", "trace"]);
  });

  it("is undefined for a revocation", () => {
    assert.equal(decodeLeaseView(encodeRevocation({ revokedAt: 0, by: "cli" })), undefined);
  });

  const bad = [
    { field: "expiresAt", value: "2024-02-30T12:00:00Z" },
    { field: "expiresAt", value: undefined },
    { field: "user", value: "a\u0007b" },
    { field: "trace", value: "00-zz" },
    { field: "kind", value: "other" },
  ];
  for (const c of bad) {
    it(`rejects a bad ${c.field}, naming it`, () => {
      const o = JSON.parse(Buffer.from(encodeLease(LEASE)).toString()) as Record<string, unknown>;
      o[c.field] = c.value;
      assert.throws(
        () => decodeLeaseView(Buffer.from(JSON.stringify(o))),
        (err: unknown) => err instanceof SchemaError && err.message.includes(`"${c.field}"`),
      );
    });
  }
});
