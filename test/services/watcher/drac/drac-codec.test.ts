import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { parseAddress } from "../../../../shared/address.ts";
import {
  DRACVERS,
  DRACVERS6,
  decodeAddStat,
  decodeDracAddArgs,
  encodeAddStat,
  encodeDracAddArgs,
  ipv6Bytes,
} from "../../../../services/watcher/drac/drac-codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { CALL_V1, CALL_V2, CALL_V2_UNSIGNED, hex } from "./golden.ts";

const words = (...w: string[]) => hex(w.join(" "));
const zeros = (n: number) => Array.from({ length: n }, () => "00 00 00 00");

const valid: { name: string; vers: number; args: Buffer; ip: string }[] = [
  { name: "v1 golden: 203.0.113.5", vers: DRACVERS, args: CALL_V1.subarray(40), ip: "203.0.113.5" },
  { name: "v1: 255.255.255.255", vers: DRACVERS, args: hex("ff ff ff ff"), ip: "255.255.255.255" },
  {
    name: "v1: 0.0.0.0 (not judged here)",
    vers: DRACVERS,
    args: hex("00 00 00 00"),
    ip: "0.0.0.0",
  },
  {
    name: "v2 golden, x86 sign-extended",
    vers: DRACVERS6,
    args: CALL_V2.subarray(40),
    ip: "2001:db8::5",
  },
  {
    name: "v2 golden, unsigned char",
    vers: DRACVERS6,
    args: CALL_V2_UNSIGNED.subarray(40),
    ip: "2001:db8::5",
  },
  {
    name: "v2: IPv4-mapped becomes IPv4",
    vers: DRACVERS6,
    args: words(
      ...zeros(10),
      "ff ff ff ff",
      "ff ff ff ff",
      "00 00 00 cb",
      "00 00 00 00",
      "00 00 00 71",
      "00 00 00 05",
    ),
    ip: "203.0.113.5",
  },
  {
    name: "v2: mixed forms in one argument",
    vers: DRACVERS6,
    args: words("ff ff ff fe", "00 00 00 80", ...zeros(13), "ff ff ff ff"),
    ip: "fe80::ff",
  },
];

const invalid: { name: string; vers: number; args: Buffer; error: RegExp }[] = [
  { name: "v1: empty", vers: DRACVERS, args: Buffer.alloc(0), error: /0 bytes, not 4/ },
  { name: "v1: truncated", vers: DRACVERS, args: hex("cb 00 71"), error: /3 bytes/ },
  {
    name: "v1: trailing bytes",
    vers: DRACVERS,
    args: hex("cb 00 71 05 00 00 00 00"),
    error: /8 bytes/,
  },
  {
    name: "v2: 16 raw bytes (opaque, not char[16])",
    vers: DRACVERS6,
    args: Buffer.alloc(16),
    error: /16 bytes, not 64/,
  },
  { name: "v2: truncated", vers: DRACVERS6, args: CALL_V2.subarray(40, 100), error: /60 bytes/ },
  {
    name: "v2: word 0x100",
    vers: DRACVERS6,
    args: words("00 00 01 00", ...zeros(15)),
    error: /ip_addr6\[0\] is 0x100/,
  },
  {
    name: "v2: sign extension of a byte under 0x80",
    vers: DRACVERS6,
    args: words(...zeros(3), "ff ff ff 7f", ...zeros(12)),
    error: /ip_addr6\[3\]/,
  },
  {
    name: "v2: a 32-bit value",
    vers: DRACVERS6,
    args: words(...zeros(15), "12 34 56 78"),
    error: /ip_addr6\[15\]/,
  },
];

describe("decodeDracAddArgs", () => {
  for (const c of valid) {
    it(c.name, () => {
      assert.equal(decodeDracAddArgs(c.vers, c.args).text, c.ip);
    });
  }
  for (const c of invalid) {
    it(`rejects ${c.name}`, () => {
      assert.throws(
        () => decodeDracAddArgs(c.vers, c.args),
        (err: unknown) => err instanceof ProtocolError && c.error.test(err.message),
      );
    });
  }
});

describe("encodeDracAddArgs", () => {
  it("writes the golden v1 and v2 arguments", () => {
    assert.deepEqual(
      encodeDracAddArgs(DRACVERS, parseAddress("203.0.113.5").bytes),
      CALL_V1.subarray(40),
    );
    const v6 = parseAddress("2001:db8::5").bytes;
    assert.deepEqual(encodeDracAddArgs(DRACVERS6, v6), CALL_V2.subarray(40));
    assert.deepEqual(encodeDracAddArgs(DRACVERS6, v6, false), CALL_V2_UNSIGNED.subarray(40));
  });
  it("v2 round trip for any 16 bytes, either char signedness", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.boolean(),
        (bytes, signed) => {
          const decoded = decodeDracAddArgs(DRACVERS6, encodeDracAddArgs(DRACVERS6, bytes, signed));
          assert.deepEqual(ipv6Bytes(decoded), bytes);
        },
      ),
    );
  });
  it("v1 round trip for any 4 bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (bytes) => {
        assert.deepEqual(
          decodeDracAddArgs(DRACVERS, encodeDracAddArgs(DRACVERS, bytes)).bytes,
          bytes,
        );
      }),
    );
  });
  it("arbitrary argument bytes: only ProtocolError", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(DRACVERS, DRACVERS6),
        fc.uint8Array({ maxLength: 80 }),
        (vers, a) => {
          try {
            decodeDracAddArgs(vers, Buffer.from(a));
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
  it("64 arbitrary bytes: only ProtocolError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), (a) => {
        try {
          decodeDracAddArgs(DRACVERS6, Buffer.from(a));
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("addstat", () => {
  it("is one word", () => {
    for (const stat of [0, 1, 2, 3]) assert.equal(decodeAddStat(encodeAddStat(stat)), stat);
    assert.throws(() => decodeAddStat(Buffer.alloc(3)), ProtocolError);
  });
});
