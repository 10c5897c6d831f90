// Real Dovecot 2.3 in front of the watcher (DESIGN.md "Login sources"; login-sources.md §2, §4.1
// and Appendix): POP3 and IMAP logins from 127.0.0.2 become leases through each Dovecot source,
// and a wrong password becomes nothing, neither a lease nor a login event.
//   - auth policy: Dovecot's auth process reports every authentication (report-only, with an API
//     header) to RELAYLEASE_DOVECOT_POLICY_LISTEN;
//   - log file: the watcher follows Dovecot's own log_path (RELAYLEASE_DOVECOT_LOG) for
//     `pop3-login: Info: Login: ...` lines, next to `auth failed` lines that must not match.
// The chain is the real one: Dovecot -> watcher (outbox) -> login stream -> authorizer -> bucket.
// POP3 leases are shorter than IMAP ones here, so the IMAP login after the POP3 one from the
// same address always extends the lease and its service shows which login granted it. Each wrong
// password comes from its own address (Dovecot's auth penalty would slow a second failure from
// one address by seconds) and is followed by a good login from yet another address: once that
// one's lease is there, the source has seen the failure, and the stream holds only the good one.
// Skips unless Dovecot is installed (scripts/install-dovecot.sh) and we are root.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { freePort } from "../../services/dev/nats-server.ts";
import { startWatcher } from "../../services/watcher/watcher.ts";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { decodeBucketValue } from "../../shared/bucket-value.ts";
import type { Lease } from "../../shared/lease.ts";
import { provision } from "../../shared/provision.ts";
import {
  dovecotUnavailable,
  dovecotVersion,
  startDovecot,
  type DovecotOptions,
  type ThrowawayDovecot,
} from "../support/dovecot.ts";
import { imapLogin, pop3Login, type MailLoginResult } from "../support/mail-login-client.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

const USER = "alice";
const PASSWORD = "wonderland";
const CLIENT = "127.0.0.2";
const WRONG_POP3 = "127.0.0.4";
const WRONG_IMAP = "127.0.0.5";
const AFTER_WRONG = "127.0.0.6";

const LEASE_WAIT_MS = 10_000;
/** After the good login that follows a wrong password: time for a stray event to show up. */
const SETTLE_MS = 300;

interface Source {
  readonly name: string;
  /** The `source` of the leases it grants. */
  readonly leaseSource: string;
  /** Starts Dovecot, and the roles with this source's settings, in the order the source needs. */
  readonly start: (
    roles: (env: Record<string, string>) => Promise<void>,
  ) => Promise<ThrowawayDovecot>;
}

const SOURCES: readonly Source[] = [
  {
    name: "auth policy source (RELAYLEASE_DOVECOT_POLICY_LISTEN)",
    leaseSource: "dovecot-policy",
    start: async (roles) => {
      // Dovecot's URL must name the port before Dovecot starts, so choose it here.
      const listen = `127.0.0.1:${await freePort()}`;
      const apiHeader = "X-Relaylease-Key: e2e-dovecot-policy-key";
      await roles({
        RELAYLEASE_DOVECOT_POLICY_LISTEN: listen,
        RELAYLEASE_DOVECOT_POLICY_API_HEADER: apiHeader,
      });
      return startDovecot(dovecotOptions({ policy: { url: `http://${listen}/`, apiHeader } }));
    },
  },
  {
    name: "log file source (RELAYLEASE_DOVECOT_LOG)",
    leaseSource: "dovecot-log",
    start: async (roles) => {
      // Started first, so the file exists; with no saved position the watcher starts at its end.
      const dovecot = await startDovecot(dovecotOptions({}));
      try {
        await roles({ RELAYLEASE_DOVECOT_LOG: dovecot.logPath });
      } catch (err) {
        await dovecot.cleanup();
        throw err;
      }
      return dovecot;
    },
  },
];

function dovecotOptions(options: DovecotOptions): DovecotOptions {
  return { ...options, users: { [USER]: PASSWORD } };
}

const unavailable = await dovecotUnavailable();

