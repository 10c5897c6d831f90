// Authorizer throughput: 20 000 login events (10 000 addresses, each logged in twice) already in
// the stream, then one authorizer (R1, loopback) started: events turned into leases per second,
// measured from its start until the durable consumer has nothing pending or unacknowledged.
import { performance } from "node:perf_hooks";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { AUTHORIZER_DURABLE } from "../shared/contract.ts";
import { startAuthorizer } from "../services/authorizer/authorizer.ts";
import { LoginPublisher } from "../services/watcher/publisher.ts";
import { startTestNatsServer } from "../test/support/nats-server.ts";
import { roleConfig, startRoles, provisionForTest } from "../test/support/role-harness.ts";

export async function benchAuthorizer(
  report: (name: string, n: number, s: number) => void,
): Promise<void> {
  const server = await startTestNatsServer();
  const nc = await connect({ servers: server.url });
  try {
    await provisionForTest(nc, {
      maxLeaseTtlMs: 1_800_000,
    });
    const publisher = new LoginPublisher(jetstream(nc), "bench");
    const n = 20_000;
    let next = 0;
    await Promise.all(
      Array.from({ length: 256 }, async () => {
        while (next < n) {
          const i = next++;
          const ip = `10.${(i >> 16) & 255}.${((i % 10_000) >> 8) & 255}.${(i % 10_000) & 255}`;
          await publisher.publish({ ip, user: `u${i % 10_000}`, service: "imap", source: "bench" });
        }
      }),
    );
    const jsm = await jetstreamManager(nc);
    const t0 = performance.now();
    const roles = await startRoles((ctx) => startAuthorizer(roleConfig(server.url), ctx), "error");
    for (;;) {
      const c = await jsm.consumers.info("RELAY_LOGINS", AUTHORIZER_DURABLE);
      if (c.num_pending === 0 && c.num_ack_pending === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    report("authorizer: events to leases (R1, backlog)", n, (performance.now() - t0) / 1000);
    await roles.stop();
  } finally {
    await nc.close();
    await server.cleanup();
  }
}
