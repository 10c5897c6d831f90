// Real Exim (Debian's 4.96, test/support/exim.ts) asking relaylease's whoson door through the
// `${readsocket}` expansion, which every Exim build has (Debian's lacks the native whoson lookup).
// The milter role runs as a real process; the lease comes from `relaylease grant`; an authorizer
// in this process writes the heartbeats that keep the mirror fresh. A leased client relays, an
// unleased one is refused, local mail passes for both; with the mirror stale (no heartbeat past
// RELAYLEASE_STALE_AFTER) the leased client still relays and an unknown one is deferred; with the
// milter process killed nobody relays (451), local mail still passes.
//
// Skipped, with the reason, where Exim cannot run: not root, no unshare, or no binary from
// scripts/install-exim.sh.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { freePort } from "../../services/dev/nats-server.ts";
import { ERROR_STALE, NOT_LOGGED_IN } from "../../services/milter/whoson/session.ts";
import { CLI, relaylease } from "../support/cli.ts";
import { EXIM_HOSTNAME, createExim, findExim, type ThrowawayExim } from "../support/exim.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { roleConfig, startRoles, type Harness } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";
import { WhosonTcpClient } from "../support/whoson-client.ts";

const LEASED = "127.0.0.2";
const UNLEASED = "127.0.0.3";
const REMOTE = "b@remote.example";
const LOCAL = `root@${EXIM_HOSTNAME}`;
/** Above the authorizer's 2 s heartbeat interval, with a margin (as in the Postfix test). */
const STALE_AFTER = "3s";
const OUTPUT_TAIL_BYTES = 8 * 1024;

const RELAYED = /^250 Accepted$/;
const REFUSED = /^550 relay not permitted$/;
const DEFERRED = /^451 relay check unavailable, try again later$/;

/**
 * The recipe under test, as in README.md "Exim, whoson". whoson answers `+user` (leased),
 * `-Not Logged in`, or `*reason` (mirror stale); a request ends with an empty line. readsocket
 * half-closes after the request and reads to EOF; the fail string `*unreachable` (nothing
 * listening, or no answer within 3 s) defers like a stale answer, so an outage never relays.
 */
function whosonAcl(whoson: string): string {
  return `
  accept  domains   = +local_domains
  defer   message   = relay check unavailable, try again later
          set acl_m_whoson = \${readsocket{inet:${whoson}}{QUERY $sender_host_address\\r\\n\\r\\n}{3s}{}{*unreachable}}
          condition = \${if eq{\${substr_0_1:$acl_m_whoson}}{*}}
  accept  condition = \${if eq{\${substr_0_1:$acl_m_whoson}}{+}}
  deny    message   = relay not permitted
`;
}

const exim = await findExim();

