import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DEFAULT_WHOSON_LIMITS,
  decodeWhosonDatagram,
  decodeWhosonReplies,
  decodeWhosonReplyDatagram,
  decodeWhosonRequests,
  encodeWhosonReply,
  encodeWhosonRequest,
} from "../../../../services/milter/whoson/codec.ts";
import type {
  WhosonLimits,
  WhosonReply,
  WhosonRequest,
} from "../../../../services/milter/whoson/codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";

const { maxLineBytes } = DEFAULT_WHOSON_LIMITS;
const SMALL: WhosonLimits = { maxLineBytes: 16 };
const q = (verb: string, ...args: string[]): WhosonRequest => ({ verb, args });

interface Valid {
  name: string;
  input: string | Buffer;
  requests: WhosonRequest[];
  /** Bytes of an unfinished request left after the complete ones. */
  rest?: number;
  limits?: WhosonLimits;
}

const valid: Valid[] = [
  {
    name: "QUERY, CRLF (libwhoson, gowhoson)",
    input: "QUERY 192.0.2.1\r\n\r\n",
    requests: [q("QUERY", "192.0.2.1")],
  },
  { name: "bare LF", input: "QUERY 192.0.2.1\n\n", requests: [q("QUERY", "192.0.2.1")] },
  {
    name: "verb in lower case",
    input: "query 192.0.2.1\r\n\r\n",
    requests: [q("QUERY", "192.0.2.1")],
  },
  { name: "IPv6", input: "QUERY 2001:db8::1\r\n\r\n", requests: [q("QUERY", "2001:db8::1")] },
  {
    name: "blanks and tabs",
    input: "  QUERY \t 192.0.2.1  \r\n\r\n",
    requests: [q("QUERY", "192.0.2.1")],
  },
  { name: "no argument", input: "QUERY\r\n\r\n", requests: [q("QUERY")] },
  {
    name: "LOGIN with user data",
    input: "LOGIN 192.0.2.1 alice smith\r\n\r\n",
    requests: [q("LOGIN", "192.0.2.1", "alice", "smith")],
  },
  { name: "QUIT", input: "QUIT\r\n\r\n", requests: [q("QUIT")] },
  { name: "a line of blanks", input: "   \r\n\r\n", requests: [q("")] },
  {
    name: "UTF-8 user data",
    input: "LOGIN 192.0.2.1 jörg\r\n\r\n",
    requests: [q("LOGIN", "192.0.2.1", "jörg")],
  },
  {
    name: "empty lines before a request are skipped",
    input: "\r\n\n\r\nQUIT\r\n\r\n",
    requests: [q("QUIT")],
  },
  { name: "empty lines alone", input: "\r\n\r\n", requests: [] },
  {
    name: "three pipelined requests",
    input: "QUERY 192.0.2.1\r\n\r\nQUERY 192.0.2.2\r\n\r\nQUIT\r\n\r\n",
    requests: [q("QUERY", "192.0.2.1"), q("QUERY", "192.0.2.2"), q("QUIT")],
  },
  { name: "unfinished line", input: "QUERY 192.0", requests: [], rest: 11 },
  { name: "line without its empty line", input: "QUERY 192.0.2.1\r\n", requests: [], rest: 17 },
  { name: "empty line half there", input: "QUERY 192.0.2.1\r\n\r", requests: [], rest: 18 },
  {
    name: "complete then unfinished",
    input: "QUIT\r\n\r\nQUERY",
    requests: [q("QUIT")],
    rest: 5,
  },
  {
    name: "line of exactly maxLineBytes",
    input: `QUERY ${"x".repeat(maxLineBytes - 6)}\r\n\r\n`,
    requests: [q("QUERY", "x".repeat(maxLineBytes - 6))],
  },
  {
    name: "line of exactly a small limit",
    input: "QUERY 192.0.2.10\r\n\r\n",
    requests: [q("QUERY", "192.0.2.10")],
    limits: SMALL,
  },
];

interface Invalid {
  name: string;
  input: string | Buffer;
  error: RegExp;
  limits?: WhosonLimits;
}

