// The relaylease milter role as the front-door benches run it: its environment, its readiness,
// Postfix's milter session, and a warm-up. The role is warmed before it is measured, as traffic
// warms a role that has run for a while: V8 keeps compiling Node's socket code and ours for the
// first 25 000 or so milter connections (Node 24, `node --trace-opt`, one connection at a time:
// 47 functions optimized after 10 000 connections, 77 after 15 000, 91 after 25 000, 92 after
// 40 000), and a run measured during that also measures the compiler. The C servers we compare
// with need no warming.
import { relaylease } from "../test/support/cli.ts";
import { MilterClient } from "../test/support/milter-client.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../test/support/policy-client.ts";
import { SocketmapClient } from "../test/support/socketmap-client.ts";
import { waitFor } from "../test/support/wait.ts";

/**
 * The Node option the README advises for the milter role, and the benches give the bare Node
 * servers too: Node's own code mapped onto 2 MiB pages, so that fewer TLB misses follow an MTA's
 * processes through the caches (silent: where huge pages are off, Node starts as usual).
 */
export const LARGE_PAGES = "--use-largepages=silent";

/** Where the role listens: every door on 127.0.0.1, and /metrics with /readyz. */
export interface RolePorts {
  readonly policy: number;
  readonly socketmap: number;
  readonly milter: number;
  readonly metrics: number;
}

/**
 * The environment of `relaylease milter` for a bench: every door open on loopback, accept at
 * CONNECT, errors only in the log; `extra` adds to it or overrides it.
 */
export function roleEnv(
  natsUrl: string,
  ports: RolePorts,
  extra: Readonly<Record<string, string>> = {},
): Record<string, string> {
  return {
    RELAYLEASE_NATS_URL: natsUrl,
    RELAYLEASE_POLICY_LISTEN: `127.0.0.1:${String(ports.policy)}`,
    RELAYLEASE_SOCKETMAP_LISTEN: `127.0.0.1:${String(ports.socketmap)}`,
    RELAYLEASE_MILTER_LISTEN: `127.0.0.1:${String(ports.milter)}`,
    RELAYLEASE_METRICS_LISTEN: `127.0.0.1:${String(ports.metrics)}`,
    RELAYLEASE_LOCAL_DOMAINS: "mx.test.invalid",
    RELAYLEASE_ACCEPT_AT: "connect",
    // No authorizer sends heartbeats here: without this the mirror would turn stale after 60 s.
    RELAYLEASE_STALE_AFTER: "1h",
    LOG_LEVEL: "error",
    // As the README advises beside a busy MTA: Node's code on huge pages.
    NODE_OPTIONS: LARGE_PAGES,
    ...extra,
  };
}

/**
 * Provisions a fresh NATS for the role (`relaylease setup`) and leases `client` for an hour
 * (`relaylease grant`). Loopback is on the default never-lease list; here it may hold a lease.
 */
export async function provisionWithLease(natsUrl: string, client: string): Promise<void> {
  const env = { RELAYLEASE_NATS_URL: natsUrl, RELAYLEASE_NEVER_LEASE: "192.0.2.0/24" };
  for (const args of [["setup"], ["grant", client, "--ttl", "1h"]]) {
    const r = await relaylease(args, env);
    if (r.code !== 0) throw new Error(`relaylease ${args.join(" ")}: ${r.stderr}`);
  }
}

/** Resolves once the role's /readyz answers 200; `check` throws if the role has gone. */
export function roleReady(metricsPort: number, timeoutMs: number, check = () => undefined) {
  return waitFor(
    async () => {
      check();
      const res = await fetch(`http://127.0.0.1:${String(metricsPort)}/readyz`).catch(
        () => undefined,
      );
      return res?.status === 200;
    },
    timeoutMs,
    `the role's /readyz on port ${String(metricsPort)}`,
    50,
  );
}

/** Postfix's CONNECT macros (mta-protocols.md): what our milter is handed per connection. */
export function postfixConnectMacros(client: string): Record<string, string> {
  return {
    j: "mx.test.invalid",
    _: `client [${client}]`,
    "{daemon_name}": "smtpd",
    "{client_addr}": client,
  };
}

/**
 * One SMTP session's milter connection as Postfix makes it for a client accepted at CONNECT:
 * OPTNEG, CONNECT with its macros, then closed without QUIT.
 * @throws Error when the milter does not accept the client.
 */
export async function postfixMilterSession(address: string, client: string): Promise<void> {
  const c = await MilterClient.connect(address, 60_000);
  await c.negotiate();
  const reply = await c.connectStep(
    { family: "4", address: client, port: 40000 },
    postfixConnectMacros(client),
  );
  if (reply?.type !== "accept") throw new Error(`milter answered ${JSON.stringify(reply)}`);
  await c.close();
}

/**
 * `count` milter sessions, policy requests and (where there is a socketmap door) socketmap
 * lookups for `client`, 4 at a time.
 */
export async function warmDoors(
  ports: Pick<RolePorts, "milter" | "policy"> & { readonly socketmap?: number },
  client: string,
  count: number,
): Promise<void> {
  const at = (port: number) => `127.0.0.1:${String(port)}`;
  const doors = {
    milter: at(ports.milter),
    policy: at(ports.policy),
    socketmap: ports.socketmap === undefined ? undefined : at(ports.socketmap),
  };
  const lanes = 4;
  const each = Math.ceil(count / lanes);
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      const policy = await PolicyClient.connect(doors.policy);
      const socketmap =
        doors.socketmap === undefined ? undefined : await SocketmapClient.connect(doors.socketmap);
      try {
        for (let i = 0; i < each; i++) {
          await postfixMilterSession(doors.milter, client);
          await policy.query({ ...POSTFIX_RCPT_REQUEST, client_address: client });
          await socketmap?.lookup("drac", client);
        }
      } finally {
        await Promise.all([policy.close(), socketmap?.close()]);
      }
    }),
  );
}
