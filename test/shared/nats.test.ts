// The NATS connection every role shares: settings mapped onto client options (a misconfiguration
// is a ConfigError naming the setting), user/password against a real server that demands them,
// and the start-up capability check against the pinned server and Debian's 2.9, which has no
// per-message TTL.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { AuthorizationError, connect, nkeys, type NatsConnection } from "@nats-io/transport-node";
import { ConfigError, loadConfig } from "../../shared/config.ts";
import { createLogger } from "../../shared/log.ts";
import {
  CapabilityError,
  checkCapability,
  connectNats,
  connectOptions,
  type NatsConfig,
} from "../../shared/nats.ts";
import { natsSettings } from "../../shared/settings.ts";
import {
  debianNatsServerBinary,
  startTestNatsServer,
  type TestNatsServer,
} from "../support/nats-server.ts";

const log = createLogger("silent");

/** A NatsConfig as the role would load it; never the default URL, which is the shared server. */
function natsConfig(env: Record<string, string>): NatsConfig {
  return loadConfig(natsSettings, {
    env: { RELAYLEASE_NATS_URL: "nats://127.0.0.1:1", ...env },
    flags: new Map(),
  });
}

describe("connectOptions", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "relaylease-nats-test-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const servers: { name: string; url: string; want: string[] }[] = [
    { name: "one server", url: "nats://10.0.0.1:4222", want: ["nats://10.0.0.1:4222"] },
    {
      name: "a comma-separated list, spaces trimmed",
      url: "nats://a:4222, tls://b:4443 ,c",
      want: ["nats://a:4222", "tls://b:4443", "c"],
    },
  ];
  for (const c of servers) {
    it(`servers: ${c.name}`, () => {
      const opts = connectOptions(natsConfig({ RELAYLEASE_NATS_URL: c.url }), "authorizer");
      assert.deepEqual(opts.servers, c.want);
    });
  }

  const inboxes: { name: string; want: string }[] = [
    { name: "authorizer", want: "_INBOX_authorizer" },
    { name: "relaylease-milter", want: "_INBOX_relaylease-milter" },
    { name: "watcher mx1.example.org", want: "_INBOX_watcher_mx1_example_org" },
    { name: "admin>*", want: "_INBOX_admin__" },
  ];
  for (const c of inboxes) {
    it(`inbox prefix and name for role ${JSON.stringify(c.name)}`, () => {
      const opts = connectOptions(natsConfig({}), c.name);
      assert.equal(opts.name, c.name);
      assert.equal(opts.inboxPrefix, c.want);
    });
  }

  it("a long-running role waits and reconnects forever; a one-shot command does not", () => {
    const persistent = connectOptions(natsConfig({}), "authorizer");
    assert.equal(persistent.waitOnFirstConnect, true);
    assert.equal(persistent.maxReconnectAttempts, -1);
    const oneShot = connectOptions(natsConfig({}), "admin", false);
    assert.equal(oneShot.waitOnFirstConnect, false);
    assert.equal(oneShot.maxReconnectAttempts, 0);
  });

  it("maps user and password; nothing else by default", () => {
    const plain = connectOptions(natsConfig({}), "authorizer");
    assert.equal(plain.user, undefined);
    assert.equal(plain.pass, undefined);
    assert.equal(plain.authenticator, undefined);
    assert.equal(plain.tls, undefined);
    const opts = connectOptions(
      natsConfig({ RELAYLEASE_NATS_USER: "alice", RELAYLEASE_NATS_PASSWORD: "s3cret" }),
      "authorizer",
    );
    assert.equal(opts.user, "alice");
    assert.equal(opts.pass, "s3cret");
  });

  it("reads a creds file into an authenticator", async () => {
    const user = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    const jwt = "eyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln";
    const file = path.join(dir, "user.creds");
    await writeFile(
      file,
      `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n` +
        `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
    );
    const opts = connectOptions(natsConfig({ RELAYLEASE_NATS_CREDS: file }), "authorizer");
    const auth = opts.authenticator;
    assert.ok(typeof auth === "function", "no authenticator");
    const reply = auth("nonce") as unknown as Record<string, unknown>;
    assert.equal(reply["jwt"], jwt);
    assert.equal(reply["nkey"], user.getPublicKey());
  });

  it("a creds file that does not exist is a ConfigError naming RELAYLEASE_NATS_CREDS", () => {
    const missing = path.join(dir, "missing.creds");
    assert.throws(
      () => connectOptions(natsConfig({ RELAYLEASE_NATS_CREDS: missing }), "authorizer"),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, `not a ConfigError: ${String(err)}`);
        assert.match(err.message, /RELAYLEASE_NATS_CREDS/);
        assert.ok(err.message.includes(missing), err.message);
        return true;
      },
    );
  });

  const tls: {
    name: string;
    env: Record<string, string>;
    want?: { caFile?: string; certFile?: string; keyFile?: string };
    error?: RegExp;
  }[] = [
    {
      name: "CA only",
      env: { RELAYLEASE_NATS_TLS_CA: "/etc/ca.pem" },
      want: { caFile: "/etc/ca.pem", certFile: undefined, keyFile: undefined },
    },
    {
      name: "cert and key",
      env: { RELAYLEASE_NATS_TLS_CERT: "/c.pem", RELAYLEASE_NATS_TLS_KEY: "/k.pem" },
      want: { caFile: undefined, certFile: "/c.pem", keyFile: "/k.pem" },
    },
    {
      name: "cert without key",
      env: { RELAYLEASE_NATS_TLS_CERT: "/c.pem" },
      error: /RELAYLEASE_NATS_TLS_CERT.*RELAYLEASE_NATS_TLS_KEY/,
    },
    {
      name: "key without cert",
      env: { RELAYLEASE_NATS_TLS_CA: "/etc/ca.pem", RELAYLEASE_NATS_TLS_KEY: "/k.pem" },
      error: /RELAYLEASE_NATS_TLS_CERT.*RELAYLEASE_NATS_TLS_KEY/,
    },
  ];
  for (const c of tls) {
    it(`TLS: ${c.name}`, () => {
      const config = natsConfig(c.env);
      if (c.error !== undefined) {
        const error = c.error;
        assert.throws(
          () => connectOptions(config, "authorizer"),
          (err: unknown) => err instanceof ConfigError && error.test(err.message),
        );
        return;
      }
      assert.deepEqual(connectOptions(config, "authorizer").tls, c.want);
    });
  }
});

describe("connectNats with user and password", () => {
  let server: TestNatsServer;
  before(async () => {
    server = await startTestNatsServer({
      extraConfig: "authorization { users = [ { user: alice, password: s3cret } ] }",
    });
  });
  after(() => server.cleanup());

  const credentials = (password: string) =>
    natsConfig({
      RELAYLEASE_NATS_URL: server.url,
      RELAYLEASE_NATS_USER: "alice",
      RELAYLEASE_NATS_PASSWORD: password,
    });

  it("connects with the right password", async () => {
    const nc = await connectNats(credentials("s3cret"), "authorizer", log);
    try {
      assert.equal(nc.isClosed(), false);
      await nc.flush();
    } finally {
      await nc.close();
    }
  });

  it("fails with an authorization error on the wrong password", async () => {
    await assert.rejects(
      connect(connectOptions(credentials("wrong"), "authorizer", false)),
      (err: unknown) => {
        assert.ok(err instanceof AuthorizationError, `not an AuthorizationError: ${String(err)}`);
        assert.match(err.message, /authorization/i);
        return true;
      },
    );
  });

  it("fails with an authorization error without credentials", async () => {
    const config = natsConfig({ RELAYLEASE_NATS_URL: server.url });
    await assert.rejects(connect(connectOptions(config, "authorizer", false)), AuthorizationError);
  });

  it("finds per-message TTL on the pinned server", async () => {
    const nc = await connectNats(credentials("s3cret"), "authorizer", log);
    try {
      const capability = await checkCapability(nc, false, log);
      assert.ok(capability.apiLevel >= 1, `apiLevel ${capability.apiLevel}`);
      assert.equal(capability.perMessageTtl, true);
      assert.equal(capability.serverVersion, nc.info?.version);
    } finally {
      await nc.close();
    }
  });
});

describe("checkCapability on Debian's nats-server 2.9", () => {
  let binary: string | undefined;
  let server: TestNatsServer | undefined;
  let nc: NatsConnection | undefined;

  before(async () => {
    binary = await debianNatsServerBinary();
    if (binary === undefined) return;
    server = await startTestNatsServer({ binary });
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc?.close();
    await server?.cleanup();
  });

  it("refuses without degraded mode, naming the version and RELAYLEASE_DEGRADED_TTL", async (t) => {
    if (nc === undefined) {
      t.skip("no nats-server 2.9 at /usr/sbin/nats-server");
      return;
    }
    const version = nc.info?.version ?? "";
    assert.match(version, /^2\.9\./);
    await assert.rejects(checkCapability(nc, false, log), (err: unknown) => {
      assert.ok(err instanceof CapabilityError, `not a CapabilityError: ${String(err)}`);
      assert.ok(err.message.includes(version), err.message);
      assert.match(err.message, /RELAYLEASE_DEGRADED_TTL/);
      return true;
    });
  });

  it("runs degraded when allowed: no per-message TTL", async (t) => {
    if (nc === undefined) {
      t.skip("no nats-server 2.9 at /usr/sbin/nats-server");
      return;
    }
    const capability = await checkCapability(nc, true, log);
    assert.equal(capability.perMessageTtl, false);
    assert.equal(capability.apiLevel, 0);
    assert.match(capability.serverVersion, /^2\.9\./);
  });
});
