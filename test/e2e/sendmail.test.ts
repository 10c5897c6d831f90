// Real Sendmail daemons against relaylease's milter role (test/support/sendmail.ts): the classic
// DRAC sendmail.cf rule with its map pointed at relaylease's socketmap, and Sendmail's milter
// gate. A leased client relays, an unleased one is refused, local mail passes for everyone; with
// NATS gone past RELAYLEASE_STALE_AFTER (socketmap TEMP) and with relaylease down altogether
// (nothing listening), an unknown client never relays. Controls show why the K line must not
// carry -T<TMPF>: the same rule with it relays for anyone during the outage, and proto.m4's guard
// turns that into 451.
//
// Skipped, with the reason, where Sendmail cannot run: not root, no unshare, or no binary from
// scripts/install-sendmail.sh.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startMilter, type Milter } from "../../services/milter/milter.ts";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import {
  SENDMAIL_HOSTNAME,
  findSendmail,
  startSendmail,
  type SendmailDaemon,
  type SendmailOptions,
} from "../support/sendmail.ts";
import { SmtpClient } from "../support/smtp-client.ts";
import { waitFor } from "../support/wait.ts";

const LEASED = "127.0.0.2";
const UNLEASED = "127.0.0.3";
const REMOTE = "b@remote.example";
const LOCAL = `root@${SENDMAIL_HOSTNAME}`;

const RELAYED = /^250 2\.1\.5 /;
const RELAY_DENIED = /^550 5\.7\.1 <b@remote\.example>\.\.\. Relaying denied/;
const MILTER_DENIED = /^550 5\.7\.1 <b@remote\.example>\.\.\. Relaying denied: check your mail/;
// Sendmail prefixes `<addr>... ` to 5xx texts only.
const MILTER_DEFERRED = /^451 4\.7\.1 Relay check temporarily unavailable/;
const GUARD_DEFERRED = /^451 4\.3\.0 Temporary lookup failure/;
// F=T with the milter unreachable: Sendmail's own tempfail, at MAIL.
const MILTER_DOWN = /^mail: 451 4\.3\.2 Please try again later/;

const sendmail = await findSendmail();

