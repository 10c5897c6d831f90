// Real Postfix 3.7 in front of the milter role, through each of its three Postfix integrations
// (DESIGN.md "Decision"; mta-protocols.md §2, §4, §5.2): the policy service, the socketmap table
// and the fail-closed milter gate. Clients are distinct loopback addresses seen by Postfix as
// such: 127.0.0.1 is in mynetworks (and RELAYLEASE_TRUSTED_NETWORKS), .3 holds a lease granted
// through the real path (login event -> authorizer -> bucket -> mirror), .4 holds none, .5 gets a
// short one. For each integration: the leased client relays, the unleased one is refused with
// 5.7.1, local mail passes for both, the refusal comes back when a lease runs out, and with NATS
// gone past RELAYLEASE_STALE_AFTER an unknown client gets 4xx, never 250, while the leased one
// still relays; once NATS is back, refusals are 5.7.1 again. Skips unless Postfix is installed (scripts/install-postfix.sh) and we are root.
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startMilter, type Milter } from "../../services/milter/milter.ts";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import {
  LOCAL_DOMAIN,
  REMOTE_DOMAIN,
  createPostfix,
  postfixUnavailable,
  postfixVersion,
  type PostfixSettings,
  type ThrowawayPostfix,
} from "../support/postfix.ts";
import { roleConfig, startRoles, type Harness, provisionForTest } from "../support/role-harness.ts";
import { tryEnvelope } from "../support/smtp-client.ts";
import { waitFor } from "../support/wait.ts";

const TRUSTED = "127.0.0.1";
const LEASED = "127.0.0.3";
const UNLEASED = "127.0.0.4";
const SHORT_LEASE = "127.0.0.5";

const REMOTE = `rcpt@${REMOTE_DOMAIN}`;
/** Local by RELAYLEASE_LOCAL_DOMAINS (and by {rcpt_mailer} `local`). */
const LOCAL = `rcpt@${LOCAL_DOMAIN}`;
/** Local only by Postfix's mydestination: the milter knows it from {rcpt_mailer} `local`. */
const LOCAL_BY_MAILER = "rcpt@localhost";

/** The lease of `pop3` logins: short, to watch one run out. */
const SHORT_TTL = "3s";
/**
 * Above the authorizer's 2 s heartbeat interval (shared/contract.ts HEARTBEAT_INTERVAL_MS) with a
 * margin: at 2 s a fresh mirror may flap to stale between heartbeats.
 */
const STALE_AFTER = "3s";

const RELAYED = /^250 2\.1\.5 /;
const REFUSED = /^5\d\d 5\.7\.1 /;
const DEFERRED = /^4\d\d 4\.\d\.\d+ /;

interface Integration {
  readonly name: string;
  /** The main.cf settings that put this front door of `milter` in Postfix's relay decision. */
  readonly settings: (milter: Milter) => PostfixSettings;
  /** What an unknown client's local mail gets while the mirror is stale. */
  readonly staleLocal: RegExp;
  /**
   * The role's doors listen on unix sockets in a directory smtpd (user postfix) may enter, as in
   * a volume shared with the MTA's container, instead of on loopback ports.
   */
  readonly unixSockets?: boolean;
}

/** The policy service in the relay restrictions; `server` is Postfix's inet:… or unix:… */
const policyService = (server: string): PostfixSettings => ({
  smtpd_relay_restrictions: `permit_mynetworks, check_policy_service ${server}, reject_unauth_destination`,
});

/** Relaying handed to the milter at `server`, tempfail when it is unreachable. */
const milterGate = (server: string): PostfixSettings => ({
  smtpd_relay_restrictions:
    "permit_mynetworks, check_client_access static:OK, reject_unauth_destination",
  smtpd_milters: server,
  milter_default_action: "tempfail",
});

