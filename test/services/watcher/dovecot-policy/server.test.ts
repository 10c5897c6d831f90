// The Dovecot auth policy source over real HTTP, with a recording sink.
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { startDovecotPolicyServer } from "../../../../services/watcher/dovecot-policy/server.ts";
import type {
  DovecotPolicyServerOptions,
  LoginSink,
} from "../../../../services/watcher/dovecot-policy/server.ts";
import { parseListenAddress } from "../../../../shared/listen-address.ts";
import { waitFor } from "../../../support/wait.ts";
import { DOVECOT_IMAP_REPORT } from "./fixtures.ts";

type Login = Parameters<LoginSink["login"]>[0];

const silent = pino({ level: "silent" });
const DOVECOT_HEADERS = {
  "content-type": "application/json",
  "user-agent": "dovecot/auth-policy-client",
};
const report = (fields: Record<string, unknown>) =>
  JSON.stringify({ ...(JSON.parse(DOVECOT_IMAP_REPORT) as object), ...fields });

async function start(options: Partial<DovecotPolicyServerOptions> = {}) {
  const logins: Login[] = [];
  const server = await startDovecotPolicyServer({
    listen: "127.0.0.1:0",
    sink: { login: (r) => logins.push(r) },
    log: silent,
    ...options,
  });
  const post = (body: string, command = "report", headers: Record<string, string> = {}) =>
    fetch(`http://${server.address}/?command=${command}`, {
      method: "POST",
      headers: { ...DOVECOT_HEADERS, ...headers },
      body,
    });
  return { server, logins, post };
}

async function expectAccepted(res: Response): Promise<void> {
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: 0, msg: "" });
}

describe("Dovecot auth policy source", () => {
  let ctx: Awaited<ReturnType<typeof start>>;
  before(async () => {
    ctx = await start();
  });
  after(() => ctx.server.close());

  it("a successful POP3 report is a login", async () => {
    await expectAccepted(
      await ctx.post(report({ protocol: "pop3", remote: "::ffff:203.0.113.5" })),
    );
    await waitFor(() => ctx.logins.length === 1, 2000, "the login");
    assert.deepEqual(ctx.logins[0], {
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      source: "dovecot-policy",
    });
  });

  it("the exact Dovecot 2.3.19.1 IMAP body is a login", async () => {
    const before = ctx.logins.length;
    await expectAccepted(await ctx.post(DOVECOT_IMAP_REPORT));
    await waitFor(() => ctx.logins.length === before + 1, 2000, "the login");
  });

  const nothing: [string, string, string][] = [
    ["success false", report({ success: false }), "report"],
    ["protocol smtp (SASL)", report({ protocol: "smtp" }), "report"],
    ["command=allow", DOVECOT_IMAP_REPORT, "allow"],
    ["a body that is not JSON", "{nope", "report"],
  ];
  for (const [name, body, command] of nothing) {
    it(`${name}: answered, nothing reported`, async () => {
      const before = ctx.logins.length;
      const requests = ctx.server.stats.requests;
      await expectAccepted(await ctx.post(body, command));
      await waitFor(() => ctx.server.stats.requests === requests + 1, 2000, "the request");
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(ctx.logins.length, before);
    });
  }

  it("any path and method are answered the same", async () => {
    const res = await fetch(`http://${ctx.server.address}/some/path?x=1&command=report`, {
      method: "POST",
      headers: DOVECOT_HEADERS,
      body: report({ remote: "192.0.2.77" }),
    });
    await expectAccepted(res);
    await waitFor(() => ctx.logins.at(-1)?.ip === "192.0.2.77", 2000, "the login");
    await expectAccepted(await fetch(`http://${ctx.server.address}/`));
  });

  it("a body over the limit is answered and ignored", async () => {
    const before = ctx.logins.length;
    await expectAccepted(await ctx.post(report({ pad: "x".repeat(20_000) })));
    await waitFor(() => ctx.server.stats.oversized === 1, 2000, "the oversized count");
    assert.equal(ctx.logins.length, before);
  });

  it("answers before the body has arrived", async () => {
    const before = ctx.logins.length;
    const where = parseListenAddress(ctx.server.address);
    assert.ok("port" in where);
    const socket = net.connect(where.port, where.host);
    await once(socket, "connect");
    const body = report({ remote: "192.0.2.88" });
    socket.write(
      `POST /?command=report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`,
    );
    const [answer] = (await once(socket, "data")) as [Buffer];
    assert.match(answer.toString(), /^HTTP\/1.1 200 OK[\s\S]*\{"status":0,"msg":""\}$/);
    assert.equal(ctx.logins.length, before);
    socket.end(body);
    await waitFor(() => ctx.logins.at(-1)?.ip === "192.0.2.88", 2000, "the late login");
  });
});

describe("Dovecot auth policy source with credentials", () => {
  it("a wrong or missing API key gets 401 and reports nothing", async () => {
    const { server, logins, post } = await start({ apiHeader: "X-API-Key: secret" });
    try {
      assert.equal(
        (await post(DOVECOT_IMAP_REPORT, "report", { "X-API-Key": "wrong" })).status,
        401,
      );
      assert.equal((await post(DOVECOT_IMAP_REPORT)).status, 401);
      await expectAccepted(await post(DOVECOT_IMAP_REPORT, "report", { "X-API-Key": "secret" }));
      await waitFor(() => logins.length === 1, 2000, "the login");
      assert.equal(server.stats.unauthorized, 2);
    } finally {
      await server.close();
    }
  });

  it("Basic auth as Dovecot sends it for user:pass@ in the URL", async () => {
    const { server, logins, post } = await start({ basicAuth: "dovecot:pw" });
    try {
      const wrong = await post(DOVECOT_IMAP_REPORT, "report", {
        authorization: `Basic ${btoa("dovecot:nope")}`,
      });
      assert.equal(wrong.status, 401);
      assert.match(wrong.headers.get("www-authenticate") ?? "", /^Basic/);
      await expectAccepted(
        await post(DOVECOT_IMAP_REPORT, "report", { authorization: `Basic ${btoa("dovecot:pw")}` }),
      );
      await waitFor(() => logins.length === 1, 2000, "the login");
    } finally {
      await server.close();
    }
  });

  it("a bad credentials setting fails at start, naming the form", async () => {
    await assert.rejects(start({ apiHeader: "Bad Header: x" }), /Header-Name: value/);
  });
});

describe("Dovecot auth policy source with a failing sink", () => {
  it("every request is still answered at once", async () => {
    const server = await startDovecotPolicyServer({
      listen: "127.0.0.1:0",
      sink: {
        login: () => {
          throw new Error("publisher down");
        },
      },
      log: silent,
    });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`http://${server.address}/?command=report`, {
          method: "POST",
          headers: DOVECOT_HEADERS,
          body: DOVECOT_IMAP_REPORT,
        });
        await expectAccepted(res);
      }
      await waitFor(() => server.stats.sinkErrors === 3, 2000, "three sink errors");
    } finally {
      await server.close();
    }
  });
});