describe("Sendmail with relaylease", { skip: sendmail.ok ? false : sendmail.reason }, () => {
  let nats: TestNatsServer;
  let nc: NatsConnection;
  let roles: Harness;
  let rolesStopped = false;
  let milter: Milter;
  const mta: Record<string, SendmailDaemon> = {};
  /** Undone in reverse order after the tests, as far as before() got. */
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    if (!sendmail.ok) return; // the suite is skipped; this narrows the type
    nats = await startTestNatsServer();
    cleanups.push(() => nats.cleanup());
    nc = await connect({ servers: nats.url });
    cleanups.push(async () => {
      if (!nc.isClosed()) await nc.close();
    });
    await provisionForTest(nc, {
      maxLeaseTtlMs: 600_000,
    });
    const config = roleConfig(nats.url, {
      RELAYLEASE_LEASE_TTL: "10m",
      // Replaces the default list, which refuses loopback: here 127.0.0.x are the clients.
      RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
      RELAYLEASE_SOCKETMAP_LISTEN: "127.0.0.1:0",
      RELAYLEASE_MILTER_LISTEN: "127.0.0.1:0",
      RELAYLEASE_LOCAL_DOMAINS: SENDMAIL_HOSTNAME,
      RELAYLEASE_STALE_AFTER: "2s",
    });
    roles = await startRoles(async (ctx) => {
      await startAuthorizer(config, ctx);
      milter = await startMilter(config, ctx);
    }, "error");
    cleanups.push(async () => {
      if (!rolesStopped) await roles.stop();
    });
    await new LoginPublisher(jetstream(nc), "pop-1").publish({
      ip: LEASED,
      user: "erin",
      service: "imap",
      source: "http",
    });
    await waitFor(
      () => milter.mirror.lookup(`v4.${LEASED}`, Date.now()) !== undefined,
      5000,
      `the lease of ${LEASED} in the mirror`,
    );
    const socketmap = milter.socketmapAddress ?? "";
    const configs: Record<string, SendmailOptions> = {
      classic: { dracSocketmap: socketmap },
      trap: { dracSocketmap: socketmap, dracMapFlags: "-T<TMPF>" },
      guarded: { dracSocketmap: socketmap, dracMapFlags: "-T<TMPF>", dracTempfailGuard: true },
      gate: { milter: milter.milterAddress ?? "", promiscuousRelay: true },
    };
    await Promise.all(
      Object.entries(configs).map(async ([name, options]) => {
        const daemon = await startSendmail(sendmail.install, options);
        cleanups.push(() => daemon.stop());
        mta[name] = daemon;
      }),
    );
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  /**
   * One session from `client` to the daemon `name`, up to one RCPT: the RCPT reply as on the
   * wire, or the first reply before it that was not 2xx (or the connection's end), labelled.
   */
  async function attempt(name: string, client: string, to: string): Promise<string> {
    const daemon = mta[name];
    assert.ok(daemon !== undefined, `no daemon ${name}`);
    const { client: smtp, greeting } = await SmtpClient.connect({
      host: daemon.host,
      port: daemon.port,
      localAddress: client,
    });
    try {
      if (greeting.code !== 220) return `greeting: ${greeting.raw}`;
      for (const [stage, command] of [
        ["ehlo", "EHLO client.example"],
        ["mail", "MAIL FROM:<sender@client.example>"],
      ] as const) {
        const reply = await smtp.command(command);
        if (reply.code !== 250) return `${stage}: ${reply.raw}`;
      }
      return (await smtp.rcpt(to)).raw;
    } catch (err) {
      return `connection: ${(err as Error).message}`;
    } finally {
      await smtp.quit();
    }
  }

  /** Asserts each [daemon, client, recipient] attempt against its pattern, all at once. */
  async function expectAttempts(cases: readonly [string, string, string, RegExp][]) {
    const got = await Promise.all(cases.map(([name, client, to]) => attempt(name, client, to)));
    const wrong = cases
      .map(([name, client, to, want], i) => ({ name, client, to, want, got: got[i] ?? "" }))
      .filter((c) => !c.want.test(c.got));
    if (wrong.length === 0) return;
    const lines = wrong.map(
      (c) => `  ${c.name} from ${c.client} to ${c.to}: ${c.got}\n    (want ${String(c.want)})`,
    );
    const cfs = [...new Set(wrong.map((c) => c.name))].map(
      (n) => `--- ${n}.mc ---\n${mta[n]?.mc ?? ""}\n--- ${n} output ---\n${mta[n]?.outputTail()}`,
    );
    assert.fail(`${lines.join("\n")}\n${cfs.join("\n")}`);
  }

  it("is Sendmail 8.x, greeting as mx.test.invalid", async () => {
    const daemon = mta.classic;
    assert.ok(daemon !== undefined);
    const { client, greeting } = await SmtpClient.connect({ host: daemon.host, port: daemon.port });
    await client.quit();
    assert.match(greeting.raw, /^220 mx\.test\.invalid ESMTP Sendmail 8\.\d+/);
  });

  it("classic DRAC rule over the socketmap: a leased client relays, an unleased one is refused", async () => {
    await expectAttempts([
      ["classic", LEASED, REMOTE, RELAYED],
      ["classic", LEASED, LOCAL, RELAYED],
      ["classic", UNLEASED, REMOTE, RELAY_DENIED],
      ["classic", UNLEASED, LOCAL, RELAYED],
      // With the server up, the -T variants answer as the classic rule does.
      ["trap", LEASED, REMOTE, RELAYED],
      ["trap", UNLEASED, REMOTE, RELAY_DENIED],
      ["guarded", LEASED, REMOTE, RELAYED],
      ["guarded", UNLEASED, REMOTE, RELAY_DENIED],
    ]);
  });

  it("milter gate (F=T, Sendmail relaying for anyone): leased relays, unleased gets 550 5.7.1", async () => {
    await expectAttempts([
      ["gate", LEASED, REMOTE, RELAYED],
      ["gate", UNLEASED, REMOTE, MILTER_DENIED],
      ["gate", UNLEASED, LOCAL, RELAYED],
    ]);
  });

  it("with NATS gone past RELAYLEASE_STALE_AFTER, a leased client relays and an unknown one never does", async () => {
    await nc.close();
    await nats.stop();
    await waitFor(() => milter.mirror.stale(Date.now()), 10_000, "the mirror to go stale");
    await expectAttempts([
      ["classic", LEASED, REMOTE, RELAYED],
      // socketmap TEMP: without -T the lookup yields the `?` default, Sendmail's own check denies.
      ["classic", UNLEASED, REMOTE, RELAY_DENIED],
      ["classic", UNLEASED, LOCAL, RELAYED],
      ["guarded", UNLEASED, REMOTE, GUARD_DEFERRED],
      ["gate", LEASED, REMOTE, RELAYED],
      ["gate", UNLEASED, REMOTE, MILTER_DEFERRED],
      ["gate", UNLEASED, LOCAL, RELAYED],
      // Control: TEMP under -T<TMPF> without the guard is a relay grant.
      ["trap", UNLEASED, REMOTE, RELAYED],
    ]);
  });

  it("with relaylease down, nobody relays through the classic rule or the milter gate", async () => {
    // NATS back first: roles stop at once instead of timing out their NATS work.
    await nats.restart();
    await waitFor(() => !milter.mirror.stale(Date.now()), 10_000, "the mirror to be fresh");
    await roles.stop();
    rolesStopped = true;
    await expectAttempts([
      ["classic", LEASED, REMOTE, RELAY_DENIED],
      ["classic", UNLEASED, REMOTE, RELAY_DENIED],
      ["classic", UNLEASED, LOCAL, RELAYED],
      ["guarded", LEASED, REMOTE, GUARD_DEFERRED],
      ["guarded", UNLEASED, REMOTE, GUARD_DEFERRED],
      // F=T: the milter unreachable is a temporary failure, never a pass.
      ["gate", LEASED, REMOTE, MILTER_DOWN],
      ["gate", UNLEASED, REMOTE, MILTER_DOWN],
      // Control: the map server unreachable under -T<TMPF> relays for anyone.
      ["trap", UNLEASED, REMOTE, RELAYED],
    ]);
  });
});
