import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DEFAULT_POLICY_LIMITS,
  decodePolicyRequests,
  encodePolicyReply,
  encodePolicyRequest,
} from "../../../../services/milter/policy/codec.ts";
import type { PolicyLimits, PolicyRequest } from "../../../../services/milter/policy/codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { POSTFIX_RCPT_REQUEST } from "../../../support/policy-client.ts";

// 48 bytes: two 15-byte lines, one 17-byte line (16 + LF) and the closing LF.
const SMALL: PolicyLimits = { maxLineBytes: 16, maxAttributes: 4, maxRequestBytes: 48 };
const x12 = "x".repeat(12);
const x14 = "x".repeat(14);
const { maxLineBytes, maxAttributes, maxRequestBytes } = DEFAULT_POLICY_LIMITS;

const lines = (n: number) => Array.from({ length: n }, (_, i) => `a${i}=v\n`).join("");
const wire = (attrs: Record<string, string>) => encodePolicyRequest(attrs).toString("utf8");

interface Valid {
  name: string;
  input: string | Buffer;
  requests: [string, string][][];
  /** Bytes of an unfinished request left after the complete ones. */
  rest?: number;
  limits?: PolicyLimits;
}

const valid: Valid[] = [
  {
    name: "Postfix 3.7 RCPT request",
    input: wire(POSTFIX_RCPT_REQUEST),
    requests: [Object.entries(POSTFIX_RCPT_REQUEST)],
  },
  { name: "one attribute", input: "a=b\n\n", requests: [[["a", "b"]]] },
  { name: "empty value", input: "queue_id=\n\n", requests: [[["queue_id", ""]]] },
  { name: "value holding =", input: "a=b=c\n\n", requests: [[["a", "b=c"]]] },
  { name: "CR belongs to the value", input: "a=b\r\n\n", requests: [[["a", "b\r"]]] },
  { name: "spaces kept", input: " a = b \n\n", requests: [[[" a ", " b "]]] },
  {
    name: "UTF-8 value (SMTPUTF8 sender)",
    input: "sender=jörg@exämple.org\n\n",
    requests: [[["sender", "jörg@exämple.org"]]],
  },
  { name: "BOM kept", input: "a=\ufeffb\n\n", requests: [[["a", "\ufeffb"]]] },
  {
    name: "duplicate name: last wins",
    input: "a=1\nb=2\na=3\n\n",
    requests: [
      [
        ["a", "3"],
        ["b", "2"],
      ],
    ],
  },
  {
    name: "two pipelined requests",
    input: "a=1\n\nb=2\n\n",
    requests: [[["a", "1"]], [["b", "2"]]],
  },
  { name: "unfinished request only", input: "a=1\nb=", requests: [], rest: 6 },
  { name: "complete then unfinished", input: "a=1\n\nb=2\n", requests: [[["a", "1"]]], rest: 4 },
  {
    name: "line of exactly maxLineBytes",
    input: `a=${"x".repeat(maxLineBytes - 2)}\n\n`,
    requests: [[["a", "x".repeat(maxLineBytes - 2)]]],
  },
  {
    name: "exactly maxAttributes attributes",
    input: `${lines(maxAttributes)}\n`,
    requests: [Array.from({ length: maxAttributes }, (_, i) => [`a${i}`, "v"])],
  },
  {
    name: "request of exactly maxRequestBytes",
    input: `a=${x12}\nb=${x12}\nc=${x14}\n\n`,
    requests: [
      [
        ["a", x12],
        ["b", x12],
        ["c", x14],
      ],
    ],
    limits: SMALL,
  },
];

interface Invalid {
  name: string;
  input: string | Buffer;
  error: RegExp;
  limits?: PolicyLimits;
}

