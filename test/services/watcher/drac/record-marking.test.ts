import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  DEFAULT_RECORD_LIMITS,
  decodeRecords,
  encodeRecord,
} from "../../../../services/watcher/drac/record-marking.ts";
import type { RecordLimits } from "../../../../services/watcher/drac/record-marking.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { CALL_V1, hex } from "./golden.ts";

const SMALL: RecordLimits = { maxRecordBytes: 16, maxFragments: 3 };

interface Valid {
  name: string;
  input: Buffer;
  records: Buffer[];
  /** Bytes of an unfinished record left over. */
  rest?: number;
  limits?: RecordLimits;
}

const valid: Valid[] = [
  {
    name: "drac-rpc.md 2.4: a 44-byte v1 call as one fragment",
    input: Buffer.concat([hex("80 00 00 2c"), CALL_V1]),
    records: [CALL_V1],
  },
  {
    name: "one record in three fragments",
    input: hex("00 00 00 02 61 62  00 00 00 00  80 00 00 01 63"),
    records: [Buffer.from("abc")],
  },
  {
    name: "two records back to back",
    input: hex("80 00 00 01 61  80 00 00 02 62 63"),
    records: [Buffer.from("a"), Buffer.from("bc")],
  },
  { name: "empty record", input: hex("80 00 00 00"), records: [Buffer.alloc(0)] },
  { name: "header only, data to come", input: hex("80 00 00 05 61"), records: [], rest: 5 },
  { name: "partial header", input: hex("80 00"), records: [], rest: 2 },
  {
    name: "complete record, then a first fragment",
    input: hex("80 00 00 01 61  00 00 00 01 62"),
    records: [Buffer.from("a")],
    rest: 5,
  },
  {
    name: "record of exactly maxRecordBytes in maxFragments fragments",
    input: Buffer.concat([
      hex("00 00 00 08"),
      Buffer.alloc(8, 1),
      hex("00 00 00 04"),
      Buffer.alloc(4, 2),
      hex("80 00 00 04"),
      Buffer.alloc(4, 3),
    ]),
    records: [Buffer.concat([Buffer.alloc(8, 1), Buffer.alloc(4, 2), Buffer.alloc(4, 3)])],
    limits: SMALL,
  },
];

const invalid: { name: string; input: Buffer; error: RegExp; limits?: RecordLimits }[] = [
  {
    name: "huge fragment length: refused on its header, data never awaited",
    input: hex("ff ff ff ff"),
    error: /record longer than 8192/,
  },
  {
    name: "fragment of maxRecordBytes + 1",
    input: hex("80 00 00 11"),
    error: /record longer than 16/,
    limits: SMALL,
  },
  {
    name: "fragments adding up past maxRecordBytes",
    input: Buffer.concat([hex("00 00 00 0a"), Buffer.alloc(10), hex("00 00 00 07")]),
    error: /record longer/,
    limits: SMALL,
  },
  {
    name: "zero-length fragments past maxFragments",
    input: hex("00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00"),
    error: /more than 3 fragments/,
    limits: SMALL,
  },
  {
    name: "a bad record after a good one",
    input: hex("80 00 00 01 61  ff ff ff ff"),
    error: /record longer/,
  },
];

/** Feeds chunks as a connection would, keeping what was not consumed; `peak` is the most kept. */
function feed(
  chunks: Buffer[],
  limits?: RecordLimits,
): { records: Buffer[]; rest: number; peak: number } {
  const records: Buffer[] = [];
  let buf = Buffer.alloc(0);
  let peak = 0;
  for (const chunk of chunks) {
    buf = Buffer.concat([buf, chunk]);
    const out = decodeRecords(buf, limits);
    records.push(...out.records);
    buf = buf.subarray(out.consumed);
    peak = Math.max(peak, buf.length);
  }
  return { records, rest: buf.length, peak };
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

describe("decodeRecords: valid input", () => {
  for (const c of valid) {
    it(c.name, () => {
      const whole = decodeRecords(c.input, c.limits);
      assert.deepEqual(whole.records, c.records);
      assert.equal(c.input.length - whole.consumed, c.rest ?? 0);
      const oneByOne = feed(byteByByte(c.input), c.limits);
      assert.deepEqual(oneByOne.records, c.records, "byte by byte");
      assert.equal(oneByOne.rest, c.rest ?? 0);
      fc.assert(
        fc.property(fc.array(fc.nat()), (cuts) => {
          const split = feed(splitAt(c.input, cuts), c.limits);
          assert.deepEqual(split.records, c.records);
          assert.equal(split.rest, c.rest ?? 0);
        }),
        { numRuns: 50 },
      );
    });
  }
});

describe("decodeRecords: invalid input", () => {
  for (const c of invalid) {
    it(c.name, () => {
      const isError = (err: unknown) => err instanceof ProtocolError && c.error.test(err.message);
      assert.throws(() => decodeRecords(c.input, c.limits), isError);
      assert.throws(() => feed(byteByByte(c.input), c.limits), isError, "byte by byte");
    });
  }
});

describe("encodeRecord", () => {
  it("frames a call as drac-rpc.md 2.4 shows", () => {
    assert.deepEqual(encodeRecord(CALL_V1).subarray(0, 4), hex("80 00 00 2c"));
  });
  it("splits into fragments on request", () => {
    assert.deepEqual(encodeRecord(Buffer.from("abc"), 2), hex("00 00 00 02 61 62  80 00 00 01 63"));
  });
  it("decodeRecords(encodeRecord(x)) is x, in any fragment size and any split", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 64, max: 400 }),
        fc.array(fc.nat()),
        (payloads, fragmentBytes, cuts) => {
          const records = payloads.map((p) => Buffer.from(p));
          const wire = Buffer.concat(records.map((r) => encodeRecord(r, fragmentBytes)));
          const out = feed(splitAt(wire, cuts));
          assert.deepEqual(out.records, records);
          assert.equal(out.rest, 0);
        },
      ),
    );
  });
});

describe("properties", () => {
  const { maxRecordBytes, maxFragments } = DEFAULT_RECORD_LIMITS;
  /** An unfinished record: its payload, a header per fragment, and at most 3 bytes of the next. */
  const bound = maxRecordBytes + 4 * maxFragments + 3;

  it("arbitrary bytes in arbitrary chunks: only ProtocolError, and memory stays bounded", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 2048 }), { maxLength: 20 }), (chunks) => {
        let buf = Buffer.alloc(0);
        for (const chunk of chunks) {
          buf = Buffer.concat([buf, chunk]);
          try {
            buf = buf.subarray(decodeRecords(buf).consumed);
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
            return; // the connection would be closed here
          }
          assert.ok(buf.length <= bound, `kept ${buf.length} bytes`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("a peer trickling zero-length fragments is cut off within the bound", () => {
    const empty = () => hex("00 00 00 00");
    const held = feed(Array.from({ length: maxFragments }, empty));
    assert.equal(held.rest, 4 * maxFragments);
    assert.throws(() => feed(Array.from({ length: maxFragments + 1 }, empty)), ProtocolError);
  });

  it("a record just under the limit, trickled in, is held and then delivered", () => {
    const payload = Buffer.alloc(maxRecordBytes, 7);
    const out = feed(splitAt(encodeRecord(payload, 1024), [100, 5000, 8000]));
    assert.equal(out.records.length, 1);
    assert.ok(out.peak <= bound);
  });
});
