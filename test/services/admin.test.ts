// The admin commands through the real binary against a real nats-server: setup, grant, leases,
// revoke, check, events, doctor. Human output is asserted where an operator reads it, JSON where
// a script would, and every exit status that means something.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { CLI, relaylease } from "../support/cli.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";

describe("admin commands", () => {
  let server: TestNatsServer;
  let env: Record<string, string>;
  let nc: NatsConnection;

  before(async () => {
    server = await startTestNatsServer();
    env = { RELAYLEASE_NATS_URL: server.url, RELAYLEASE_LEASE_TTL: "10m" };
    const setup = await relaylease(["setup"], env);
    assert.equal(setup.code, 0, setup.stderr);
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc.close();
    await server.cleanup();
  });

  it("setup reports a changed setting and applies it", async () => {
    const r = await relaylease(["setup", "--lease-ttl", "20m", "--ack-wait", "10s"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /consumer RELAY_LOGINS\/authorizer: ack_wait 30s -> 10s/);
    assert.match(r.stdout, /bucket relay-leases: max_age 10m -> 20m/);
    assert.equal(
      (await relaylease(["setup", "--lease-ttl", "20m", "--ack-wait", "10s"], env)).stdout,
      "nothing to change\n",
    );
  });

  it("grant writes a lease that check and leases show", async () => {
    const g = await relaylease(["grant", "198.51.100.20", "--ttl", "5m", "--user", "bob"], env);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(g.stdout, "198.51.100.20 (key v4.198.51.100.20): created, lease of 5m\n");
    const again = await relaylease(["grant", "198.51.100.20", "--ttl", "1m"], env);
    assert.match(again.stdout, /: kept, lease of 1m/, "a shorter grant keeps the longer lease");

    const c = await relaylease(["check", "198.51.100.20"], env);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /leased until .*user bob, admin via admin/);
    assert.match(c.stdout, /^policy +RCPT postmaster@remote\.example +OK +accept leased$/m);
    assert.match(c.stdout, /^milter +connect +ACCEPT +accept leased$/m);
    assert.match(c.stdout, /^socketmap +lookup +OK \d+ +accept leased$/m);
    assert.match(c.stdout, /^whoson +QUERY +\+bob +accept leased$/m);

    const table = await relaylease(["leases"], env);
    assert.match(table.stdout, /^ADDRESS\s+USER\s+SERVICE\s+SOURCE\s+WATCHER\s+EXPIRES\s+LEFT$/m);
    assert.match(table.stdout, /^198\.51\.100\.20\s+bob\s+admin\s+admin\s+admin\s+\S+Z\s+\d+s$/m);
    const json = JSON.parse(
      (await relaylease(["leases", "--json", "--user", "bob"], env)).stdout,
    ) as {
      ip: string;
      user: string;
    }[];
    assert.deepEqual(
      json.map((l) => [l.ip, l.user]),
      [["198.51.100.20", "bob"]],
    );
    assert.deepEqual(
      JSON.parse((await relaylease(["leases", "--json", "--user", "nobody"], env)).stdout),
      [],
    );
  });

  it("grant refuses a never-lease address with exit status 1", async () => {
    const r = await relaylease(["grant", "100.64.1.2"], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /100\.64\.1\.2 is cgnat; it can never hold a lease/);
    assert.equal((await relaylease(["grant", "198.51.100.21", "--ttl", "soon"], env)).code, 2);
  });

  it("revoke removes a lease and an older login cannot bring it back", async () => {
    await relaylease(["grant", "198.51.100.30", "--ttl", "5m"], env);
    const r = await relaylease(["revoke", "198.51.100.30"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "revoked 198.51.100.30 (key v4.198.51.100.30)\n");
    assert.equal((await relaylease(["check", "198.51.100.30"], env)).code, 1);
    const late = await relaylease(["leases", "--ip", "198.51.100.30"], env);
    assert.equal(late.stdout, "no leases\n");
  });

  it("revoke --user revokes each of the user's leases", async () => {
    await relaylease(["grant", "198.51.100.40", "--user", "carol"], env);
    await relaylease(["grant", "2001:db8::40", "--user", "carol"], env);
    const r = await relaylease(["revoke", "--user", "carol"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^revoked user carol: 2 lease\(s\)$/m);
    assert.equal((await relaylease(["leases", "--user", "carol"], env)).stdout, "no leases\n");
    assert.equal((await relaylease(["revoke"], env)).code, 2, "revoke needs an address or --user");
  });

  it("events prints the login stream and stops when caught up", async () => {
    const publisher = new LoginPublisher(jetstream(nc), "pop-9");
    await publisher.publish(
      { ip: "192.0.2.99", user: "dave", service: "pop3", source: "http" },
      "evt-1",
    );
    const r = await relaylease(["events", "--since", "5m"], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\S+Z {2}pop-9 {2}192\.0\.2\.99 {2}dave {2}pop3 {2}http {2}evt-1$/m);
    const json = (await relaylease(["events", "--json"], env)).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id: string });
    assert.ok(json.some((e) => e.id === "evt-1"));
  });

  it("events --follow prints events as they come, until interrupted", async () => {
    const follower = spawn(
      process.execPath,
      [CLI, "events", "--follow", "--json", "--since", "1s"],
      {
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    follower.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => follower.once("exit", resolve));
    try {
      const publisher = new LoginPublisher(jetstream(nc), "pop-9");
      // Published until the follower shows one: it may not have subscribed yet at the first.
      for (let i = 0; !out.includes('"id":"evt-follow-'); i++) {
        if (i === 50) assert.fail(`no event printed: ${out}`);
        await publisher.publish(
          { ip: "192.0.2.98", user: "erin", service: "imap", source: "http" },
          `evt-follow-${i}`,
        );
        await sleep(200);
      }
      assert.match(out, /"ip":"192\.0\.2\.98","user":"erin","service":"imap"/);
    } finally {
      follower.kill("SIGTERM");
    }
    assert.equal(await exited, 0, "a signal ends --follow cleanly");
  });

  it("doctor passes on a provisioned server and fails without the bucket", async () => {
    const ok = await relaylease(["doctor"], env);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^ok\s+server\s+nats-server 2\.\d+\.\d+, JetStream API level \d+$/m);
    assert.match(ok.stdout, /^ok\s+clock\s+/m);
    assert.match(ok.stdout, /^warn\s+authorizers\s+no heartbeat/m);
    const missing = await relaylease(["doctor", "--json", "--bucket", "elsewhere"], env);
    assert.equal(missing.code, 1);
    const findings = JSON.parse(missing.stdout) as { check: string; status: string }[];
    assert.equal(findings.find((f) => f.check === "bucket")?.status, "FAIL");
    const down = await relaylease(["doctor"], { RELAYLEASE_NATS_URL: "nats://127.0.0.1:1" });
    assert.equal(down.code, 1);
    assert.match(down.stdout, /^FAIL\s+connection\s+nats:\/\/127\.0\.0\.1:1: /m);
  });
});