const INTEGRATIONS: readonly Integration[] = [
  {
    // OK for an authorized client, DUNNO otherwise; stale: DEFER_IF_REJECT, so the relay attempt
    // is deferred (450 4.7.1) and local mail still passes.
    name: "policy service (check_policy_service)",
    settings: (m) => policyService(`inet:${m.policyAddress}`),
    staleLocal: RELAYED,
  },
  {
    // `OK <expiry>` for a leased address, NOTFOUND otherwise; stale: TEMP, which Postfix turns
    // into 451 4.3.5 for the whole restriction, local recipients included.
    name: "socketmap table (check_client_access socketmap:)",
    settings: (m) => ({
      smtpd_relay_restrictions: `permit_mynetworks, check_client_access socketmap:inet:${m.socketmapAddress ?? ""}:drac, reject_unauth_destination`,
    }),
    staleLocal: DEFERRED,
  },
  {
    // Postfix passes relaying to the milter (static:OK), which accepts an authorized client at
    // CONNECT and otherwise rejects remote recipients itself; stale: 451 4.7.1 for those only.
    name: "milter gate (smtpd_milters, check_client_access static:OK)",
    settings: (m) => milterGate(`inet:${m.milterAddress ?? ""}`),
    staleLocal: RELAYED,
  },
  {
    name: "policy service over a unix socket (check_policy_service unix:)",
    settings: (m) => policyService(`unix:${m.policyAddress}`),
    staleLocal: RELAYED,
    unixSockets: true,
  },
  {
    name: "milter gate over a unix socket (smtpd_milters unix:)",
    settings: (m) => milterGate(`unix:${m.milterAddress ?? ""}`),
    staleLocal: RELAYED,
    unixSockets: true,
  },
];

const unavailable = await postfixUnavailable();

