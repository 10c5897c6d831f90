import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  ConfigError,
  flagOf,
  formatDuration,
  loadConfig,
  parseDuration,
  parseFlags,
} from "../../shared/config.ts";
import { authorizerSettings } from "../../services/authorizer/settings.ts";
import { watcherSettings } from "../../services/watcher/settings.ts";

describe("parseDuration", () => {
  const valid: [string, number][] = [
    ["30m", 1_800_000],
    ["90s", 90_000],
    ["1h30m", 5_400_000],
    ["1500ms", 1500],
    ["2", 2000],
    ["0.5", 500],
    ["1.5s", 1500],
    ["2h", 7_200_000],
  ];
  for (const [text, ms] of valid) {
    it(`reads ${text}`, () => {
      assert.equal(parseDuration(text), ms);
    });
  }
  for (const text of ["banana", "", "30x", "m30", "-5s", "1h 30m", "30mm", "s"]) {
    it(`refuses ${JSON.stringify(text)}`, () => {
      assert.throws(() => parseDuration(text), /not a duration/);
    });
  }
  it("formats back what it reads", () => {
    for (const [, ms] of valid) assert.equal(parseDuration(formatDuration(ms)), ms);
  });
});

describe("loadConfig", () => {
  const load = (env: Record<string, string>, args: string[] = []) =>
    loadConfig(authorizerSettings, { env, flags: parseFlags(args, authorizerSettings).flags });

  it("applies defaults", () => {
    const c = load({});
    assert.equal(c.leaseTtl, 1_800_000);
    assert.deepEqual(c.natsUrl, ["nats://127.0.0.1:4222"]);
    assert.equal(c.bucket, "relay-leases");
    assert.equal(c.degradedTtl, false);
    assert.equal(c.natsCreds, undefined);
  });

  it("takes a flag over the environment over the file", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "relaylease-config-"));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify({ RELAYLEASE_LEASE_TTL: "10m", RELAYLEASE_BUCKET: "b1" }));
    assert.equal(load({ RELAYLEASE_CONFIG: file }).leaseTtl, 600_000);
    assert.equal(load({ RELAYLEASE_CONFIG: file }).bucket, "b1");
    assert.equal(load({ RELAYLEASE_CONFIG: file, RELAYLEASE_LEASE_TTL: "5m" }).leaseTtl, 300_000);
    const c = load({ RELAYLEASE_LEASE_TTL: "5m" }, ["--config", file, "--lease-ttl=2m"]);
    assert.equal(c.leaseTtl, 120_000);
  });

  const bad: [string, Record<string, string>, RegExp][] = [
    [
      "a TTL that is no duration",
      { RELAYLEASE_LEASE_TTL: "banana" },
      /RELAYLEASE_LEASE_TTL.*"banana".*duration/,
    ],
    [
      "a TTL under a second",
      { RELAYLEASE_LEASE_TTL: "500ms" },
      /RELAYLEASE_LEASE_TTL.*at least 1s/,
    ],
    ["a bucket name with a dot", { RELAYLEASE_BUCKET: "a.b" }, /RELAYLEASE_BUCKET/],
    [
      "a listen address without port",
      { RELAYLEASE_METRICS_LISTEN: "localhost" },
      /RELAYLEASE_METRICS_LISTEN/,
    ],
    [
      "a boolean that is not",
      { RELAYLEASE_DEGRADED_TTL: "maybe" },
      /RELAYLEASE_DEGRADED_TTL.*true or false/,
    ],
    ["a log level that is not", { LOG_LEVEL: "loud" }, /LOG_LEVEL.*one of/],
    ["a NATS URL with a path", { RELAYLEASE_NATS_URL: "nats://h:4222/x" }, /RELAYLEASE_NATS_URL/],
  ];
  for (const [name, env, message] of bad) {
    it(`refuses ${name}, naming the setting`, () => {
      assert.throws(
        () => load(env),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      );
    });
  }

  it("refuses a config file that is not a JSON object", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "relaylease-config-"));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const file = join(dir, "config.json");
    writeFileSync(file, "[1]");
    assert.throws(() => load({ RELAYLEASE_CONFIG: file }), /RELAYLEASE_CONFIG.*JSON object/);
    assert.throws(() => load({ RELAYLEASE_CONFIG: join(dir, "absent.json") }), /cannot read/);
  });
});

describe("parseFlags", () => {
  it("splits flags and positional arguments", () => {
    const { flags, positional } = parseFlags(
      ["203.0.113.5", "--watcher-id", "pop-1", "--http-listen=127.0.0.1:1"],
      watcherSettings,
    );
    assert.deepEqual(positional, ["203.0.113.5"]);
    assert.equal(flags.get("--watcher-id"), "pop-1");
    assert.equal(flags.get("--http-listen"), "127.0.0.1:1");
  });
  it("takes a bare boolean flag as true", () => {
    assert.equal(
      parseFlags(["--degraded-ttl"], watcherSettings).flags.get("--degraded-ttl"),
      "true",
    );
    assert.equal(
      parseFlags(["--degraded-ttl", "false"], watcherSettings).flags.get("--degraded-ttl"),
      "false",
    );
  });
  it("refuses an unknown flag and a flag without value", () => {
    assert.throws(
      () => parseFlags(["--lease-tll", "5m"], watcherSettings),
      /unknown option --lease-tll/,
    );
    assert.throws(() => parseFlags(["--watcher-id"], watcherSettings), /needs a value/);
  });
  it("derives flags from variable names", () => {
    assert.equal(flagOf("RELAYLEASE_NATS_TLS_CA"), "--nats-tls-ca");
    assert.equal(flagOf("LOG_LEVEL"), "--log-level");
  });
});