describe("Dovecot end to end", { skip: unavailable ?? false }, () => {
  it("is Dovecot 2.3", async () => {
    assert.match(await dovecotVersion(), /^2\.3\./);
  });

  for (const source of SOURCES) {
    describe(source.name, () => {
      let nats: TestNatsServer;
      let nc: NatsConnection;
      let jsm: JetStreamManager;
      let kv: KV;
      let roles: Harness | undefined;
      let dovecot: ThrowawayDovecot | undefined;
      let scratch: string;
      let streamName: string;

      before(async () => {
        scratch = await mkdtemp(path.join(tmpdir(), "relaylease-e2e-dovecot-"));
        nats = await startTestNatsServer();
        nc = await connect({ servers: nats.url });
        jsm = await jetstreamManager(nc);
        dovecot = await source.start(async (env) => {
          const config = roleConfig(nats.url, {
            RELAYLEASE_OUTBOX_DIR: path.join(scratch, "outbox"),
            RELAYLEASE_LEASE_TTL: "10m",
            RELAYLEASE_SERVICE_TTLS: "pop3=5m",
            // Replaces the default list, which refuses loopback: here 127.0.0.x are the clients.
            RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
            ...env,
          });
          streamName = config.stream;
          await provision(nc, {
            stream: config.stream,
            bucket: config.bucket,
            replicas: 1,
            maxLeaseTtlMs: 600_000,
            perMessageTtl: true,
          });
          kv = await new Kvm(jetstream(nc)).open(config.bucket);
          roles = await startRoles(async (ctx) => {
            await startAuthorizer(config, ctx);
            await startWatcher(config, ctx);
          }, "warn");
        });
      });
      after(async () => {
        await dovecot?.cleanup();
        await roles?.stop();
        if (!nc.isClosed()) await nc.close();
        await nats.cleanup();
        await rm(scratch, { recursive: true, force: true });
      });

      const running = (): ThrowawayDovecot => {
        assert.ok(dovecot, "Dovecot is running");
        return dovecot;
      };

      async function login(
        protocol: "pop3" | "imap",
        from: string,
        password: string,
      ): Promise<MailLoginResult> {
        const dc = running();
        const port = protocol === "pop3" ? dc.pop3Port : dc.imapPort;
        const client = protocol === "pop3" ? pop3Login : imapLogin;
        return client({ host: dc.host, port, localAddress: from, user: USER, password });
      }

      async function leaseOf(ip: string): Promise<Lease | undefined> {
        const entry = await kv.get(leaseKey(parseAddress(ip)));
        if (entry === null || entry.operation !== "PUT") return undefined;
        const value = decodeBucketValue(entry.value);
        return value.kind === "lease" ? value.lease : undefined;
      }

      /** Waits for the lease of `ip` granted by a `service` login; fails with Dovecot's log. */
      async function expectLease(ip: string, service: string): Promise<Lease> {
        let lease: Lease | undefined;
        try {
          await waitFor(
            async () => (lease = await leaseOf(ip))?.service === service,
            LEASE_WAIT_MS,
            `a lease of ${ip} from a ${service} login`,
            50,
          );
        } catch (err) {
          throw running().error(
            `${(err as Error).message} (bucket holds ${JSON.stringify(lease)}; watcher log: ` +
              `${JSON.stringify(roles?.logs.slice(-10))})`,
            err,
          );
        }
        assert.ok(lease);
        return lease;
      }

      async function storedEvents(): Promise<number> {
        return (await jsm.streams.info(streamName)).state.messages;
      }

      it("turns a POP3 login from 127.0.0.2 into a lease", async () => {
        const r = await login("pop3", CLIENT, PASSWORD);
        assert.ok(r.ok, r.transcript.join("\n"));
        const lease = await expectLease(CLIENT, "pop3");
        assert.equal(lease.ip, CLIENT);
        assert.equal(lease.user, USER);
        assert.equal(lease.source, source.leaseSource);
      });

      it("turns an IMAP login from 127.0.0.2 into a lease", async () => {
        const r = await login("imap", CLIENT, PASSWORD);
        assert.ok(r.ok, r.transcript.join("\n"));
        const lease = await expectLease(CLIENT, "imap");
        assert.equal(lease.user, USER);
        assert.equal(lease.source, source.leaseSource);
        assert.ok(lease.expiresAt > Date.now() + 5 * 60_000, "the 10m IMAP lease, not the 5m one");
      });

      it("turns a wrong password into nothing: no lease, no login event", async () => {
        const dc = running();
        const stored = await storedEvents();
        for (const [protocol, from] of [
          ["pop3", WRONG_POP3],
          ["imap", WRONG_IMAP],
        ] as const) {
          const r = await login(protocol, from, "not-the-password");
          assert.equal(r.ok, false, r.transcript.join("\n"));
          await dc.waitForLog(new RegExp(`auth failed, .*rip=${from.replaceAll(".", "\\.")},`));
        }
        // A good login after the failures: once its lease is there, they have been seen.
        assert.ok((await login("pop3", AFTER_WRONG, PASSWORD)).ok);
        await expectLease(AFTER_WRONG, "pop3");
        await sleep(SETTLE_MS);
        assert.equal(await leaseOf(WRONG_POP3), undefined, `no lease for ${WRONG_POP3}`);
        assert.equal(await leaseOf(WRONG_IMAP), undefined, `no lease for ${WRONG_IMAP}`);
        assert.equal(await storedEvents(), stored + 1, "only the good login's event was stored");
      });

      it("leaves Dovecot with nothing to complain about", async () => {
        // E.g. `auth: Error: policy(...): Policy server HTTP error: 401 Unauthorized`.
        const tail = await running().logTail(Infinity);
        assert.doesNotMatch(tail, /: (Error|Fatal|Panic|Warning): /, tail);
      });
    });
  }
});
