// requiredTime reads RFC 3339 UTC times by arithmetic; the oracle here is the reading it
// replaced (a pattern, Date.parse, and a round trip through toISOString to refuse rolled-over
// times): both must accept, refuse and read alike.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { SchemaError, requiredTime } from "../../shared/schema.ts";

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

function oracle(text: string): { ms: number } | { error: string } {
  const ms = ISO_TIME.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 19) !== text.slice(0, 19)) {
    return { error: 'field "at" must be an RFC 3339 UTC time' };
  }
  return { ms };
}

function timeOutcome(text: string): { ms: number } | { error: string } {
  try {
    return { ms: requiredTime({ at: text }, "at") };
  } catch (err) {
    if (!(err instanceof SchemaError)) throw err;
    return { error: err.message };
  }
}

const TIMES: { text: string; valid: boolean }[] = [
  { text: "2024-05-01T12:30:00.000Z", valid: true },
  { text: "2024-05-01T12:30:00Z", valid: true },
  { text: "2024-05-01T12:30:00.5Z", valid: true },
  { text: "2024-05-01T12:30:00.123456789Z", valid: true },
  { text: "2024-05-01T12:30:00.9999Z", valid: true },
  { text: "2024-02-29T00:00:00Z", valid: true },
  { text: "2000-02-29T00:00:00Z", valid: true },
  { text: "0000-02-29T00:00:00Z", valid: true },
  { text: "0000-01-01T00:00:00Z", valid: true },
  { text: "1969-12-31T23:59:59.999Z", valid: true },
  { text: "9999-12-31T23:59:59.999Z", valid: true },
  { text: "2023-02-29T00:00:00Z", valid: false },
  { text: "1900-02-29T00:00:00Z", valid: false },
  { text: "2024-04-31T00:00:00Z", valid: false },
  { text: "2024-00-10T00:00:00Z", valid: false },
  { text: "2024-13-10T00:00:00Z", valid: false },
  { text: "2024-01-00T00:00:00Z", valid: false },
  { text: "2024-01-01T24:00:00Z", valid: false },
  { text: "2024-01-01T23:60:00Z", valid: false },
  { text: "2024-01-01T23:59:60Z", valid: false },
  { text: "2024-01-01T00:00:00.Z", valid: false },
  { text: "2024-01-01T00:00:00.1234567890Z", valid: false },
  { text: "2024-01-01T00:00:00", valid: false },
  { text: "2024-01-01t00:00:00z", valid: false },
  { text: "2024-01-01 00:00:00Z", valid: false },
  { text: "2024-01-01T00:00:00+00:00", valid: false },
  { text: "+02024-01-01T00:00:00Z", valid: false },
  { text: "2024-01-01T00:0a:00Z", valid: false },
  { text: "２024-01-01T00:00:00Z", valid: false },
];

describe("requiredTime", () => {
  for (const c of TIMES) {
    it(`${c.valid ? "reads" : "rejects"} ${c.text}, as Date.parse with a round trip does`, () => {
      const outcome = timeOutcome(c.text);
      assert.equal("ms" in outcome, c.valid);
      assert.deepEqual(outcome, oracle(c.text));
    });
  }

  it("rejects what is not a string, naming the field", () => {
    for (const v of [1, null, undefined, {}, ["2024-01-01T00:00:00Z"]]) {
      assert.throws(() => requiredTime({ at: v }, "at"), /field "at" must be an RFC 3339 UTC time/);
    }
  });

  it("reads every time toISOString writes with a four-digit year", () => {
    const timeArb = fc.integer({
      min: Date.parse("0000-01-01T00:00:00Z"),
      max: Date.parse("9999-12-31T23:59:59.999Z"),
    });
    fc.assert(
      fc.property(timeArb, (ms) => {
        assert.deepEqual(timeOutcome(new Date(ms).toISOString()), { ms });
      }),
      { numRuns: 2000 },
    );
  });

  it("agrees with the oracle on near-misses: any digits in each field, any fraction", () => {
    const two = fc.integer({ min: 0, max: 99 }).map((n) => String(n).padStart(2, "0"));
    const fraction = fc.oneof(
      fc.constant(""),
      fc.stringMatching(/^\.[0-9]{0,10}$/),
      fc.stringMatching(/^\.[0-9a-z]{1,4}$/),
    );
    const nearTime = fc
      .tuple(fc.integer({ min: 0, max: 9999 }), two, two, two, two, two, fraction)
      .map(
        ([y, mo, d, h, mi, s, f]) =>
          `${String(y).padStart(4, "0")}-${mo}-${d}T${h}:${mi}:${s}${f}Z`,
      );
    fc.assert(
      fc.property(nearTime, (text) => {
        assert.deepEqual(timeOutcome(text), oracle(text));
      }),
      { numRuns: 5000 },
    );
  });
});
