// Line framing of the log follower: every case replayed whole, byte by byte and in random
// splits; the line-length budget; a property test against a plain reference split.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { LineSplitter } from "../../../../services/watcher/log/lines.ts";

const MAX = 16;

interface Case {
  name: string;
  input: string | Buffer;
  lines: string[];
  overlong?: number;
  /** Bytes held of an unfinished line at the end. */
  pending?: number;
}

const cases: Case[] = [
  { name: "one line", input: "hello\n", lines: ["hello"] },
  { name: "two lines", input: "a\nb\n", lines: ["a", "b"] },
  { name: "empty lines", input: "\n\n", lines: ["", ""] },
  { name: "CR LF", input: "a\r\nb\r\n", lines: ["a", "b"] },
  { name: "lone CR kept inside", input: "a\rb\n", lines: ["a\rb"] },
  { name: "unfinished line held", input: "a\nbc", lines: ["a"], pending: 2 },
  { name: "UTF-8", input: "jörg ☃\n", lines: ["jörg ☃"] },
  {
    name: "invalid UTF-8 replaced",
    input: Buffer.from([0x61, 0xff, 0x62, 0x0a]),
    lines: ["a\ufffdb"],
  },
  { name: "line of exactly MAX bytes", input: `${"x".repeat(MAX)}\n`, lines: ["x".repeat(MAX)] },
  {
    name: "MAX bytes plus CR LF",
    input: `${"x".repeat(MAX)}\r\nz\n`,
    lines: ["x".repeat(MAX), "z"],
  },
  {
    name: "one byte over MAX is skipped",
    input: `a\n${"x".repeat(MAX + 1)}\nb\n`,
    lines: ["a", "b"],
    overlong: 1,
  },
  {
    name: "multi-byte characters counted in bytes",
    input: `${"é".repeat(MAX / 2)}\n${"é".repeat(MAX / 2 + 1)}\nok\n`,
    lines: ["é".repeat(MAX / 2), "ok"],
    overlong: 1,
  },
  {
    name: "unfinished over-long line is not held",
    input: `a\n${"x".repeat(5 * MAX)}`,
    lines: ["a"],
    overlong: 1,
    pending: 0,
  },
];

function run(chunks: Buffer[]): { lines: string[]; s: LineSplitter } {
  const s = new LineSplitter(MAX);
  const lines = chunks.flatMap((c) => s.push(c).strings());
  return { lines, s };
}

function check(c: Case, chunks: Buffer[]): void {
  const { lines, s } = run(chunks);
  assert.deepEqual(lines, c.lines);
  assert.equal(s.overlong, c.overlong ?? 0);
  if (c.pending !== undefined) assert.equal(s.pendingBytes, c.pending);
  assert.ok(s.pendingBytes <= MAX + 1);
}

describe("LineSplitter", () => {
  for (const c of cases) {
    const bytes = Buffer.isBuffer(c.input) ? c.input : Buffer.from(c.input);
    it(`${c.name}: whole`, () => {
      check(c, [bytes]);
    });
    it(`${c.name}: byte by byte`, () => {
      check(
        c,
        [...bytes].map((b) => Buffer.from([b])),
      );
    });
    it(`${c.name}: random splits`, () => {
      fc.assert(
        fc.property(fc.array(fc.nat(bytes.length), { maxLength: 6 }), (cuts) => {
          const at = [0, ...cuts.sort((a, b) => a - b), bytes.length];
          check(
            c,
            at.slice(1).map((end, i) => bytes.subarray(at[i], end)),
          );
        }),
      );
    });
  }

  it("flush returns an unfinished line, then nothing", () => {
    const s = new LineSplitter(MAX);
    assert.deepEqual(s.push(Buffer.from("a\nbc\r")).strings(), ["a"]);
    assert.equal(s.flush(), "bc");
    assert.equal(s.flush(), undefined);
  });

  it("flush drops an over-long unfinished line", () => {
    const s = new LineSplitter(MAX);
    s.push(Buffer.from("x".repeat(MAX * 2)));
    assert.equal(s.flush(), undefined);
  });

  it("skipToNextLine drops the bytes before the next LF", () => {
    const s = new LineSplitter(MAX);
    s.skipToNextLine();
    assert.deepEqual(s.push(Buffer.from("tail of a line\nnext\n")).strings(), ["next"]);
    assert.equal(s.overlong, 0);
  });

  it("property: same lines as a plain split, whatever the chunking", () => {
    const line = fc.string({ unit: "grapheme", maxLength: 24 }).filter((l) => !/[\r\n]/.test(l));
    fc.assert(
      fc.property(
        fc.array(line, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (ls, cuts) => {
          const bytes = Buffer.from(ls.map((l) => `${l}\n`).join(""));
          const at = [
            0,
            ...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b),
            bytes.length,
          ];
          const { lines, s } = run(at.slice(1).map((end, i) => bytes.subarray(at[i], end)));
          const kept = ls.filter((l) => Buffer.byteLength(l) <= MAX);
          assert.deepEqual(lines, kept);
          assert.equal(s.overlong, ls.length - kept.length);
        },
      ),
    );
  });
});
