import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DEFAULT_SOCKETMAP_LIMITS,
  decodeNetstrings,
  decodeSocketmapReplies,
  decodeSocketmapRequests,
  encodeNetstring,
  encodeSocketmapReply,
  encodeSocketmapRequest,
} from "../../../../services/milter/socketmap/codec.ts";
import type {
  SocketmapLimits,
  SocketmapReply,
  SocketmapRequest,
} from "../../../../services/milter/socketmap/codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";

const { maxPayloadBytes } = DEFAULT_SOCKETMAP_LIMITS;
const SMALL: SocketmapLimits = { maxPayloadBytes: 16 };

const lookup = (mapName: string, key: string): SocketmapRequest => ({
  kind: "lookup",
  mapName,
  key,
});
const malformed = (reason: string): SocketmapRequest => ({ kind: "malformed", reason });

interface Valid {
  name: string;
  input: string | Buffer;
  requests: SocketmapRequest[];
  /** Bytes of an unfinished netstring left after the complete ones. */
  rest?: number;
  limits?: SocketmapLimits;
}

const valid: Valid[] = [
  {
    name: "Sendmail and Postfix IPv4 (observed)",
    input: "12:drac 1.2.3.4,",
    requests: [lookup("drac", "1.2.3.4")],
  },
  {
    name: "Sendmail IPv6, lowercased and uncompressed",
    input: "30:drac ipv6:2001:db8:0:0:0:0:0:1,",
    requests: [lookup("drac", "ipv6:2001:db8:0:0:0:0:0:1")],
  },
  {
    name: "Postfix client host name first",
    input: "12:drac unknown,",
    requests: [lookup("drac", "unknown")],
  },
  { name: "empty key", input: "5:drac ,", requests: [lookup("drac", "")] },
  { name: "key holding spaces", input: "8:drac a b,", requests: [lookup("drac", "a b")] },
  {
    name: "8-bit key bytes kept one for one",
    input: Buffer.from("5:m \xe9\xff\x00,", "latin1"),
    requests: [lookup("m", "\xe9\xff\x00")],
  },
  {
    name: "empty netstring",
    input: "0:,",
    requests: [malformed("no space between map name and key")],
  },
  {
    name: "no space",
    input: "4:drac,",
    requests: [malformed("no space between map name and key")],
  },
  { name: "empty map name", input: "8: 1.2.3.4,", requests: [malformed("empty map name")] },
  {
    name: "two pipelined requests",
    input: "12:drac 1.2.3.4,12:drac 5.6.7.8,",
    requests: [lookup("drac", "1.2.3.4"), lookup("drac", "5.6.7.8")],
  },
  { name: "length digits only", input: "12", requests: [], rest: 2 },
  { name: "length and colon", input: "12:", requests: [], rest: 3 },
  { name: "payload unfinished", input: "12:drac 1.2", requests: [], rest: 11 },
  { name: "comma missing yet", input: "12:drac 1.2.3.4", requests: [], rest: 15 },
  {
    name: "complete then unfinished",
    input: "12:drac 1.2.3.4,5:dr",
    requests: [lookup("drac", "1.2.3.4")],
    rest: 4,
  },
  {
    name: "payload of exactly maxPayloadBytes",
    input: `${maxPayloadBytes}:m ${"k".repeat(maxPayloadBytes - 2)},`,
    requests: [lookup("m", "k".repeat(maxPayloadBytes - 2))],
  },
  {
    name: "payload of exactly a small limit",
    input: "16:drac 1.2.3.4.5.6,",
    requests: [lookup("drac", "1.2.3.4.5.6")],
    limits: SMALL,
  },
];

interface Invalid {
  name: string;
  input: string | Buffer;
  error: RegExp;
  limits?: SocketmapLimits;
}

