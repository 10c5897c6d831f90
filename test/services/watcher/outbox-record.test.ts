// The outbox's record and position codecs: pure functions over bytes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { encodeRecord, scanRecords } from "../../../services/watcher/outbox-record.ts";
import { decodePosition, encodePosition } from "../../../services/watcher/outbox-segment.ts";

const json = (text: string) => Buffer.from(text, "utf8");
const good = encodeRecord(7, json('{"id":"e7"}'));

describe("outbox record codec", () => {
  it("writes one line: crc32, seq, JSON", () => {
    // CRC-32 of `7 {"id":"e7"}`, as zlib (and Python's zlib.crc32) computes it.
    assert.equal(good.toString("latin1"), 'bd9d2676 7 {"id":"e7"}\n');
  });

  const cases: { name: string; bytes: Buffer; seqs: number[]; corrupt: number; torn: number }[] = [
    { name: "empty", bytes: Buffer.alloc(0), seqs: [], corrupt: 0, torn: 0 },
    { name: "one record", bytes: good, seqs: [7], corrupt: 0, torn: 0 },
    {
      name: "two records",
      bytes: Buffer.concat([good, encodeRecord(8, json("{}"))]),
      seqs: [7, 8],
      corrupt: 0,
      torn: 0,
    },
    {
      name: "record without its LF (torn)",
      bytes: good.subarray(0, good.length - 1),
      seqs: [],
      corrupt: 0,
      torn: good.length - 1,
    },
    {
      name: "half a record after a good one",
      bytes: Buffer.concat([good, good.subarray(0, 9)]),
      seqs: [7],
      corrupt: 0,
      torn: 9,
    },
    {
      name: "zeros after a good one (a torn write on some file systems)",
      bytes: Buffer.concat([good, Buffer.alloc(512)]),
      seqs: [7],
      corrupt: 0,
      torn: 512,
    },
    {
      name: "a flipped bit in the JSON",
      bytes: Buffer.from(good).fill(0x78, 14, 15),
      seqs: [],
      corrupt: 1,
      torn: 0,
    },
    {
      name: "a changed seq",
      bytes: Buffer.from(good.toString("latin1").replace(" 7 ", " 8 "), "latin1"),
      seqs: [],
      corrupt: 1,
      torn: 0,
    },
    {
      name: "upper-case crc",
      bytes: Buffer.from(good.toString("latin1").toUpperCase(), "latin1"),
      seqs: [],
      corrupt: 1,
      torn: 0,
    },
    {
      name: "blank lines and garbage between records",
      bytes: Buffer.concat([good, Buffer.from("\n\ngarbage\n"), encodeRecord(9, json("{}"))]),
      seqs: [7, 9],
      corrupt: 3,
      torn: 0,
    },
    {
      name: "a seq of 17 digits",
      bytes: encodeRecord(12345678901234567, json("{}")),
      seqs: [],
      corrupt: 1,
      torn: 0,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const scan = scanRecords(c.bytes);
      assert.deepEqual(
        scan.records.map((r) => r.seq),
        c.seqs,
      );
      assert.equal(scan.corrupt, c.corrupt);
      assert.equal(scan.tornBytes, c.torn);
    });
  }

  it("scan(encode(records)) gives them back, and a cut anywhere keeps the whole ones", () => {
    const record = fc.record({
      seq: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      text: fc.string({ maxLength: 200, unit: "grapheme" }),
    });
    fc.assert(
      fc.property(fc.array(record, { maxLength: 20 }), fc.nat(), (records, cutAt) => {
        const encoded = records.map((r) => encodeRecord(r.seq, json(JSON.stringify(r.text))));
        const all = Buffer.concat(encoded);
        const scan = scanRecords(all);
        assert.deepEqual(
          scan.records.map((r) => [r.seq, JSON.parse(r.json.toString("utf8")) as string]),
          records.map((r) => [r.seq, r.text]),
        );
        const cut = all.length === 0 ? 0 : cutAt % (all.length + 1);
        let whole = 0;
        for (let end = 0; whole < encoded.length; whole++) {
          end += encoded[whole]?.length ?? 0;
          if (end > cut) break;
        }
        const partial = scanRecords(all.subarray(0, cut));
        assert.equal(partial.records.length, whole);
        assert.equal(partial.corrupt, 0);
      }),
    );
  });

  it("never throws on arbitrary bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const scan = scanRecords(Buffer.from(bytes));
        assert.ok(scan.tornBytes <= bytes.length);
      }),
    );
  });
});

describe("outbox position codec", () => {
  it("round-trips and has a fixed size", () => {
    for (const seq of [0, 1, 123456, Number.MAX_SAFE_INTEGER]) {
      const buf = encodePosition(seq);
      assert.equal(buf.length, 26);
      assert.equal(decodePosition(buf), seq);
    }
  });

  const bad: [string, Buffer][] = [
    ["empty (a file created just before a crash)", Buffer.alloc(0)],
    ["zeros", Buffer.alloc(26)],
    ["a changed digit", Buffer.from(encodePosition(42).toString("latin1").replace("42", "43"))],
    ["cut short", encodePosition(42).subarray(0, 20)],
    ["trailing bytes", Buffer.concat([encodePosition(42), Buffer.from("x")])],
  ];
  for (const [name, buf] of bad) {
    it(`is unreadable when ${name}`, () => {
      assert.equal(decodePosition(buf), undefined);
    });
  }
});