const invalid: Invalid[] = [
  { name: "line without =", input: "abc\n\n", error: /no "="/ },
  { name: "HTTP probe", input: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", error: /no "="/ },
  { name: "empty attribute name", input: "=x\n\n", error: /empty attribute name/ },
  { name: "empty request", input: "\n", error: /empty request/ },
  { name: "extra empty line after a request", input: "a=1\n\n\n", error: /empty request/ },
  { name: "NUL in a value", input: "a=b\0c\n\n", error: /NUL/ },
  { name: "NUL in an unfinished line", input: "a=\0", error: /NUL/ },
  { name: "invalid UTF-8", input: Buffer.from("a=\xff\n\n", "latin1"), error: /UTF-8/ },
  { name: "overlong UTF-8 /", input: Buffer.from("a=\xc0\xaf\n\n", "latin1"), error: /UTF-8/ },
  { name: "UTF-8 surrogate", input: Buffer.from("a=\xed\xa0\x80\n\n", "latin1"), error: /UTF-8/ },
  {
    name: "line over maxLineBytes, terminated",
    input: `a=${"x".repeat(maxLineBytes - 1)}\n\n`,
    error: /longer than/,
  },
  {
    name: "line over maxLineBytes, no newline yet",
    input: `a=${"x".repeat(maxLineBytes - 1)}`,
    error: /longer than/,
  },
  { name: "too many attributes", input: `${lines(maxAttributes + 1)}\n`, error: /attributes/ },
  {
    name: "too many attributes, unfinished",
    input: `${lines(maxAttributes)}b`,
    error: /attributes/,
  },
  {
    name: "request over maxRequestBytes",
    input: `a=${x12}\nb=${x12}\nc=${x14}\nd=\n\n`,
    error: /request longer/,
    limits: SMALL,
  },
  {
    name: "request over maxRequestBytes, unfinished",
    input: `a=${x12}\nb=${x12}\nc=${x14}\nd`,
    error: /request longer/,
    limits: SMALL,
  },
  { name: "bad request after a good one", input: "a=1\n\nb\n\n", error: /no "="/ },
];

/** Feeds `chunks` as a connection would, keeping what decode did not consume. */
function feed(
  chunks: Buffer[],
  limits?: PolicyLimits,
): { requests: PolicyRequest[]; rest: number } {
  const requests: PolicyRequest[] = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    const out = decodePolicyRequests(buf, limits);
    requests.push(...out.requests);
    buf = buf.subarray(out.consumed);
  }
  return { requests, rest: buf.length };
}

function bytesOf(input: string | Buffer): Buffer {
  return typeof input === "string" ? Buffer.from(input, "utf8") : input;
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
const entries = (requests: PolicyRequest[]) => requests.map((r) => [...r]);

describe("decodePolicyRequests: valid input", () => {
  for (const c of valid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      const whole = decodePolicyRequests(buf, c.limits);
      assert.deepEqual(entries(whole.requests), c.requests);
      assert.equal(buf.length - whole.consumed, c.rest ?? 0);
      const oneByOne = feed(byteByByte(buf), c.limits);
      assert.deepEqual(entries(oneByOne.requests), c.requests, "byte by byte");
      assert.equal(oneByOne.rest, c.rest ?? 0);
      fc.assert(
        fc.property(fc.array(fc.nat()), (cuts) => {
          const split = feed(splitAt(buf, cuts), c.limits);
          assert.deepEqual(entries(split.requests), c.requests);
          assert.equal(split.rest, c.rest ?? 0);
        }),
        { numRuns: 50 },
      );
    });
  }
});

describe("decodePolicyRequests: invalid input", () => {
  for (const c of invalid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      assert.throws(() => decodePolicyRequests(buf, c.limits), isProtocolError(c.error));
      assert.throws(() => feed(byteByByte(buf), c.limits), ProtocolError, "byte by byte");
      fc.assert(
        fc.property(fc.array(fc.nat()), (cuts) => {
          assert.throws(() => feed(splitAt(buf, cuts), c.limits), ProtocolError);
        }),
        { numRuns: 50 },
      );
    });
  }
});

function isProtocolError(message: RegExp) {
  return (err: unknown) => err instanceof ProtocolError && message.test(err.message);
}

describe("decodePolicyRequests: memory stays bounded", () => {
  it("1 MB without a newline is refused at the first 64 KiB chunk", () => {
    const chunk = Buffer.alloc(65536, "x");
    let fed = 0;
    assert.throws(() => {
      for (; fed < 16; fed++) feed([chunk]);
    }, /longer than/);
    assert.equal(fed, 0);
  });

  it("a line growing byte by byte is refused one byte past maxLineBytes", () => {
    let buf = Buffer.alloc(0);
    assert.throws(() => {
      for (;;) {
        buf = Buffer.concat([buf, Buffer.from("x")]);
        decodePolicyRequests(buf);
      }
    }, /longer than/);
    assert.equal(buf.length, maxLineBytes + 1);
  });

  it("short lines that never end the request are refused past maxAttributes", () => {
    assert.throws(() => feed([Buffer.from(lines(maxAttributes)), Buffer.from("z")]), /attributes/);
  });

  it("long lines that never end the request are refused at maxRequestBytes", () => {
    const line = Buffer.from(`a=${"x".repeat(maxLineBytes - 2)}\n`);
    const count = Math.ceil(maxRequestBytes / line.length);
    assert.throws(() => feed(Array.from({ length: count }, () => line)), /request longer/);
  });
});