describe("Exim with relaylease's whoson door", { skip: exim.ok ? false : exim.reason }, () => {
  let nats: TestNatsServer;
  let authorizer: Harness;
  let authorizerStopped = false;
  let milter: ChildProcess;
  let milterTail = "";
  let whoson: string;
  let mta: ThrowawayExim;
  /** Undone in reverse order after the tests, as far as before() got. */
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    if (!exim.ok) return; // the suite is skipped; this narrows the type
    nats = await startTestNatsServer();
    cleanups.push(() => nats.cleanup());
    const env = {
      RELAYLEASE_NATS_URL: nats.url,
      RELAYLEASE_LEASE_TTL: "10m",
      // Replaces the default list, which refuses loopback: here 127.0.0.x are the clients.
      RELAYLEASE_NEVER_LEASE: "192.0.2.0/24",
    };
    const setup = await relaylease(["setup"], env);
    assert.equal(setup.code, 0, setup.stderr);
    const grant = await relaylease(["grant", LEASED, "--user", "erin"], env);
    assert.equal(grant.code, 0, grant.stderr);

    authorizer = await startRoles(
      (ctx) => startAuthorizer(roleConfig(nats.url, env), ctx),
      "error",
    );
    cleanups.push(async () => {
      if (!authorizerStopped) await authorizer.stop();
    });

    // freePort checks TCP only; whoson also binds UDP there. A lost race is the milter exiting at
    // start, reported with its log.
    whoson = `127.0.0.1:${await freePort()}`;
    milter = spawn(process.execPath, [CLI, "milter"], {
      env: {
        PATH: process.env["PATH"] ?? "",
        ...env,
        RELAYLEASE_WHOSON_LISTEN: whoson,
        RELAYLEASE_POLICY_LISTEN: "127.0.0.1:0",
        RELAYLEASE_METRICS_LISTEN: "127.0.0.1:0",
        RELAYLEASE_STALE_AFTER: STALE_AFTER,
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (chunk: Buffer) => {
      milterTail = (milterTail + chunk.toString()).slice(-OUTPUT_TAIL_BYTES);
    };
    milter.stdout?.on("data", keep);
    milter.stderr?.on("data", keep);
    cleanups.push(async () => {
      if (milter.exitCode === null && milter.signalCode === null) {
        milter.kill("SIGKILL");
        await once(milter, "exit");
      }
    });
    const exited = once(milter, "exit").then(() => {
      throw new Error(`milter exited with ${milter.exitCode ?? milter.signalCode}\n${milterTail}`);
    });
    await Promise.race([
      waitFor(
        async () => (await ask(LEASED)) === "+erin",
        15_000,
        `whoson at ${whoson} to answer +erin for ${LEASED}`,
        50,
      ),
      exited,
    ]);

    mta = await createExim(exim.binary, whosonAcl(whoson));
    cleanups.push(() => mta.cleanup());
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  /** What the whoson door answers for `ip` over TCP: status and text, or the error. */
  async function ask(ip: string): Promise<string> {
    try {
      const client = await WhosonTcpClient.connect(whoson, 1000);
      try {
        const reply = await client.query(ip);
        return reply.status + reply.text;
      } finally {
        await client.close();
      }
    } catch (err) {
      return `error: ${(err as Error).message}`;
    }
  }

  /** Asserts each [client, recipient] RCPT reply against its pattern; all sessions at once. */
  async function expectRcpts(cases: readonly [string, string, RegExp][]) {
    const got = await Promise.all(cases.map(([client, to]) => mta.rcpt(client, to)));
    const wrong = cases
      .map(([client, to, want], i) => ({ client, to, want, got: got[i] }))
      .filter((c) => !c.want.test(c.got?.reply ?? ""));
    if (wrong.length === 0) return;
    const lines = wrong.map(
      (c) =>
        `  from ${c.client} to ${c.to}: ${c.got?.reply}\n    (want ${String(c.want)})\n` +
        `--- exim trace ---\n${c.got?.trace}`,
    );
    assert.fail(
      `${lines.join("\n")}\n--- exim.conf ---\n${mta.config}\n--- milter ---\n${milterTail}`,
    );
  }

  it("is Exim 4.x, answering as mx.test.invalid in host-checking mode", async () => {
    assert.ok(exim.ok);
    assert.match(exim.version, /^4\.\d+/);
    const { reply, transcript } = await mta.rcpt(UNLEASED, LOCAL);
    assert.match(reply, RELAYED);
    assert.match(transcript, /^\*\*\*\* SMTP testing session as if from host 127\.0\.0\.3$/m);
    assert.match(transcript, /^220 mx\.test\.invalid ESMTP Exim 4\.\d+ /m);
  });

  it("a leased client relays, an unleased one is refused, local mail passes for both", async () => {
    assert.equal(await ask(UNLEASED), `-${NOT_LOGGED_IN}`);
    await expectRcpts([
      [LEASED, REMOTE, RELAYED],
      [LEASED, LOCAL, RELAYED],
      [UNLEASED, REMOTE, REFUSED],
      [UNLEASED, LOCAL, RELAYED],
    ]);
    // What readsocket got: the whole reply, up to our end of the connection.
    const { trace } = await mta.rcpt(LEASED, REMOTE);
    assert.match(trace, /^>>> +=\s*\+erin/m);
  });

  it("with the mirror stale, the leased client still relays and an unknown one is deferred", async () => {
    await authorizer.stop();
    authorizerStopped = true;
    await waitFor(
      async () => (await ask(UNLEASED)).startsWith("*"),
      10_000,
      "the mirror to go stale without heartbeats",
      100,
    );
    assert.equal(await ask(UNLEASED), `*${ERROR_STALE}`);
    assert.equal(await ask(LEASED), "+erin");
    await expectRcpts([
      [LEASED, REMOTE, RELAYED],
      [UNLEASED, REMOTE, DEFERRED],
      [UNLEASED, LOCAL, RELAYED],
    ]);
  });

  it("with relaylease down (milter process killed), nobody relays: 451", async () => {
    milter.kill("SIGKILL");
    await once(milter, "exit");
    assert.match(await ask(LEASED), /^error: /);
    await expectRcpts([
      [LEASED, REMOTE, DEFERRED],
      [UNLEASED, REMOTE, DEFERRED],
      [UNLEASED, LOCAL, RELAYED],
    ]);
  });
});