const invalid: Invalid[] = [
  { name: "HTTP probe", input: "GET / HTTP/1.1\r\n\r\n", error: /byte 0x47/ },
  { name: "TLS ClientHello", input: Buffer.from([0x16, 0x03, 0x01, 0x00]), error: /byte 0x16/ },
  { name: "RESP probe", input: "*1\r\n$4\r\nPING\r\n", error: /byte 0x2a/ },
  { name: "non-digit in the length", input: "1a:drac x,", error: /byte 0x61/ },
  { name: "space before the length", input: " 12:drac 1.2.3.4,", error: /byte 0x20/ },
  { name: "negative length", input: "-1:", error: /byte 0x2d/ },
  { name: "no length", input: ":drac x,", error: /without a length/ },
  { name: "leading zero", input: "012:drac 1.2.3.4,", error: /leading 0/ },
  { name: "two zeros", input: "00:,", error: /leading 0/ },
  { name: "missing comma", input: "12:drac 1.2.3.4;", error: /not ","/ },
  { name: "CRLF instead of the comma", input: "12:drac 1.2.3.4\r\n", error: /not ","/ },
  { name: "length too short", input: "3:drac 1.2.3.4,", error: /not ","/ },
  { name: "length over the limit", input: `${maxPayloadBytes + 1}:`, error: /longer than/ },
  { name: "length over the limit, no colon yet", input: "1025", error: /longer than/ },
  { name: "huge length", input: "99999999999999999999:", error: /longer than/ },
  { name: "over a small limit", input: "17:", error: /longer than 16/, limits: SMALL },
  { name: "bad after good", input: "12:drac 1.2.3.4,x", error: /byte 0x78/ },
];

/** Feeds `chunks` as a connection would, keeping what decode did not consume. */
function feed(
  chunks: Buffer[],
  limits?: SocketmapLimits,
): { requests: SocketmapRequest[]; rest: number } {
  const requests: SocketmapRequest[] = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    const out = decodeSocketmapRequests(buf, limits);
    requests.push(...out.requests);
    buf = buf.subarray(out.consumed);
  }
  return { requests, rest: buf.length };
}

function bytesOf(input: string | Buffer): Buffer {
  return typeof input === "string" ? Buffer.from(input, "latin1") : input;
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...points, buf.length]) {
    chunks.push(buf.subarray(from, p));
    from = p;
  }
  return chunks;
}

const byteByByte = (buf: Buffer) => [...buf].map((b) => Buffer.from([b]));

function isProtocolError(message: RegExp) {
  return (err: unknown) => err instanceof ProtocolError && message.test(err.message);
}

describe("decodeSocketmapRequests: valid input", () => {
  for (const c of valid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      const whole = decodeSocketmapRequests(buf, c.limits);
      assert.deepEqual(whole.requests, c.requests);
      assert.equal(buf.length - whole.consumed, c.rest ?? 0);
      const oneByOne = feed(byteByByte(buf), c.limits);
      assert.deepEqual(oneByOne.requests, c.requests, "byte by byte");
      assert.equal(oneByOne.rest, c.rest ?? 0);
      fc.assert(
        fc.property(fc.array(fc.nat()), (cuts) => {
          const split = feed(splitAt(buf, cuts), c.limits);
          assert.deepEqual(split.requests, c.requests);
          assert.equal(split.rest, c.rest ?? 0);
        }),
        { numRuns: 50 },
      );
    });
  }
});

describe("decodeSocketmapRequests: invalid input", () => {
  for (const c of invalid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      assert.throws(() => decodeSocketmapRequests(buf, c.limits), isProtocolError(c.error));
      assert.throws(() => feed(byteByByte(buf), c.limits), isProtocolError(c.error), "1 by 1");
      fc.assert(
        fc.property(fc.array(fc.nat()), (cuts) => {
          assert.throws(() => feed(splitAt(buf, cuts), c.limits), isProtocolError(c.error));
        }),
        { numRuns: 50 },
      );
    });
  }
});

describe("decodeSocketmapRequests: memory stays bounded", () => {
  it("1 MB of digits is refused at the fourth byte of the first chunk", () => {
    const chunk = Buffer.alloc(65536, "1");
    let fed = 0;
    assert.throws(() => {
      for (; fed < 16; fed++) decodeSocketmapRequests(chunk);
    }, /longer than 1024/);
    assert.equal(fed, 0);
    // The fourth digit is where 1111 passes 1024; the first three are a valid length so far.
    assert.equal(feed([chunk.subarray(0, 3)]).rest, 3);
    assert.throws(() => feed([chunk.subarray(0, 4)]), /longer than 1024/);
  });

  it("random 64 KiB chunks: refused, or at most one unfinished netstring kept", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 65536, maxLength: 65536 }), (bytes) => {
        const buf = Buffer.from(bytes);
        try {
          const { consumed } = decodeSocketmapRequests(buf);
          // Only a run of valid netstrings gets this far, and what is left is one unfinished one.
          assert.ok(buf.length - consumed <= maxPayloadBytes + 6);
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 10 },
    );
  });

  it("a netstring arriving byte by byte holds at most its limit plus framing", () => {
    const request = Buffer.from(`${maxPayloadBytes}:m ${"k".repeat(maxPayloadBytes - 2)},`);
    let buf = Buffer.alloc(0);
    let largest = 0;
    for (const byte of request) {
      buf = Buffer.concat([buf, Buffer.from([byte])]);
      buf = buf.subarray(decodeSocketmapRequests(buf).consumed);
      largest = Math.max(largest, buf.length);
    }
    assert.equal(buf.length, 0);
    assert.equal(largest, maxPayloadBytes + String(maxPayloadBytes).length + 1);
  });
});

