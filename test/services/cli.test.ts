// The CLI through the real entry point, as an operator runs it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { relaylease } from "../support/cli.ts";
import {
  debianNatsServerBinary,
  startTestNatsServer,
  type TestNatsServer,
} from "../support/nats-server.ts";

describe("relaylease CLI", () => {
  it("lists its commands", async () => {
    const r = await relaylease(["--help"]);
    assert.equal(r.code, 0);
    for (const c of ["watcher", "authorizer", "milter", "dev", "setup", "check"]) {
      assert.match(r.stdout, new RegExp(`^  ${c} `, "m"));
    }
  });

  it("lists a command's settings", async () => {
    const r = await relaylease(["authorizer", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--lease-ttl  RELAYLEASE_LEASE_TTL \[default: 30m\]/);
  });

  it("exits 2 naming the setting on a bad value", async () => {
    const r = await relaylease(["authorizer"], { RELAYLEASE_LEASE_TTL: "banana" });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /RELAYLEASE_LEASE_TTL \(--lease-ttl\): "banana" is not valid/);
  });

  it("exits 2 on an unknown command or flag", async () => {
    assert.equal((await relaylease(["relay"])).code, 2);
    const r = await relaylease(["milter", "--polcy-listen", "x"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option --polcy-listen/);
  });
});

describe("relaylease setup and check against nats-server >= 2.11", () => {
  let server: TestNatsServer;
  before(async () => {
    server = await startTestNatsServer();
  });
  after(() => server.cleanup());

  it("creates the stream, consumer and bucket once", async () => {
    const env = { RELAYLEASE_NATS_URL: server.url };
    const first = await relaylease(["setup"], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /created stream RELAY_LOGINS/);
    assert.match(first.stdout, /created consumer RELAY_LOGINS\/authorizer/);
    assert.match(first.stdout, /created bucket relay-leases/);
    const again = await relaylease(["setup"], env);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, "nothing to change\n");
  });

  it("check exits 1 for an address without a lease, 2 for one that is no address", async () => {
    const none = await relaylease(["check", "192.0.2.1"], { RELAYLEASE_NATS_URL: server.url });
    assert.equal(none.code, 1, none.stderr);
    assert.match(
      none.stdout,
      /192\.0\.2\.1 \(key v4\.192\.0\.2\.1\): no lease\npolicy +RCPT postmaster@remote\.example +DUNNO +reject relay-denied\n/,
    );
    const bad = await relaylease(["check", "mail.example"], { RELAYLEASE_NATS_URL: server.url });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"mail\.example"/);
  });
});

describe("a NATS server without per-message TTL", async () => {
  const debian = await debianNatsServerBinary();
  let server: TestNatsServer | undefined;
  before(async () => {
    if (debian !== undefined) server = await startTestNatsServer({ binary: debian });
  });
  after(() => server?.cleanup());

  it(
    "is refused at start, naming the version found and the minimum",
    { skip: debian === undefined && "Debian's nats-server 2.9 is not installed" },
    async () => {
      const r = await relaylease(["setup"], { RELAYLEASE_NATS_URL: server?.url ?? "" });
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /nats-server 2\.9\.\d+ .*needs nats-server >= 2\.11\.2.*RELAYLEASE_DEGRADED_TTL/,
      );
    },
  );
});
