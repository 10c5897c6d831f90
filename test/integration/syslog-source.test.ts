// The watcher's syslog source wired end to end on a real nats-server: a Dovecot login that
// util-linux `logger` sends to RELAYLEASE_SYSLOG_LISTEN (a unix datagram socket, as glibc's
// syslog() writes to /dev/log; or UDP, as rsyslog forwards) becomes a lease in the bucket; a
// failed login becomes nothing.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { decodeLease } from "../../shared/lease.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startWatcher } from "../../services/watcher/watcher.ts";
import { freePort } from "../../services/dev/nats-server.ts";
import { startTestNatsServer, type TestNatsServer } from "../support/nats-server.ts";
import { provisionForTest, roleConfig, startRoles, type Harness } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

const login = (ip: string, user: string) =>
  `imap-login: Login: user=<${user}>, method=PLAIN, rip=${ip}, lip=192.0.2.1, mpid=7, TLS, session=<RkamOl1hNJh/AAAB>`;
const failed = (ip: string) =>
  `imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<eve>, method=PLAIN, rip=${ip}, lip=192.0.2.1, TLS, session=<RkamOl1hNJh/AAAC>`;

const cases = [
  {
    name: "a unix datagram socket, RFC 3164",
    listen: (dir: string) => Promise.resolve(join(dir, "log.sock")),
    logger: (where: string) => ["-u", where, "--socket-errors=on", "--rfc3164"],
  },
  {
    name: "UDP, RFC 5424",
    listen: async () => `127.0.0.1:${await freePort()}`,
    logger: (where: string) => {
      const [host = "", port = ""] = where.split(":");
      return ["-d", "-n", host, "-P", port, "--rfc5424"];
    },
  },
];

for (const c of cases) {
  describe(`syslog source over ${c.name}`, () => {
    let server: TestNatsServer;
    let nc: NatsConnection;
    let kv: KV;
    let roles: Harness;
    let dir: string;
    let where: string;

    before(async () => {
      server = await startTestNatsServer();
      nc = await connect({ servers: server.url });
      await provisionForTest(nc, { maxLeaseTtlMs: 3_600_000 });
      kv = await new Kvm(jetstream(nc)).open("relay-leases");
      dir = await mkdtemp(join(tmpdir(), "relaylease-syslog-"));
      where = await c.listen(dir);
      const config = roleConfig(server.url, { RELAYLEASE_SYSLOG_LISTEN: where });
      roles = await startRoles(async (ctx) => {
        await startAuthorizer(config, ctx);
        await startWatcher(config, ctx);
      });
    });
    after(async () => {
      await roles.stop();
      await nc.close();
      await server.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    const send = (message: string) =>
      promisify(execFile)("logger", [...c.logger(where), "-t", "dovecot", message]);

    it("turns a login into a lease, and a failed login into nothing", async () => {
      await send(failed("198.51.100.41"));
      await send(login("198.51.100.40", "alice"));
      let value: Uint8Array | undefined;
      await waitFor(
        async () => {
          value = (await kv.get("v4.198.51.100.40"))?.value;
          return value !== undefined && value.length > 0;
        },
        10_000,
        "the lease",
      );
      const lease = decodeLease(value ?? new Uint8Array());
      assert.equal(lease.user, "alice");
      assert.equal(lease.service, "imap");
      assert.equal(lease.source, "dovecot-log");
      // The outbox publishes in the order the source stored: had the failed login (sent first)
      // become an event, it would be in the stream before the login's.
      const jsm = await jetstreamManager(nc);
      assert.equal((await jsm.streams.info("RELAY_LOGINS")).state.messages, 1);
      assert.equal(await kv.get("v4.198.51.100.41"), null);
    });
  });
}