describe("Postfix end to end", { skip: unavailable ?? false }, () => {
  let postfix: ThrowawayPostfix;

  before(async () => {
    postfix = await createPostfix({ mynetworks: `${TRUSTED}/32` });
    await postfix.start();
  });
  after(async () => {
    await postfix.cleanup();
  });

  /** The reply to each recipient, in one session from `client`, as on the wire. */
  async function rcptReplies(client: string, to: readonly string[]): Promise<string[]> {
    const r = await tryEnvelope(
      { host: postfix.host, port: postfix.port, localAddress: client },
      { from: "sender@example.org", to },
    );
    assert.equal(r.greeting.code, 220, r.greeting.raw);
    assert.equal(r.mail.code, 250, r.mail.raw);
    return r.rcpt.map((reply) => reply.raw);
  }

  /** Asserts each recipient's reply against its pattern; a failure shows Postfix's log. */
  async function expectReplies(client: string, expected: Record<string, RegExp>): Promise<void> {
    const to = Object.keys(expected);
    const got = await rcptReplies(client, to);
    const wrong = to.filter((rcpt, i) => !(expected[rcpt]?.test(got[i] ?? "") ?? false));
    if (wrong.length === 0) return;
    const lines = to.map(
      (rcpt, i) => `  ${rcpt}: ${got[i] ?? "(none)"} (want ${String(expected[rcpt])})`,
    );
    assert.fail(
      `from ${client}:\n${lines.join("\n")}\n--- maillog tail ---\n${await postfix.maillogTail()}`,
    );
  }

  it("is Postfix 3.x, run from its own config dir", async () => {
    assert.match(await postfixVersion(), /^3\./);
    assert.match(await postfix.maillogTail(), new RegExp(`configuration ${postfix.configDir}`));
  });

  for (const integration of INTEGRATIONS) {
    describe(integration.name, () => {
      let nats: TestNatsServer;
      let roles: Harness;
      let milter: Milter;
      let nc: NatsConnection;
      let publisher: (ip: string, service: string) => Promise<void>;
      let socketDir: string | undefined;

      before(async () => {
        if (integration.unixSockets === true) {
          socketDir = await mkdtemp(path.join(tmpdir(), "relaylease-sockets-"));
          await chmod(socketDir, 0o755);
        }
        const listen = (name: string) =>
          socketDir === undefined ? "127.0.0.1:0" : path.join(socketDir, `${name}.sock`);
        nats = await startTestNatsServer();
        nc = await connect({ servers: nats.url });
        await provisionForTest(nc, {
          maxLeaseTtlMs: 600_000,
        });
        const config = roleConfig(nats.url, {
          RELAYLEASE_LEASE_TTL: "10m",
          RELAYLEASE_SERVICE_TTLS: `pop3=${SHORT_TTL}`,
          // Replaces the default list, which refuses loopback: here 127.0.0.x are the clients.
          RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
          RELAYLEASE_POLICY_LISTEN: listen("policy"),
          RELAYLEASE_MILTER_LISTEN: listen("milter"),
          RELAYLEASE_SOCKETMAP_LISTEN: listen("socketmap"),
          RELAYLEASE_TRUSTED_NETWORKS: `${TRUSTED}/32`,
          RELAYLEASE_LOCAL_DOMAINS: LOCAL_DOMAIN,
          RELAYLEASE_STALE_AFTER: STALE_AFTER,
        });
        roles = await startRoles(async (ctx) => {
          await startAuthorizer(config, ctx);
          milter = await startMilter(config, ctx);
        }, "error");
        const logins = new LoginPublisher(jetstream(nc), "pop-1");
        publisher = async (ip, service) => {
          await logins.publish({ ip, user: `user-${ip}`, service, source: "http" });
          await waitFor(
            () => milter.mirror.lookup(`v4.${ip}`, Date.now()) !== undefined,
            5000,
            `the lease of ${ip} in the mirror`,
          );
        };
        await publisher(LEASED, "imap");
        await postfix.reconfigure(integration.settings(milter));
      });
      after(async () => {
        if (!nc.isClosed()) await nc.close();
        // With NATS still gone (a failed test), this takes seconds: the roles' NATS work times out.
        await roles.stop();
        await nats.cleanup();
        if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
      });

      it("relays for a leased or trusted client, refuses an unleased one, takes local mail from all", async () => {
        assert.equal(milter.mirror.stale(Date.now()), false);
        const local = { [LOCAL]: RELAYED, [LOCAL_BY_MAILER]: RELAYED };
        await expectReplies(LEASED, { [REMOTE]: RELAYED, ...local });
        await expectReplies(TRUSTED, { [REMOTE]: RELAYED, ...local });
        await expectReplies(UNLEASED, { [REMOTE]: REFUSED, ...local });
      });

      it("refuses again once a lease runs out", async () => {
        await publisher(SHORT_LEASE, "pop3");
        await expectReplies(SHORT_LEASE, { [REMOTE]: RELAYED });
        let last: string[] = [];
        await waitFor(
          async () => {
            last = await rcptReplies(SHORT_LEASE, [REMOTE]);
            return !RELAYED.test(last[0] ?? "");
          },
          10_000,
          `${SHORT_LEASE}'s ${SHORT_TTL} lease to run out`,
          100,
        );
        await expectReplies(SHORT_LEASE, { [REMOTE]: REFUSED, [LOCAL]: RELAYED });
        assert.match(last[0] ?? "", REFUSED);
      });

      it("with NATS gone past RELAYLEASE_STALE_AFTER, defers an unknown client and still relays a leased one", async () => {
        await nc.close();
        await nats.stop();
        await waitFor(() => milter.mirror.stale(Date.now()), 10_000, "the mirror to go stale");
        await expectReplies(UNLEASED, { [REMOTE]: DEFERRED, [LOCAL]: integration.staleLocal });
        await expectReplies(SHORT_LEASE, { [REMOTE]: DEFERRED });
        await expectReplies(LEASED, { [REMOTE]: RELAYED, [LOCAL]: RELAYED });
        await expectReplies(TRUSTED, { [REMOTE]: RELAYED });
      });

      it("once NATS is back, refuses an unknown client again instead of deferring it", async () => {
        await nats.restart();
        await waitFor(() => !milter.mirror.stale(Date.now()), 10_000, "the mirror to be fresh");
        await expectReplies(UNLEASED, { [REMOTE]: REFUSED, [LOCAL]: RELAYED });
        await expectReplies(LEASED, { [REMOTE]: RELAYED });
      });
    });
  }
});