const invalid: Invalid[] = [
  { name: "HTTP probe", input: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", error: /second line/ },
  {
    name: "two commands without the empty line",
    input: "QUERY a\r\nQUERY b\r\n\r\n",
    error: /second line/,
  },
  { name: "second line still arriving", input: "QUERY a\r\nQ", error: /second line/ },
  {
    name: "TLS ClientHello",
    input: Buffer.from([0x16, 0x03, 0x01, 0x00]),
    error: /control byte 0x16/,
  },
  { name: "NUL", input: "QUERY 1\0\r\n\r\n", error: /control byte 0x00/ },
  { name: "NUL still arriving", input: "QUE\0", error: /control byte 0x00/ },
  { name: "bare CR line ending", input: "QUERY 1.2.3.4\rQUIT", error: /control byte 0x0d/ },
  { name: "DEL", input: "QUERY \x7f\r\n\r\n", error: /control byte 0x7f/ },
  { name: "ESC", input: "QUERY \x1b[2J\r\n\r\n", error: /control byte 0x1b/ },
  { name: "invalid UTF-8", input: Buffer.from("QUERY \xff\r\n\r\n", "latin1"), error: /UTF-8/ },
  {
    name: "overlong UTF-8",
    input: Buffer.from("QUERY \xc0\xaf\r\n\r\n", "latin1"),
    error: /UTF-8/,
  },
  {
    name: "line over maxLineBytes, terminated",
    input: `QUERY ${"x".repeat(maxLineBytes - 5)}\r\n\r\n`,
    error: /longer than/,
  },
  {
    name: "line over maxLineBytes, still arriving",
    input: `QUERY ${"x".repeat(maxLineBytes)}`,
    error: /longer than/,
  },
  {
    name: "over a small limit",
    input: "QUERY 192.0.2.100\r\n",
    error: /longer than 16/,
    limits: SMALL,
  },
  { name: "bad after good", input: "QUIT\r\n\r\nGET / HTTP/1.0\r\nX", error: /second line/ },
];

/** Feeds `chunks` as a connection would, keeping what decode did not consume. */
function feed(
  chunks: Buffer[],
  limits?: WhosonLimits,
): { requests: WhosonRequest[]; rest: number } {
  const requests: WhosonRequest[] = [];
  let buf = Buffer.alloc(0);
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    const out = decodeWhosonRequests(buf, limits);
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

function isProtocolError(message: RegExp) {
  return (err: unknown) => err instanceof ProtocolError && message.test(err.message);
}

describe("decodeWhosonRequests: valid input", () => {
  for (const c of valid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      const whole = decodeWhosonRequests(buf, c.limits);
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

describe("decodeWhosonRequests: invalid input", () => {
  for (const c of invalid) {
    it(c.name, () => {
      const buf = bytesOf(c.input);
      assert.throws(() => decodeWhosonRequests(buf, c.limits), isProtocolError(c.error));
      // A UTF-8 error shows once its line is complete, whichever way the bytes arrive; the
      // other checks may fire on a different part first when bytes trickle in.
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

describe("decodeWhosonRequests: memory stays bounded", () => {
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
        decodeWhosonRequests(buf);
      }
    }, /longer than/);
    assert.equal(buf.length, maxLineBytes + 1);
  });

  it("empty lines forever are consumed, never kept", () => {
    const { requests, consumed } = decodeWhosonRequests(Buffer.alloc(65536, "\n"));
    assert.deepEqual(requests, []);
    assert.equal(consumed, 65536);
  });
});

describe("decodeWhosonDatagram", () => {
  const good: [string, WhosonRequest][] = [
    ["QUERY 192.0.2.1\r\n\r\n", q("QUERY", "192.0.2.1")],
    ["QUERY 192.0.2.1\r\n", q("QUERY", "192.0.2.1")],
    ["QUERY 192.0.2.1", q("QUERY", "192.0.2.1")],
    ["query 192.0.2.1\n\n", q("QUERY", "192.0.2.1")],
    ["LOGOUT 192.0.2.1\r\n\r\n", q("LOGOUT", "192.0.2.1")],
  ];
  for (const [wire, request] of good) {
    it(`reads ${JSON.stringify(wire)}`, () => {
      assert.deepEqual(decodeWhosonDatagram(Buffer.from(wire)), request);
    });
  }

  const bad: [string, string | Buffer, RegExp][] = [
    ["empty", "", /empty/],
    ["only line endings", "\r\n\r\n", /empty/],
    ["two requests", "QUERY a\r\n\r\nQUERY b\r\n\r\n", /more than one line/],
    ["a third line ending", "QUERY a\r\n\r\n\r\n", /more than one line/],
    ["a second line", "QUERY a\r\nHost: x\r\n\r\n", /more than one line/],
    ["NUL", "QUERY \0", /control/],
    ["too long", `QUERY ${"1".repeat(maxLineBytes)}`, /longer than/],
    ["invalid UTF-8", Buffer.from("QUERY \xfe", "latin1"), /UTF-8/],
  ];
  for (const [name, wire, error] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(() => decodeWhosonDatagram(bytesOf(wire)), isProtocolError(error));
    });
  }

  it("random datagrams: a request or a ProtocolError, never anything else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        try {
          decodeWhosonDatagram(Buffer.from(bytes));
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

// Words: no blanks, no control characters, no lone surrogates; verbs upper case ASCII.
const wordArb = fc
  .string({ unit: "grapheme", minLength: 1, maxLength: 12 })
  .map((s) => s.replace(/[\s\p{Cc}]/gu, ""))
  .filter((s) => s !== "");
const verbArb = fc.stringMatching(/^[A-Z]{1,8}$/);
const requestArb = fc
  .tuple(verbArb, fc.array(wordArb, { maxLength: 4 }))
  .map(([verb, args]) => ({ verb, args }));
const ROOMY: WhosonLimits = { maxLineBytes: 1024 };

describe("whoson requests: properties", () => {
  it("decode(encode(x)) is x, whole, in any split, and as a datagram", () => {
    fc.assert(
      fc.property(
        fc.array(requestArb, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat()),
        (xs, cuts) => {
          const buf = Buffer.concat(xs.map(encodeWhosonRequest));
          const whole = decodeWhosonRequests(buf, ROOMY);
          assert.deepEqual(whole.requests, xs);
          assert.equal(whole.consumed, buf.length);
          assert.deepEqual(feed(splitAt(buf, cuts), ROOMY).requests, xs);
          for (const x of xs)
            assert.deepEqual(decodeWhosonDatagram(encodeWhosonRequest(x), ROOMY), x);
        },
      ),
    );
  });

  // Bytes that matter to the codec, mixed with anything.
  const byteArb = fc.oneof(fc.constantFrom(0x0a, 0x0d, 0x20, 0x09, 0x00, 0xc3, 0xff), fc.nat(255));
  const limitsArb = fc.constantFrom(SMALL, DEFAULT_WHOSON_LIMITS);

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
        expectOnlyProtocolErrors(mutate([...encodeWhosonRequest(x)], mutations), limits);
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

function expectOnlyProtocolErrors(buf: Buffer, limits: WhosonLimits): void {
  try {
    const { consumed } = decodeWhosonRequests(buf, limits);
    assert.ok(consumed <= buf.length);
    // At most a command line with its CRLF and the start of the empty line are left.
    assert.ok(buf.length - consumed <= 2 * limits.maxLineBytes + 3, "unfinished part bounded");
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
  }
}

describe("encodeWhosonRequest", () => {
  it("writes the command line and the empty line", () => {
    assert.equal(
      encodeWhosonRequest(q("QUERY", "192.0.2.1")).toString(),
      "QUERY 192.0.2.1\r\n\r\n",
    );
  });

  for (const [name, request] of [
    ["an empty verb", q("")],
    ["a blank in a word", q("QUERY", "a b")],
    ["an empty argument", q("QUERY", "")],
    ["CR in a word", q("QUERY\r")],
    ["a lone surrogate", q("QUERY", "\ud800")],
  ] as const) {
    it(`refuses ${name}`, () => {
      assert.throws(() => encodeWhosonRequest(request), /cannot encode/);
    });
  }
});

describe("whoson replies", () => {
  const cases: [WhosonReply, string][] = [
    [{ status: "+", text: "alice" }, "+alice\r\n\r\n"],
    [{ status: "+", text: "" }, "+\r\n\r\n"],
    [{ status: "-", text: "Not Logged in" }, "-Not Logged in\r\n\r\n"],
    [{ status: "*", text: "Access denied" }, "*Access denied\r\n\r\n"],
    [{ status: "+", text: "jörg" }, "+jörg\r\n\r\n"],
  ];
  for (const [reply, wire] of cases) {
    it(`encodes ${JSON.stringify(reply)}, and reads it back over TCP and UDP`, () => {
      const bytes = encodeWhosonReply(reply);
      assert.equal(bytes.toString("utf8"), wire);
      assert.deepEqual(decodeWhosonReplies(bytes).replies, [reply]);
      assert.deepEqual(decodeWhosonReplyDatagram(bytes), reply);
    });
  }

  for (const text of ["a\r\nb", "a\nb", "a\0", "\ud800", "\x1b[31m"]) {
    it(`refuses the text ${JSON.stringify(text)} as our own bug`, () => {
      assert.throws(
        () => encodeWhosonReply({ status: "+", text }),
        (err: unknown) => err instanceof Error && !(err instanceof ProtocolError),
      );
    });
  }

  for (const wire of ["OK\r\n\r\n", "alice\r\n\r\n", "+a\r\n+b\r\n\r\n"]) {
    it(`our client refuses ${JSON.stringify(wire)}`, () => {
      assert.throws(() => decodeWhosonReplies(Buffer.from(wire)), ProtocolError);
    });
  }

  const replyArb = fc
    .tuple(
      fc.constantFrom("+" as const, "-" as const, "*" as const),
      fc.string({ unit: "grapheme", maxLength: 40 }),
    )
    .map(([status, text]) => ({ status, text: text.replace(/\p{Cc}/gu, "") }));

  it("decode(encode(reply)) is reply", () => {
    fc.assert(
      fc.property(fc.array(replyArb, { minLength: 1, maxLength: 5 }), (replies) => {
        const buf = Buffer.concat(replies.map(encodeWhosonReply));
        assert.deepEqual(decodeWhosonReplies(buf, ROOMY).replies, replies);
      }),
    );
  });
});
