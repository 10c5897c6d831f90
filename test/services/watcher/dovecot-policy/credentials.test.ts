import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  credentialsMatch,
  parsePolicyCredentials,
} from "../../../../services/watcher/dovecot-policy/credentials.ts";

const basic = (s: string) => `Basic ${Buffer.from(s).toString("base64")}`;

describe("parsePolicyCredentials", () => {
  it("takes Dovecot's two forms of auth_policy_server_api_header", () => {
    assert.deepEqual(parsePolicyCredentials("X-API-Key: secret", undefined).apiHeader, {
      name: "x-api-key",
      value: "secret",
    });
    assert.deepEqual(parsePolicyCredentials("secret", undefined).apiHeader, {
      name: "x-api-key",
      value: "secret",
    });
    assert.deepEqual(parsePolicyCredentials("Authorization: Bearer t0k", undefined).apiHeader, {
      name: "authorization",
      value: "Bearer t0k",
    });
  });
  it("builds the Basic value Dovecot sends for user:pass@ in the URL", () => {
    assert.equal(
      parsePolicyCredentials(undefined, "dovecot:s3cr:et").basic,
      basic("dovecot:s3cr:et"),
    );
  });
  for (const [api, auth] of [
    ["Bad Name: x", undefined],
    ["X-API-Key:", undefined],
    ["", undefined],
    [undefined, "nocolon"],
    [undefined, ":password"],
  ] as const) {
    it(`rejects ${JSON.stringify(api ?? auth)}`, () => {
      assert.throws(() => parsePolicyCredentials(api, auth), /expected/);
    });
  }
});

describe("credentialsMatch", () => {
  const both = parsePolicyCredentials("X-API-Key: secret", "dovecot:pw");
  const table: [string, Record<string, string>, boolean][] = [
    ["both right", { "x-api-key": "secret", authorization: basic("dovecot:pw") }, true],
    ["key wrong", { "x-api-key": "Secret", authorization: basic("dovecot:pw") }, false],
    ["key missing", { authorization: basic("dovecot:pw") }, false],
    ["password wrong", { "x-api-key": "secret", authorization: basic("dovecot:px") }, false],
    ["basic missing", { "x-api-key": "secret" }, false],
    [
      "key a prefix of the secret",
      { "x-api-key": "secre", authorization: basic("dovecot:pw") },
      false,
    ],
  ];
  for (const [name, headers, ok] of table) {
    it(`${name} -> ${ok}`, () => {
      assert.equal(credentialsMatch(both, headers), ok);
    });
  }
  it("nothing configured admits everyone", () => {
    assert.equal(credentialsMatch(parsePolicyCredentials(undefined, undefined), {}), true);
  });
});
