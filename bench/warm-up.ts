// Warms the role's front doors before a benchmark measures them, as traffic warms a role that has
// run for a while: V8 keeps compiling Node's socket code and ours for the first ten thousand or
// so milter connections (`node --trace-opt`: 340 compiles after 1 800 connections, 432 after
// 9 300, then none), and a run measured during that also measures the compiler. The C servers we
// compare with need no warming.
import { MilterClient } from "../test/support/milter-client.ts";
import { POSTFIX_RCPT_REQUEST, PolicyClient } from "../test/support/policy-client.ts";
import { SocketmapClient } from "../test/support/socketmap-client.ts";

/** Postfix's CONNECT macros (mta-protocols.md). */
function connectMacros(client: string): Record<string, string> {
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
    connectMacros(client),
  );
  if (reply?.type !== "accept") throw new Error(`milter answered ${JSON.stringify(reply)}`);
  await c.close();
}

export interface RoleDoors {
  /** host:port of each door. */
  readonly milter: string;
  readonly policy: string;
  readonly socketmap: string;
}

/** `count` milter sessions, policy requests and socketmap lookups for `client`, 4 at a time. */
export async function warmDoors(doors: RoleDoors, client: string, count: number): Promise<void> {
  const lanes = 4;
  const each = Math.ceil(count / lanes);
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      const policy = await PolicyClient.connect(doors.policy);
      const socketmap = await SocketmapClient.connect(doors.socketmap);
      try {
        for (let i = 0; i < each; i++) {
          await postfixMilterSession(doors.milter, client);
          await policy.query({ ...POSTFIX_RCPT_REQUEST, client_address: client });
          await socketmap.lookup("drac", client);
        }
      } finally {
        await Promise.all([policy.close(), socketmap.close()]);
      }
    }),
  );
}
