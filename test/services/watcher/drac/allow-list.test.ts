import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { parseAddress } from "../../../../shared/address.ts";
import {
  defaultAllowList,
  isAllowed,
  loadAllowList,
  parseAllowList,
} from "../../../../services/watcher/drac/allow-list.ts";

const cases: { name: string; text: string; networks: string[]; errors?: [number, RegExp][] }[] = [
  {
    name: "drac-rpc.md 4.2 sample",
    text: "# netmask         netaddr\n255.255.255.255   127.0.0.1\n255.255.255.0     192.0.2.0\n",
    networks: ["127.0.0.1/32", "192.0.2.0/24"],
  },
  {
    name: "blank lines, CRLF, tabs",
    text: "\r\n\t255.255.0.0\t10.1.0.0\r\n\n",
    networks: ["10.1.0.0/16"],
  },
  {
    name: "comment after the entry",
    text: "255.0.0.0 10.0.0.0   # the office\n",
    networks: ["10.0.0.0/8"],
  },
  { name: "mask 0.0.0.0 admits everyone", text: "0.0.0.0 0.0.0.0", networks: ["0.0.0.0/0"] },
  {
    name: "CIDR and bare addresses, IPv4 and IPv6",
    text: "192.0.2.0/25\n2001:db8::/32\n[2001:db8:1::]/48\n::1\n198.51.100.7\n",
    networks: ["192.0.2.0/25", "2001:db8::/32", "2001:db8:1::/48", "::1/128", "198.51.100.7/32"],
  },
  {
    name: "netaddr with host bits set: reported, never silently unmatched",
    text: "255.255.255.0 192.0.2.10\n",
    networks: [],
    errors: [[1, /host bits set, did you mean 192.0.2.0\/24/]],
  },
  {
    name: "bad lines reported with their numbers, good ones kept",
    text: [
      "255.255.255.255 127.0.0.1",
      "255.0.255.0 10.0.0.0",
      "255.255.255.0",
      "255.255.255.0 192.0.2.0 extra",
      "localhost",
      "255.255.255.0 2001:db8::",
      "010.0.0.0/8",
      "10.0.0.0/33",
      "255.255.255.256 10.0.0.0",
      "10.0.0.0/8",
    ].join("\n"),
    networks: ["127.0.0.1/32", "10.0.0.0/8"],
    errors: [
      [2, /not a contiguous/],
      [3, /without a netaddr/],
      [4, /expected "netmask netaddr"/],
      [5, /invalid network/],
      [6, /not an IPv4 dotted quad/],
      [7, /leading zero/],
      [8, /bad prefix/],
      [9, /not a contiguous/],
    ],
  },
  {
    name: "overlong line",
    text: `${"1".repeat(300)}\n`,
    networks: [],
    errors: [[1, /longer than 256/]],
  },
];

describe("parseAllowList", () => {
  for (const c of cases) {
    it(c.name, () => {
      const { list, errors } = parseAllowList(c.text);
      assert.deepEqual(
        list.networks.map((n) => n.text),
        c.networks,
      );
      const expected = c.errors ?? [];
      assert.equal(errors.length, expected.length, JSON.stringify(errors));
      expected.forEach(([line, re], i) => {
        const error = errors[i];
        assert.ok(error);
        assert.equal(error.line, line);
        assert.match(error.message, re);
      });
    });
  }
  it("never throws, whatever the text", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (text) => {
        parseAllowList(text);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("isAllowed", () => {
  const { list } = parseAllowList(
    "255.255.255.255 127.0.0.2\n255.255.255.0 192.0.2.0\n2001:db8::/32\n",
  );
  const table: [string, boolean][] = [
    ["127.0.0.2", true],
    ["127.0.0.1", false],
    ["127.0.0.3", false],
    ["192.0.2.200", true],
    ["192.0.3.1", false],
    ["::ffff:192.0.2.1", true],
    ["2001:db8:ffff::1", true],
    ["2001:db9::1", false],
  ];
  for (const [caller, allowed] of table) {
    it(`${caller} -> ${allowed ? "allowed" : "ADD_PERM"}`, () => {
      assert.equal(isAllowed(list, parseAddress(caller)), allowed);
    });
  }
  it("an unknown caller is never allowed", () => {
    assert.equal(isAllowed(list, undefined), false);
  });
});

describe("loadAllowList and the default", () => {
  it("a missing file means loopback plus this host's addresses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "relaylease-allow-"));
    try {
      const loaded = await loadAllowList(join(dir, "dracd.allow"));
      assert.equal(loaded.missing, true);
      assert.equal(isAllowed(loaded.list, parseAddress("127.0.0.1")), true);
      assert.equal(isAllowed(loaded.list, parseAddress("::1")), true);
      assert.equal(isAllowed(loaded.list, parseAddress("192.0.2.1")), false);
      writeFileSync(join(dir, "dracd.allow"), "255.255.255.255 127.0.0.2\nnonsense\n");
      const read = await loadAllowList(join(dir, "dracd.allow"));
      assert.equal(read.missing, false);
      assert.deepEqual(
        read.list.networks.map((n) => n.text),
        ["127.0.0.2/32"],
      );
      assert.equal(read.errors[0]?.line, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("an unreadable path is thrown, not defaulted", async () => {
    await assert.rejects(loadAllowList(tmpdir()), /EISDIR/);
  });
  it("defaultAllowList holds only single hosts", () => {
    for (const n of defaultAllowList().networks) assert.equal(n.prefix, n.family === 4 ? 32 : 128);
  });
});
