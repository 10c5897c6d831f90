import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../../../shared/config.ts";
import { DEFAULT_DECISION_CONFIG } from "../../../services/milter/decide.ts";
import { decisionConfigOf, milterSettings } from "../../../services/milter/settings.ts";

const load = (env: Record<string, string>) => loadConfig(milterSettings, { env, flags: new Map() });

describe("milter decision settings", () => {
  it("default to the fail-closed decision config, milter off", () => {
    const config = load({});
    assert.equal(config.milterListen, undefined);
    assert.equal(config.staleAfter, 60_000);
    assert.equal(config.rejectText.length > 0, true);
    assert.deepEqual(decisionConfigOf(config, false), { ...DEFAULT_DECISION_CONFIG });
  });

  it("parse every setting", () => {
    const config = load({
      RELAYLEASE_MILTER_LISTEN: "127.0.0.1:8891",
      RELAYLEASE_TRUSTED_NETWORKS: "127.0.0.0/8 [::1]/128, 10.0.0.0/8",
      RELAYLEASE_LOCAL_DOMAINS: "Example.ORG., .example.net localhost",
      RELAYLEASE_REMOTE_MAILERS: "SMTP,relay",
      RELAYLEASE_FAIL_MODE: "reject",
      RELAYLEASE_STALE_AFTER: "2m",
      RELAYLEASE_ACCEPT_AT: "rcpt",
      RELAYLEASE_REJECT_TEXT: "Relaying denied (100% sure)",
    });
    assert.equal(config.milterListen, "127.0.0.1:8891");
    assert.deepEqual(
      config.trustedNetworks.map((n) => n.text),
      ["127.0.0.0/8", "::1/128", "10.0.0.0/8"],
    );
    assert.deepEqual([...config.localDomains], ["example.org", ".example.net", "localhost"]);
    assert.deepEqual([...config.remoteMailers], ["smtp", "relay"]);
    assert.equal(config.failMode, "reject");
    assert.equal(config.staleAfter, 120_000);
    assert.equal(config.acceptAt, "rcpt");
    assert.equal(config.rejectText, "Relaying denied (100% sure)");
    assert.equal(decisionConfigOf(config, true).stale, true);
  });

  const bad: [string, string, RegExp][] = [
    ["RELAYLEASE_MILTER_LISTEN", "inet:8891@127.0.0.1", /host:port/],
    ["RELAYLEASE_TRUSTED_NETWORKS", "10.1.2.3/8", /CIDR/],
    ["RELAYLEASE_LOCAL_DOMAINS", "exa mple..org", /domain names/],
    ["RELAYLEASE_LOCAL_DOMAINS", "*.example.org", /leading dot/],
    ["RELAYLEASE_REMOTE_MAILERS", " , ", /mailer names/],
    ["RELAYLEASE_REMOTE_MAILERS", "smtp:[relay]", /mailer names/],
    ["RELAYLEASE_FAIL_MODE", "continue", /tempfail, reject/],
    ["RELAYLEASE_STALE_AFTER", "soon", /duration/],
    ["RELAYLEASE_ACCEPT_AT", "helo", /connect, rcpt/],
    ["RELAYLEASE_REJECT_TEXT", "550 5.7.1 No", /without the reply code/],
    ["RELAYLEASE_REJECT_TEXT", "line\r\nbreak", /printable ASCII/],
  ];
  for (const [env, value, form] of bad) {
    it(`refuse ${env}=${JSON.stringify(value)}, naming the setting and its form`, () => {
      assert.throws(
        () => load({ [env]: value }),
        (err: unknown) =>
          err instanceof ConfigError && err.message.startsWith(env) && form.test(err.message),
      );
    });
  }
});
