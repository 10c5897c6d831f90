import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  commandOf,
  judgePolicyRequest,
  parsePolicyBody,
} from "../../../../services/watcher/dovecot-policy/codec.ts";
import type { PolicyOutcome } from "../../../../services/watcher/dovecot-policy/codec.ts";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import { DOVECOT_IMAP_REPORT } from "./fixtures.ts";

const report = (fields: Record<string, unknown>) =>
  JSON.stringify({ ...(JSON.parse(DOVECOT_IMAP_REPORT) as object), ...fields });

const login = (ip: string, service: string, user?: string): PolicyOutcome => ({
  kind: "login",
  report: { ip, ...(user === undefined ? {} : { user }), service, source: "dovecot-policy" },
});

const cases: { name: string; command?: string; body: string; outcome: PolicyOutcome }[] = [
  {
    name: "Dovecot 2.3.19.1 IMAP report",
    body: DOVECOT_IMAP_REPORT,
    outcome: login("127.0.0.1", "imap", "alice"),
  },
  {
    name: "POP3 report",
    body: report({ protocol: "pop3" }),
    outcome: login("127.0.0.1", "pop3", "alice"),
  },
  { name: "IPv6 remote", body: report({ remote: "::1" }), outcome: login("::1", "imap", "alice") },
  {
    name: "IPv4-mapped remote becomes IPv4",
    body: report({ remote: "::ffff:203.0.113.5" }),
    outcome: login("203.0.113.5", "imap", "alice"),
  },
  {
    name: "protocol in capitals",
    body: report({ protocol: "POP3" }),
    outcome: login("127.0.0.1", "pop3", "alice"),
  },
  {
    name: "empty login: no user",
    body: report({ login: "" }),
    outcome: login("127.0.0.1", "imap"),
  },
  {
    name: "custom template with user= instead of login=",
    body: JSON.stringify({
      user: "bob",
      remote: "192.0.2.1",
      protocol: "pop3",
      success: true,
      policy_reject: false,
      tls: true,
    }),
    outcome: login("192.0.2.1", "pop3", "bob"),
  },
  {
    name: "login with a control character: reported without the user",
    body: report({ login: "a\u0007b" }),
    outcome: login("127.0.0.1", "imap"),
  },
  {
    name: "extra, reordered and nested keys are tolerated",
    body: JSON.stringify({
      tls: true,
      a: { b: "c" },
      success: true,
      remote: "192.0.2.9",
      protocol: "imap",
      login: "x",
      local: "192.0.2.1",
      extra: [1],
    }),
    outcome: login("192.0.2.9", "imap", "x"),
  },
  {
    name: "wrong password: success false",
    body: report({ success: false }),
    outcome: { kind: "ignored", reason: "failed" },
  },
  {
    name: "no success field",
    body: report({ success: undefined }),
    outcome: { kind: "ignored", reason: "failed" },
  },
  {
    name: "policy_reject true",
    body: report({ policy_reject: true }),
    outcome: { kind: "ignored", reason: "policy-reject" },
  },
  {
    name: "SMTP SASL",
    body: report({ protocol: "smtp" }),
    outcome: { kind: "ignored", reason: "protocol" },
  },
  {
    name: "submission",
    body: report({ protocol: "submission" }),
    outcome: { kind: "ignored", reason: "protocol" },
  },
  {
    name: "managesieve",
    body: report({ protocol: "sieve" }),
    outcome: { kind: "ignored", reason: "protocol" },
  },
  {
    name: "no protocol",
    body: report({ protocol: "" }),
    outcome: { kind: "ignored", reason: "protocol" },
  },
  {
    name: "remote unavailable",
    body: report({ remote: "" }),
    outcome: { kind: "ignored", reason: "no-remote" },
  },
  {
    name: "remote not an address",
    body: report({ remote: "example.org" }),
    outcome: { kind: "ignored", reason: "bad-remote" },
  },
  {
    name: "command=allow",
    command: "allow",
    body: DOVECOT_IMAP_REPORT,
    outcome: { kind: "ignored", reason: "not-report" },
  },
  {
    name: "no command",
    command: "",
    body: DOVECOT_IMAP_REPORT,
    outcome: { kind: "ignored", reason: "not-report" },
  },
];

describe("judgePolicyRequest(parsePolicyBody(...))", () => {
  for (const c of cases) {
    it(c.name, () => {
      const command = c.command === undefined ? "report" : c.command || undefined;
      assert.deepEqual(judgePolicyRequest(command, parsePolicyBody(c.body)), c.outcome);
    });
  }
});

describe("parsePolicyBody", () => {
  it("decodes every field it knows", () => {
    const body = parsePolicyBody(report({ local: "192.0.2.1" }));
    assert.deepEqual(
      { ...body },
      {
        login: "alice",
        remote: "127.0.0.1",
        local: "192.0.2.1",
        protocol: "imap",
        success: true,
        policyReject: false,
        tls: false,
        sessionId: "RkamOl1hNJh/AAAB",
      },
    );
  });
  const invalid: [string, string, RegExp][] = [
    ["not JSON", "{", /not JSON/],
    ["empty body", "", /not JSON/],
    ["array", "[]", /not a JSON object/],
    ["null", "null", /not a JSON object/],
    ["success as a string", report({ success: "yes" }), /"success" must be a boolean/],
    ["remote as a number", report({ remote: 2130706433 }), /"remote" must be a string/],
    ["login as an object", report({ login: { a: 1 } }), /"login" must be a string/],
  ];
  for (const [name, body, error] of invalid) {
    it(`rejects ${name}`, () => {
      assert.throws(
        () => parsePolicyBody(body),
        (err: unknown) => err instanceof ProtocolError && error.test(err.message),
      );
    });
  }
  it("arbitrary text or JSON: only ProtocolError", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
        try {
          judgePolicyRequest("report", parsePolicyBody(text));
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("commandOf", () => {
  const table: [string, string | undefined][] = [
    ["/?command=report", "report"],
    ["/?command=allow", "allow"],
    ["/policy?x=1&command=report", "report"],
    ["/policy?x=1&&command=report", "report"],
    ["/", undefined],
    ["/?commands=report", undefined],
  ];
  for (const [target, command] of table) {
    it(`${target} -> ${command ?? "none"}`, () => {
      assert.equal(commandOf(target), command);
    });
  }
});