// Attribute names: no "=", LF or NUL, not empty; values: no LF or NUL. Any other code point,
// CR and astral characters included.
const nameArb = fc
  .string({ unit: "binary", minLength: 1, maxLength: 20 })
  .map((s) => s.replace(/[=\n\0]/g, ""))
  .filter((s) => s !== "");
const valueArb = fc.string({ unit: "binary", maxLength: 40 }).map((s) => s.replace(/[\n\0]/g, ""));
const requestArb = fc
  .uniqueArray(fc.tuple(nameArb, valueArb), { minLength: 1, maxLength: 30, selector: (t) => t[0] })
  .map((pairs) => new Map(pairs));
const ROOMY: PolicyLimits = { maxLineBytes: 1024, maxAttributes: 64, maxRequestBytes: 65536 };

describe("decodePolicyRequests: properties", () => {
  it("decode(encode(x)) is x, whole and in any split", () => {
    fc.assert(
      fc.property(
        fc.array(requestArb, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat()),
        (xs, cuts) => {
          const buf = Buffer.concat(xs.map((x) => encodePolicyRequest(x)));
          const whole = decodePolicyRequests(buf, ROOMY);
          assert.deepEqual(entries(whole.requests), entries(xs));
          assert.equal(whole.consumed, buf.length);
          assert.deepEqual(entries(feed(splitAt(buf, cuts), ROOMY).requests), entries(xs));
        },
      ),
    );
  });

  // Bytes that matter to the codec, mixed with anything.
  const byteArb = fc.oneof(fc.constantFrom(0x0a, 0x3d, 0x00, 0x0d, 0xc3, 0xff), fc.nat(255));
  const limitsArb = fc.constantFrom(SMALL, DEFAULT_POLICY_LIMITS);

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
      fc.property(requestArb, mutationArb, limitsArb, (x, mutations, limits) => {
        expectOnlyProtocolErrors(mutate([...encodePolicyRequest(x)], mutations), limits);
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

function expectOnlyProtocolErrors(buf: Buffer, limits: PolicyLimits): void {
  try {
    const { requests, consumed } = decodePolicyRequests(buf, limits);
    assert.ok(consumed <= buf.length);
    assert.ok(buf.length - consumed < limits.maxRequestBytes, "unfinished part stays bounded");
    for (const r of requests) assert.ok(r.size >= 1 && r.size <= limits.maxAttributes);
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

describe("encodePolicyReply", () => {
  const cases = [
    { action: "OK", wire: "action=OK\n\n" },
    { action: "DUNNO", wire: "action=DUNNO\n\n" },
    {
      action: "DEFER_IF_PERMIT 4.7.1 Service unavailable - try again later",
      wire: "action=DEFER_IF_PERMIT 4.7.1 Service unavailable - try again later\n\n",
    },
  ];
  for (const c of cases) {
    it(`encodes ${c.action}`, () => {
      assert.equal(encodePolicyReply(c.action).toString("utf8"), c.wire);
    });
  }

  for (const action of ["", "OK\n", "OK\r", "OK\nDUNNO", "O\0K", "OK\ud800"]) {
    it(`refuses ${JSON.stringify(action)} as our own bug, not a ProtocolError`, () => {
      assert.throws(
        () => encodePolicyReply(action),
        (err: unknown) => err instanceof Error && !(err instanceof ProtocolError),
      );
    });
  }
});

describe("encodePolicyRequest", () => {
  const bad: [string, Record<string, string>][] = [
    ["no attributes", {}],
    ["empty name", { "": "x" }],
    ["= in name", { "a=b": "x" }],
    ["LF in value", { a: "x\ny" }],
    ["NUL in value", { a: "x\0" }],
    ["lone surrogate", { a: "\udc00" }],
  ];
  for (const [name, attrs] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(() => encodePolicyRequest(attrs), /policy (attribute|request)/);
    });
  }
});