describe("decodeNetstrings", () => {
  it("returns views of each payload", () => {
    const { payloads, consumed } = decodeNetstrings(Buffer.from("3:abc,0:,1:x,"), 10);
    assert.deepEqual(
      payloads.map((p) => p.toString()),
      ["abc", "", "x"],
    );
    assert.equal(consumed, 13);
  });

  it("encodeNetstring writes the length in decimal without padding", () => {
    assert.equal(encodeNetstring(Buffer.from("")).toString(), "0:,");
    assert.equal(encodeNetstring(Buffer.alloc(10, "a")).toString(), `10:${"a".repeat(10)},`);
  });
});

// Map names: no space, not empty; keys: anything. Both as latin1 characters (bytes).
const mapNameArb = fc
  .string({ unit: fc.nat(255).map((n) => String.fromCharCode(n)), minLength: 1, maxLength: 20 })
  .map((s) => s.replaceAll(" ", ""))
  .filter((s) => s !== "");
const keyArb = fc.string({ unit: fc.nat(255).map((n) => String.fromCharCode(n)), maxLength: 80 });
const ROOMY: SocketmapLimits = { maxPayloadBytes: 200 };

describe("socketmap requests: properties", () => {
  it("decode(encode(x)) is x, whole and in any split", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(mapNameArb, keyArb), { minLength: 1, maxLength: 5 }),
        fc.array(fc.nat()),
        (xs, cuts) => {
          const expected = xs.map(([m, k]) => lookup(m, k));
          const buf = Buffer.concat(xs.map(([m, k]) => encodeSocketmapRequest(m, k)));
          const whole = decodeSocketmapRequests(buf, ROOMY);
          assert.deepEqual(whole.requests, expected);
          assert.equal(whole.consumed, buf.length);
          assert.deepEqual(feed(splitAt(buf, cuts), ROOMY).requests, expected);
        },
      ),
    );
  });

  // Bytes that matter to the codec, mixed with anything.
  const byteArb = fc.oneof(fc.constantFrom(0x3a, 0x2c, 0x30, 0x31, 0x39, 0x20), fc.nat(255));
  const limitsArb = fc.constantFrom(SMALL, DEFAULT_SOCKETMAP_LIMITS);

  it("random bytes: requests or a ProtocolError, never anything else", () => {
    fc.assert(
      fc.property(fc.array(byteArb, { maxLength: 300 }), limitsArb, (bytes, limits) => {
        expectOnlyProtocolErrors(Buffer.from(bytes), limits);
      }),
      { numRuns: 2000 },
    );
  });

  const mutationArb = fc.array(
    fc.record({ at: fc.nat(), op: fc.constantFrom("set", "insert", "delete"), byte: byteArb }),
    { minLength: 1, maxLength: 5 },
  );

  it("mutated valid requests: requests or a ProtocolError, never anything else", () => {
    fc.assert(
      fc.property(mapNameArb, keyArb, mutationArb, limitsArb, (m, k, mutations, limits) => {
        expectOnlyProtocolErrors(mutate([...encodeSocketmapRequest(m, k)], mutations), limits);
      }),
      { numRuns: 2000 },
    );
  });
});

function mutate(bytes: number[], mutations: { at: number; op: string; byte: number }[]): Buffer {
  for (const m of mutations) {
    const at = m.at % (bytes.length + 1);
    if (m.op === "set") bytes[at] = m.byte;
    else if (m.op === "insert") bytes.splice(at, 0, m.byte);
    else bytes.splice(at, 1);
  }
  return Buffer.from(bytes);
}

