// The syslog listener with real UDP datagrams in both formats, and on a unix datagram socket
// with util-linux `logger` as the peer (as glibc's syslog() would write to /dev/log).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import dgram from "node:dgram";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { DgramSocket } from "node-unix-socket";
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

const POP3_LOGIN = (ip: string) =>
  `pop3-login: Login: user=<bob>, method=PLAIN, rip=${ip}, lip=192.0.2.10, mpid=12346, TLS, session=<RkamOl1hNJh/AAAC>`;

/** util-linux logger writing one message to a unix socket, failing if it cannot. */
async function logger(path: string, args: string[], message: string): Promise<void> {
  await promisify(execFile)("logger", ["-u", path, "--socket-errors=on", ...args, message]);
}

/** A socket file with nothing bound to it, as a killed process leaves one. */
function staleSocket(path: string): void {
  const socket = new DgramSocket();
  socket.bind(path);
  socket.close();
}

/** One raw datagram from an unnamed socket, as syslog() sends. */
async function sendTo(path: string, datagram: string): Promise<void> {
  const socket = new DgramSocket();
  try {
    const bytes = Buffer.from(datagram);
    await new Promise<void>((resolve, reject) => {
      socket.sendTo(bytes, 0, bytes.length, path, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  } finally {
    socket.close();
  }
}

describe("syslog listener (unix datagram)", () => {
  let dir: string;
  let n = 0;
  /** A fresh path per test, so one test's leftovers cannot explain another's result. */
  const freshPath = () => join(dir, `syslog-${++n}.sock`);
  const listen = (path: string, records: LogRecord[] = []) =>
    startSyslogServer({
      listen: path,
      log: createLogger("silent"),
      onRecord: (r) => records.push(r),
    });
  /** The start error names the setting and the path. */
  const startError = (path: string, why: RegExp) => (err: Error) => {
    assert.ok(err.message.startsWith(`RELAYLEASE_SYSLOG_LISTEN ${path}: `), err.message);
    assert.match(err.message, why);
    return true;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "relaylease-syslog-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("yields Dovecot logins logger sends in RFC 3164 and 5424, on a 0666 socket", async () => {
    const path = freshPath();
    const records: LogRecord[] = [];
    const server = await listen(path, records);
    try {
      assert.equal(server.address, path);
      assert.equal((await stat(path)).mode & 0o777, 0o666);
      const sent = Date.now();
      await logger(path, ["--rfc3164", "-t", "dovecot"], POP3_LOGIN("203.0.113.5"));
      await logger(path, ["--rfc5424", "-t", "dovecot"], LOGIN("2001:db8::5"));
      await waitFor(() => records.length === 2, 5000, "two records");
      assert.deepEqual(
        records.map(({ at: _at, ...r }) => r),
        [
          {
            kind: "login",
            ip: "203.0.113.5",
            user: "bob",
            service: "pop3",
            server: "dovecot",
            session: "RkamOl1hNJh/AAAC",
          },
          {
            kind: "login",
            ip: "2001:db8::5",
            user: "alice",
            service: "imap",
            server: "dovecot",
            session: "RkamOl1hNJh/AAAB",
          },
        ],
      );
      // logger stamps the current time: whole seconds in RFC 3164, microseconds in RFC 5424.
      for (const r of records) assert.ok(Math.abs((r.at ?? 0) - sent) < 60_000, `at ${r.at}`);
      assert.deepEqual(server.stats, {
        datagrams: 2,
        records: 2,
        protocolErrors: 0,
        callbackErrors: 0,
      });
    } finally {
      await server.close();
    }
  });

  it("counts oversized and garbage datagrams as protocol errors, and keeps serving", async () => {
    const path = freshPath();
    const records: LogRecord[] = [];
    const server = await listen(path, records);
    try {
      await logger(path, ["--rfc3164", "-t", "dovecot", "--size", "10000"], "x".repeat(9000));
      await sendTo(path, "no priority at all");
      await logger(path, ["--rfc3164", "-t", "dovecot"], POP3_LOGIN("198.51.100.1"));
      await waitFor(() => server.stats.datagrams === 3, 5000, "three datagrams");
      assert.equal(server.stats.protocolErrors, 2);
      assert.equal(server.stats.records, 1);
      assert.equal(records.at(-1)?.kind === "login" && records.at(-1)?.ip, "198.51.100.1");
    } finally {
      await server.close();
    }
  });

  it("replaces a stale socket file, and close() removes the socket", async () => {
    const path = freshPath();
    const records: LogRecord[] = [];
    staleSocket(path);
    assert.ok((await stat(path)).isSocket());
    const server = await listen(path, records);
    await logger(path, ["--rfc3164", "-t", "dovecot"], POP3_LOGIN("203.0.113.7"));
    await waitFor(() => records.length === 1, 5000, "a record through the replaced socket");
    await server.close();
    await assert.rejects(stat(path), { code: "ENOENT" });
  });

  it("refuses a socket another listener is bound to, and leaves it serving", async () => {
    const path = freshPath();
    const first = await listen(path);
    try {
      await assert.rejects(listen(path), startError(path, /in use by another process/));
      await logger(path, ["--rfc3164", "-t", "dovecot"], POP3_LOGIN("203.0.113.8"));
      await waitFor(() => first.stats.records === 1, 5000, "the first listener still serving");
    } finally {
      await first.close();
    }
  });

  const notSockets = [
    { name: "a regular file", make: (p: string) => writeFile(p, "keep me\n"), isFile: true },
    { name: "a directory", make: (p: string) => mkdir(p), isFile: false },
  ];
  for (const c of notSockets) {
    it(`refuses ${c.name} at the path, naming it, and keeps it`, async () => {
      const path = freshPath();
      await c.make(path);
      await assert.rejects(listen(path), startError(path, /is not a unix socket/));
      assert.equal((await stat(path)).isFile(), c.isFile);
    });
  }

  it("names the setting and the path when the socket cannot be bound", async () => {
    const path = join(dir, "missing", "syslog.sock");
    await assert.rejects(listen(path), startError(path, /No such file or directory/));
  });
});

describe("parseSyslogListen", () => {
  it("takes host:port and [v6]:port", () => {
    assert.deepEqual(parseSyslogListen("127.0.0.1:5514"), { host: "127.0.0.1", port: 5514 });
    assert.deepEqual(parseSyslogListen("[::1]:514"), { host: "::1", port: 514 });
  });

  it("takes a unix datagram socket path", () => {
    assert.deepEqual(parseSyslogListen("/run/relaylease/syslog.sock"), {
      path: "/run/relaylease/syslog.sock",
    });
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
