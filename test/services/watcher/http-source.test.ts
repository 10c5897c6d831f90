// The HTTP login source, with a stand-in publisher (the publish path runs against a real
// nats-server in test/integration/thin-slice.test.ts).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../../shared/log.ts";
import type { ListeningServer } from "../../../shared/listen.ts";
import { MAX_BODY_BYTES, startHttpSource } from "../../../services/watcher/http-source.ts";
import type { LoginReport } from "../../../services/watcher/publisher.ts";

const TOKEN = "a-token-of-16-chars";

describe("HTTP login source", () => {
  const published: LoginReport[] = [];
  let failWith: Error | undefined;
  const publisher = {
    accept: (report: LoginReport) => {
      if (failWith !== undefined) return Promise.reject(failWith);
      published.push(report);
      return Promise.resolve({ ...report, id: `e${published.length}`, watcher: "w", loginAt: 0 });
    },
  };
  let http: ListeningServer;

  before(async () => {
    http = await startHttpSource("127.0.0.1:0", publisher, createLogger("silent"), TOKEN);
  });
  after(() => http.close());

  const post = (
    body: string,
    headers: Record<string, string> = { "content-type": "application/json" },
    path = "/v1/logins",
  ) =>
    fetch(`http://${http.address}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, ...headers },
      body,
    });

  it("publishes a login with the canonical address and answers 202", async () => {
    const res = await post(
      JSON.stringify({ ip: "::ffff:203.0.113.5", user: "alice", service: "imap" }),
    );
    assert.equal(res.status, 202);
    assert.deepEqual(await res.json(), { id: `e${published.length}`, ip: "203.0.113.5" });
    assert.deepEqual(published.at(-1), {
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      source: "http",
    });
  });

  it("defaults the service and takes no user", async () => {
    const res = await post(JSON.stringify({ ip: "2001:DB8::1" }));
    assert.equal(res.status, 202);
    assert.deepEqual(published.at(-1), {
      ip: "2001:db8::1",
      user: undefined,
      service: "unknown",
      source: "http",
    });
  });

  const bad: [string, string, RegExp][] = [
    ["not JSON", "{", /body is not valid JSON/],
    ["an array", "[]", /body must be a JSON object/],
    ["no ip", JSON.stringify({ user: "a" }), /field "ip" must be a string/],
    ["an ip that is a number", JSON.stringify({ ip: 1 }), /field "ip" must be a string/],
    ["a host name", JSON.stringify({ ip: "mail.example" }), /field "ip" is not an IP address/],
    ["a bad service", JSON.stringify({ ip: "192.0.2.1", service: "IMAP 4" }), /field "service"/],
    ["a user with a newline", JSON.stringify({ ip: "192.0.2.1", user: "a\nb" }), /field "user"/],
  ];
  for (const [name, body, message] of bad) {
    it(`answers 400 naming the problem for ${name}`, async () => {
      const before = published.length;
      const res = await post(body);
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: string }).error, message);
      assert.equal(published.length, before);
    });
  }

  it("refuses wrong paths, methods, media types and oversized bodies", async () => {
    assert.equal((await post("{}", undefined, "/v1/login")).status, 404);
    const get = await fetch(`http://${http.address}/v1/logins`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(get.status, 405);
    assert.equal(
      (await post("ip=1", { "content-type": "application/x-www-form-urlencoded" })).status,
      415,
    );
    const big = JSON.stringify({ ip: "192.0.2.1", user: "x".repeat(MAX_BODY_BYTES) });
    assert.equal((await post(big)).status, 413);
  });

  it("refuses a request without the bearer token", async () => {
    const before = published.length;
    for (const authorization of ["", "Bearer wrong-token-of-16-chars", `Basic ${TOKEN}`]) {
      const res = await fetch(`http://${http.address}/v1/logins`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization },
        body: JSON.stringify({ ip: "192.0.2.1" }),
      });
      assert.equal(res.status, 401);
    }
    assert.equal(published.length, before);
  });

  it("answers 503 when the login cannot be stored", async () => {
    failWith = new Error("no responders");
    try {
      const res = await post(JSON.stringify({ ip: "192.0.2.1" }));
      assert.equal(res.status, 503);
      assert.match(((await res.json()) as { error: string }).error, /no responders/);
    } finally {
      failWith = undefined;
    }
  });
});
