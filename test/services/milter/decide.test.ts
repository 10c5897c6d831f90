import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { leaseKey, parseAddress, parseNetworkList } from "../../../shared/address.ts";
import type { Lease } from "../../../shared/lease.ts";
import {
  DEFAULT_DECISION_CONFIG,
  decide,
  isLocalDomain,
  recipientDomain,
} from "../../../services/milter/decide.ts";
import type { DecisionConfig, RelayRequest } from "../../../services/milter/decide.ts";
import { loadTranscripts, replay, requestOf } from "../../support/transcript.ts";
import type { FrontDoor } from "../../support/transcript.ts";

const TRANSCRIPTS = loadTranscripts(join(import.meta.dirname, "transcripts"));

/** The decision itself, verdict and reason: the strictest door. */
const decideDoor: FrontDoor = {
  name: "decide",
  expected: (e) => `${e.verdict} ${e.reason}`,
  ask: (world, query) => {
    const d = decide(world.lookup, requestOf(world, query), world.now, world.config());
    return `${d.verdict} ${d.reason}`;
  },
};

describe("golden transcripts through decide()", () => {
  for (const t of TRANSCRIPTS) {
    it(t.name, async () => {
      const { expected, actual, asked } = await replay(t, decideDoor);
      assert.equal(actual, expected);
      assert.ok(asked > 0, "a transcript asks something");
    });
  }

  it("cover every verdict and reason", () => {
    const seen = new Set<string>();
    for (const t of TRANSCRIPTS) {
      for (const s of t.steps)
        if (s.kind === "ask") seen.add(`${s.expect.verdict} ${s.expect.reason}`);
    }
    for (const want of [
      "accept trusted",
      "accept leased",
      "accept authenticated",
      "continue trusted",
      "continue leased",
      "continue local-recipient",
      "continue not-leased",
      "continue no-address",
      "continue stale",
      "reject relay-denied",
      "reject no-address",
      "reject stale",
      "tempfail stale",
    ]) {
      assert.ok(seen.has(want), `no transcript expects "${want}"`);
    }
  });
});

const NOW = Date.UTC(2026, 0, 1);
const LEASED = "203.0.113.5";
const lease: Lease = {
  ip: LEASED,
  service: "imap",
  source: "test",
  watcher: "w",
  loginAt: NOW,
  expiresAt: NOW + 60_000,
  event: "e1",
};
const leases = {
  lookup: (key: string, now: number) =>
    key === leaseKey(parseAddress(LEASED)) && lease.expiresAt > now ? lease : undefined,
};

describe("decide()", () => {
  it("returns the lease it found, for the span link", () => {
    const d = decide(
      leases,
      { clientAddress: LEASED, stage: "connect" },
      NOW,
      DEFAULT_DECISION_CONFIG,
    );
    assert.ok(d.reason === "leased");
    assert.equal(d.lease, lease);
  });

  it("asks about the client alone without a stage, with the fail-closed default config", () => {
    assert.deepEqual(decide(leases, { clientAddress: "198.51.100.7" }, NOW), {
      verdict: "continue",
      reason: "not-leased",
    });
  });

  const cases: {
    name: string;
    request: RelayRequest;
    config?: Partial<DecisionConfig>;
    want: string;
  }[] = [
    {
      name: "empty address is no address",
      request: { clientAddress: "", stage: "rcpt", recipient: "a@b.example" },
      want: "reject no-address",
    },
    {
      name: "empty auth is not authenticated",
      request: { clientAddress: "198.51.100.7", stage: "rcpt", authenticated: "" },
      want: "reject relay-denied",
    },
    {
      name: "empty mailer is no mailer",
      request: {
        clientAddress: "198.51.100.7",
        stage: "rcpt",
        rcptMailer: "",
        recipient: "a@example.org",
      },
      config: { localDomains: new Set(["example.org"]) },
      want: "continue local-recipient",
    },
    {
      name: "auth at connect is ignored",
      request: { clientAddress: "198.51.100.7", stage: "connect", authenticated: "alice" },
      want: "continue not-leased",
    },
    {
      name: "trusted beats stale at rcpt",
      request: { clientAddress: "10.0.0.1", stage: "rcpt" },
      config: { trustedNetworks: parseNetworkList("10.0.0.0/8"), stale: true },
      want: "accept trusted",
    },
    {
      name: "recipient over 512 characters is not read",
      request: {
        clientAddress: "198.51.100.7",
        stage: "rcpt",
        recipient: `${"a".repeat(600)}@example.org`,
      },
      config: { localDomains: new Set(["example.org"]) },
      want: "reject relay-denied",
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const d = decide(leases, c.request, NOW, { ...DEFAULT_DECISION_CONFIG, ...c.config });
      assert.equal(`${d.verdict} ${d.reason}`, c.want);
    });
  }
});

describe("recipientDomain()", () => {
  const cases: [string | undefined, string | undefined][] = [
    ["a@example.org", "example.org"],
    ["<a@Example.ORG>", "example.org"],
    ["a@example.org.", "example.org"],
    ["a@[192.0.2.1]", "[192.0.2.1]"],
    ["a.b+c@x.example", "x.example"],
    [undefined, undefined],
    ["", undefined],
    ["postmaster", undefined],
    ["@example.org", undefined],
    ["a@", undefined],
    ["a@.", undefined],
    ["a%b@example.org", undefined],
    ["b!a@example.org", undefined],
    ['"a@b"@example.org', undefined],
    ["<@relay.example:a@example.org>", undefined],
  ];
  for (const [input, want] of cases) {
    it(`${JSON.stringify(input)} -> ${String(want)}`, () => {
      assert.equal(recipientDomain(input), want);
    });
  }
});

describe("isLocalDomain()", () => {
  const local = new Set(["example.org", ".example.net"]);
  const cases: [string, boolean][] = [
    ["example.org", true],
    ["sub.example.org", false],
    ["example.net", false],
    ["a.example.net", true],
    ["a.b.example.net", true],
    ["notexample.net", false],
    ["org", false],
  ];
  for (const [domain, want] of cases) {
    it(`${domain}: ${want}`, () => {
      assert.equal(isLocalDomain(domain, local), want);
    });
  }
});