function expectOnlyProtocolErrors(buf: Buffer, limits: SocketmapLimits): void {
  try {
    const { consumed } = decodeSocketmapRequests(buf, limits);
    assert.ok(consumed <= buf.length);
    const framing = String(limits.maxPayloadBytes).length + 2;
    assert.ok(buf.length - consumed < limits.maxPayloadBytes + framing, "unfinished part bounded");
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

describe("encodeSocketmapRequest", () => {
  it("writes Sendmail's form", () => {
    assert.equal(encodeSocketmapRequest("drac", "1.2.3.4").toString(), "12:drac 1.2.3.4,");
  });

  for (const [name, mapName, key] of [
    ["empty map name", "", "k"],
    ["space in the map name", "a b", "k"],
    ["character above U+00FF", "m", "\u0100"],
  ] as const) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => encodeSocketmapRequest(mapName, key),
        (err: unknown) => err instanceof Error && !(err instanceof ProtocolError),
      );
    });
  }
});

describe("encodeSocketmapReply", () => {
  const cases: [SocketmapReply, string][] = [
    [{ status: "OK", value: "1767225600" }, "13:OK 1767225600,"],
    [{ status: "NOTFOUND" }, "9:NOTFOUND ,"],
    [{ status: "TEMP", reason: "lease mirror stale" }, "23:TEMP lease mirror stale,"],
    [{ status: "TIMEOUT", reason: "" }, "8:TIMEOUT ,"],
    [{ status: "PERM", reason: "empty map name" }, "19:PERM empty map name,"],
  ];
  for (const [reply, wire] of cases) {
    it(`encodes ${JSON.stringify(reply)}`, () => {
      assert.equal(encodeSocketmapReply(reply).toString("latin1"), wire);
    });
  }

  const bad: [string, SocketmapReply][] = [
    ["OK with an empty value (Sendmail crashes on 2:OK,)", { status: "OK", value: "" }],
    ["NUL in a value", { status: "OK", value: "1\u00002" }],
    ["NUL in a reason", { status: "TEMP", reason: "a\u0000" }],
    ["character above U+00FF", { status: "PERM", reason: "\u2603" }],
  ];
  for (const [name, reply] of bad) {
    it(`refuses ${name} as our own bug, not a ProtocolError`, () => {
      assert.throws(
        () => encodeSocketmapReply(reply),
        (err: unknown) => err instanceof Error && !(err instanceof ProtocolError),
      );
    });
  }
});

describe("decodeSocketmapReplies (our client's strict reading)", () => {
  const good: [string, SocketmapReply][] = [
    ["13:OK 1767225600,", { status: "OK", value: "1767225600" }],
    ["5:OK OK,", { status: "OK", value: "OK" }],
    ["8:NOTFOUND,", { status: "NOTFOUND" }],
    ["9:NOTFOUND ,", { status: "NOTFOUND" }],
    ["4:TEMP,", { status: "TEMP", reason: "" }],
    ["9:PERM oops,", { status: "PERM", reason: "oops" }],
  ];
  for (const [wire, reply] of good) {
    it(`reads ${wire}`, () => {
      assert.deepEqual(decodeSocketmapReplies(Buffer.from(wire)).replies, [reply]);
    });
  }

  for (const wire of ["2:OK,", "3:OK ,", "5:MAYBE,", "0:,", "9:notfound ,"]) {
    it(`refuses ${wire}`, () => {
      assert.throws(() => decodeSocketmapReplies(Buffer.from(wire)), ProtocolError);
    });
  }

  const replyArb: fc.Arbitrary<SocketmapReply> = fc.oneof(
    keyArb
      .map((v) => v.replaceAll("\0", ""))
      .filter((v) => v !== "")
      .map((value) => ({ status: "OK" as const, value })),
    fc.constant({ status: "NOTFOUND" as const }),
    fc
      .tuple(fc.constantFrom("TEMP" as const, "TIMEOUT" as const, "PERM" as const), keyArb)
      .map(([status, reason]) => ({ status, reason: reason.replaceAll("\0", "") })),
  );

  it("decode(encode(reply)) is reply", () => {
    fc.assert(
      fc.property(fc.array(replyArb, { minLength: 1, maxLength: 5 }), (replies) => {
        const buf = Buffer.concat(replies.map(encodeSocketmapReply));
        assert.deepEqual(decodeSocketmapReplies(buf).replies, replies);
      }),
    );
  });
});
