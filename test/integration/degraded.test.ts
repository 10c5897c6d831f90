// Degraded mode on Debian's nats-server 2.9 (no per-message TTL): allowed only when asked for,
// loudly logged, leases expire by the bucket's max_age, and the mirror enforces expiry by its own
// clock, because a 2.9 server removes the key without telling any watcher.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { leaseKey, parseAddress } from "../../shared/address.ts";
import { startAuthorizer } from "../../services/authorizer/authorizer.ts";
import { startMilter, type Milter } from "../../services/milter/milter.ts";
import { LoginPublisher } from "../../services/watcher/publisher.ts";
import { relaylease } from "../support/cli.ts";
import {
  debianNatsServerBinary,
  startTestNatsServer,
  type TestNatsServer,
} from "../support/nats-server.ts";
import { PolicyClient } from "../support/policy-client.ts";
import { roleConfig, startRoles, type Harness } from "../support/role-harness.ts";
import { waitFor } from "../support/wait.ts";

const debian = await debianNatsServerBinary();

describe(
  "degraded mode on nats-server 2.9",
  { skip: debian === undefined && "Debian's nats-server 2.9 is not installed" },
  () => {
    let server: TestNatsServer;
    let nc: NatsConnection;
    let roles: Harness;
    let milter: Milter;

    before(async () => {
      server = await startTestNatsServer({ binary: debian });
      const env = { RELAYLEASE_NATS_URL: server.url, RELAYLEASE_LEASE_TTL: "2s" };
      assert.equal((await relaylease(["setup"], env)).code, 1, "refused without degraded mode");
      const setup = await relaylease(["setup", "--degraded-ttl"], env);
      assert.equal(setup.code, 0, setup.stderr);
      const config = roleConfig(server.url, {
        RELAYLEASE_LEASE_TTL: "2s",
        RELAYLEASE_DEGRADED_TTL: "true",
      });
      roles = await startRoles(async (ctx) => {
        await startAuthorizer(config, ctx);
        milter = await startMilter(config, ctx);
      });
      nc = await connect({ servers: server.url });
    });
    after(async () => {
      await roles.stop();
      await nc.close();
      await server.cleanup();
    });

    it("logs that it runs degraded", () => {
      assert.ok(
        roles.logs.some(
          (l) =>
            typeof l["msg"] === "string" && l["msg"].startsWith("DEGRADED MODE: nats-server 2.9"),
        ),
      );
    });

    it("expires a lease by the mirror's own clock", async () => {
      const ip = "192.0.2.80";
      const key = leaseKey(parseAddress(ip));
      const policy = await PolicyClient.connect(milter.policyAddress);
      try {
        await new LoginPublisher(jetstream(nc), "pop-1").publish({
          ip,
          service: "pop3",
          source: "http",
        });
        await waitFor(
          async () => (await policy.query({ client_address: ip })) === "OK",
          2000,
          "OK",
        );
        await waitFor(
          async () => (await policy.query({ client_address: ip })) === "DUNNO",
          5000,
          "DUNNO after the TTL",
        );
        assert.equal(
          milter.mirror.holds(key),
          true,
          "no marker reached the mirror: its clock decided",
        );
      } finally {
        await policy.close();
      }
    });
  },
);
