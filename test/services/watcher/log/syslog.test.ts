// The syslog listener with real UDP datagrams in both formats.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../../../shared/log.ts";
import type { LogRecord } from "../../../../services/watcher/log/parse.ts";
import {
  parseSyslogListen,
  startSyslogServer,
  type SyslogServer,
} from "../../../../services/watcher/log/syslog.ts";
import { waitFor } from "../../../support/wait.ts";

const LOGIN = (ip: string) =>
  `imap-login: Login: user=<alice>, method=PLAIN, rip=${ip}, lip=192.0.2.10, mpid=1, TLS, session=<RkamOl1hNJh/AAAB>`;

async function send(address: string, datagrams: string[]): Promise<void> {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(colon + 1));
  const client = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  try {
    for (const d of datagrams) {
      await new Promise<void>((resolve, reject) => {
        client.send(Buffer.from(d), port, host, (err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    }
  } finally {
    client.close();
  }
}

describe("syslog listener (UDP)", () => {
  const records: LogRecord[] = [];
  let server: SyslogServer;

  before(async () => {
    server = await startSyslogServer({
      listen: "127.0.0.1:0",
      log: createLogger("silent"),
      onRecord: (r) => records.push(r),
      now: () => new Date(2026, 10, 29, 10, 0, 0).getTime(),
    });
  });
  after(() => server.close());

  it("turns RFC 3164 and RFC 5424 datagrams into records", async () => {
    await send(server.address, [
      `<22>Nov 28 12:34:56 dovecot: ${LOGIN("203.0.113.5")}`,
      `<22>1 2026-11-28T12:34:56.123456+01:00 mail.example.com dovecot 812 - - ${LOGIN("2001:db8::5")}`,
      "<22>Nov 28 12:40:00 mail imapd[123]: Logout user=bob host=client.example.com [198.51.100.7]",
    ]);
    await waitFor(() => records.length === 3, 5000, "three records");
    assert.deepEqual(records, [
      {
        kind: "login",
        ip: "203.0.113.5",
        user: "alice",
        service: "imap",
        server: "dovecot",
        session: "RkamOl1hNJh/AAAB",
        at: new Date(2026, 10, 28, 12, 34, 56).getTime(),
      },
      {
        kind: "login",
        ip: "2001:db8::5",
        user: "alice",
        service: "imap",
        server: "dovecot",
        session: "RkamOl1hNJh/AAAB",
        at: Date.UTC(2026, 10, 28, 11, 34, 56, 123),
      },
      {
        kind: "logout",
        ip: "198.51.100.7",
        user: "bob",
        service: "imap",
        at: new Date(2026, 10, 28, 12, 40, 0).getTime(),
      },
    ]);
  });

  it("counts bad datagrams and ignores other programs, and keeps serving", async () => {
    const before = { ...server.stats };
    await send(server.address, [
      "no priority at all",
      "<22>1 2026-11-28T12:34:56 h a - - - missing zone",
      "<22>Nov 28 12:34:56 mail postfix/smtpd[1]: connect from unknown[203.0.113.9]",
      `<22>Nov 28 12:34:56 mail dovecot: ${LOGIN("198.51.100.1")}`,
    ]);
    await waitFor(() => server.stats.datagrams === before.datagrams + 4, 5000, "four datagrams");
    await waitFor(() => server.stats.records === before.records + 1, 5000, "one more record");
    assert.equal(server.stats.protocolErrors, before.protocolErrors + 2);
    assert.equal(records.at(-1)?.kind === "login" && records.at(-1)?.ip, "198.51.100.1");
  });
});

describe("parseSyslogListen", () => {
  it("takes host:port and [v6]:port", () => {
    assert.deepEqual(parseSyslogListen("127.0.0.1:5514"), { host: "127.0.0.1", port: 5514 });
    assert.deepEqual(parseSyslogListen("[::1]:514"), { host: "::1", port: 514 });
  });

  it("refuses a unix datagram socket path, saying why", () => {
    assert.throws(() => parseSyslogListen("/run/relaylease/syslog.sock"), /unix datagram sockets/);
  });

  it("refuses nonsense", () => {
    assert.throws(() => parseSyslogListen("nope"), /invalid listen address/);
  });

  it("binds [::1]:0 when the host has IPv6 loopback", async (t) => {
    let server: SyslogServer;
    try {
      server = await startSyslogServer({
        listen: "[::1]:0",
        log: createLogger("silent"),
        onRecord: () => undefined,
      });
    } catch {
      t.skip("no IPv6 loopback here");
      return;
    }
    assert.match(server.address, /^\[::1\]:\d+$/);
    await server.close();
  });
});
