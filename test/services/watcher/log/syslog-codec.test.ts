// Syslog codec: named tables of valid and invalid datagrams (RFC 3164, RFC 5424), a round trip
// through a test encoder, and a property test that nothing but ProtocolError is ever thrown.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ProtocolError } from "../../../../shared/protocol-error.ts";
import {
  decodeSyslog,
  MAX_SYSLOG_BYTES,
  type SyslogMessage,
} from "../../../../services/watcher/log/syslog-codec.ts";
import { syslogRecord } from "../../../../services/watcher/log/syslog.ts";

const NOW = new Date(2026, 10, 29, 10, 0, 0).getTime();
const LOCAL_AT = new Date(2026, 10, 28, 12, 34, 56).getTime();
const LOGIN =
  "imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1, TLS, session=<RkamOl1hNJh/AAAB>";

interface Valid {
  name: string;
  input: string | Buffer;
  want: SyslogMessage;
}

const valid: Valid[] = [
  {
    name: "RFC 3164 from syslog(3) on /dev/log: no host",
    input: `<22>Nov 28 12:34:56 dovecot: ${LOGIN}`,
    want: {
      format: "rfc3164",
      facility: 2,
      severity: 6,
      timestamp: LOCAL_AT,
      appName: "dovecot",
      message: LOGIN,
    },
  },
  {
    name: "RFC 3164 relayed: host and pid",
    input: `<22>Nov 28 12:34:56 mail dovecot[812]: ${LOGIN}`,
    want: {
      format: "rfc3164",
      facility: 2,
      severity: 6,
      timestamp: LOCAL_AT,
      host: "mail",
      appName: "dovecot",
      procId: "812",
      message: LOGIN,
    },
  },
  {
    name: "RFC 3164 with a trailing LF and NUL",
    input: `<22>Nov  8 12:34:56 mail imapd[9]: Login user=a host=[203.0.113.5]\n\0`,
    want: {
      format: "rfc3164",
      facility: 2,
      severity: 6,
      timestamp: new Date(2026, 10, 8, 12, 34, 56).getTime(),
      host: "mail",
      appName: "imapd",
      procId: "9",
      message: "Login user=a host=[203.0.113.5]",
    },
  },
  {
    name: "RFC 3164 framing with an RFC 3339 timestamp (rsyslog forward format)",
    input: `<22>2026-11-28T12:34:56.123456+01:00 mail dovecot: ${LOGIN}`,
    want: {
      format: "rfc3164",
      facility: 2,
      severity: 6,
      timestamp: Date.UTC(2026, 10, 28, 11, 34, 56, 123),
      host: "mail",
      appName: "dovecot",
      message: LOGIN,
    },
  },
  {
    name: "RFC 3164 without a timestamp",
    input: `<22>dovecot: ${LOGIN}`,
    want: { format: "rfc3164", facility: 2, severity: 6, appName: "dovecot", message: LOGIN },
  },
  {
    name: "RFC 3164 that fits no header is all message",
    input: "<13>hello world",
    want: { format: "rfc3164", facility: 1, severity: 5, message: "hello world" },
  },
  {
    name: "PRI 0 and nothing else",
    input: "<0>",
    want: { format: "rfc3164", facility: 0, severity: 0, message: "" },
  },
  {
    name: "RFC 5424 from rsyslog",
    input: `<22>1 2026-11-28T12:34:56.123456+01:00 mail.example.com dovecot 812 - - ${LOGIN}`,
    want: {
      format: "rfc5424",
      facility: 2,
      severity: 6,
      timestamp: Date.UTC(2026, 10, 28, 11, 34, 56, 123),
      host: "mail.example.com",
      appName: "dovecot",
      procId: "812",
      message: LOGIN,
    },
  },
  {
    name: "RFC 5424 example 1 (BOM before the message)",
    input:
      "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \ufeff'su root' failed for lonvick on /dev/pts/8",
    want: {
      format: "rfc5424",
      facility: 4,
      severity: 2,
      timestamp: Date.UTC(2003, 9, 11, 22, 14, 15, 3),
      host: "mymachine.example.com",
      appName: "su",
      msgId: "ID47",
      message: "'su root' failed for lonvick on /dev/pts/8",
    },
  },
  {
    name: "RFC 5424 example 3 (structured data)",
    input:
      '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] \ufeffAn application event log entry...',
    want: {
      format: "rfc5424",
      facility: 20,
      severity: 5,
      timestamp: Date.UTC(2003, 9, 11, 22, 14, 15, 3),
      host: "mymachine.example.com",
      appName: "evntslog",
      msgId: "ID47",
      message: "An application event log entry...",
    },
  },
  {
    name: "RFC 5424 structured data with escapes and two elements, no message",
    input: '<22>1 2026-11-28T12:34:56Z h app - - [a@1 x="q\\"uo\\]te\\\\"][b@2]',
    want: {
      format: "rfc5424",
      facility: 2,
      severity: 6,
      timestamp: Date.UTC(2026, 10, 28, 12, 34, 56),
      host: "h",
      appName: "app",
      message: "",
    },
  },
  {
    name: "RFC 5424 all NILVALUE",
    input: "<34>1 - - - - - -",
    want: { format: "rfc5424", facility: 4, severity: 2, message: "" },
  },
];

const invalid: { name: string; input: string | Buffer }[] = [
  { name: "empty", input: "" },
  { name: "no PRI", input: "Nov 28 12:34:56 dovecot: hello" },
  { name: "empty PRI", input: "<>hello" },
  { name: "PRI over 191", input: "<192>hello" },
  { name: "PRI of four digits", input: "<0022>hello" },
  { name: "PRI with a leading zero", input: "<01>hello" },
  { name: "PRI not a number", input: "<2a>hello" },
  { name: "PRI unclosed", input: "<22 hello" },
  { name: "over MAX_SYSLOG_BYTES", input: `<22>${"x".repeat(MAX_SYSLOG_BYTES)}` },
  { name: "RFC 5424 timestamp without a zone", input: "<22>1 2026-11-28T12:34:56 h a - - - m" },
  { name: "RFC 5424 zone without a colon", input: "<22>1 2026-11-28T12:34:56+0100 h a - - - m" },
  { name: "RFC 5424 timestamp with a space", input: "<22>1 2026-11-28 12:34:56Z h a - - - m" },
  { name: "RFC 5424 timestamp out of range", input: "<22>1 2026-02-30T12:34:56Z h a - - - m" },
  { name: "RFC 5424 header cut short", input: "<22>1 2026-11-28T12:34:56Z host app" },
  { name: "RFC 5424 two spaces (empty field)", input: "<22>1 2026-11-28T12:34:56Z  app - - - m" },
  { name: "RFC 5424 APP-NAME of 49 characters", input: `<22>1 - h ${"a".repeat(49)} - - - m` },
  { name: "RFC 5424 non-ASCII HOSTNAME", input: "<22>1 - hôst a - - - m" },
  { name: "RFC 5424 structured data neither - nor [", input: "<22>1 - h a - - x m" },
  { name: "RFC 5424 SD element unclosed", input: '<22>1 - h a - - [a@1 x="y" m' },
  { name: "RFC 5424 SD value unclosed", input: '<22>1 - h a - - [a@1 x="y] m' },
  { name: "RFC 5424 SD param without quotes", input: "<22>1 - h a - - [a@1 x=y] m" },
  { name: "RFC 5424 SD-ID of 33 characters", input: `<22>1 - h a - - [${"i".repeat(33)}] m` },
  { name: "RFC 5424 no space after SD", input: "<22>1 - h a - - [a@1]m" },
];

const bytes = (input: string | Buffer) => (Buffer.isBuffer(input) ? input : Buffer.from(input));

describe("decodeSyslog", () => {
  for (const c of valid) {
    it(`valid: ${c.name}`, () => {
      assert.deepEqual(decodeSyslog(bytes(c.input), NOW), c.want);
    });
  }
  for (const c of invalid) {
    it(`invalid: ${c.name}`, () => {
      assert.throws(() => decodeSyslog(bytes(c.input), NOW), ProtocolError);
    });
  }

  it("a login in either format becomes the same record, the header's time as `at`", () => {
    const r3164 = syslogRecord(decodeSyslog(bytes(valid[1]?.input ?? ""), NOW));
    const r5424 = syslogRecord(decodeSyslog(bytes(valid[7]?.input ?? ""), NOW));
    const want = {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: "RkamOl1hNJh/AAAB",
    };
    assert.deepEqual(r3164, { ...want, at: LOCAL_AT });
    assert.deepEqual(r5424, { ...want, at: Date.UTC(2026, 10, 28, 11, 34, 56, 123) });
  });

  it("round trip: RFC 5424 fields through a test encoder", () => {
    const token = (max: number) =>
      fc.string({
        unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
        minLength: 2,
        maxLength: max,
      });
    fc.assert(
      fc.property(
        fc.nat(191),
        fc.option(fc.integer({ min: 0, max: 4_102_444_799_999 }), { nil: undefined }),
        fc.option(token(255), { nil: undefined }),
        fc.option(token(48), { nil: undefined }),
        fc.option(token(128), { nil: undefined }),
        fc.option(token(32), { nil: undefined }),
        fc
          .string({ maxLength: 50 })
          .filter((m) => !/^[\n\r\0\ufeff]|[\n\r\0]$/.test(m) && m.isWellFormed()),
        (pri, timestamp, host, appName, procId, msgId, message) => {
          const nil = (x: string | undefined) => x ?? "-";
          const ts = timestamp === undefined ? "-" : new Date(timestamp).toISOString();
          const wire = `<${pri}>1 ${ts} ${nil(host)} ${nil(appName)} ${nil(procId)} ${nil(msgId)} - ${message}`;
          const m = decodeSyslog(Buffer.from(wire), NOW);
          assert.equal(m.facility * 8 + m.severity, pri);
          assert.equal(m.timestamp, timestamp);
          assert.equal(m.host, host);
          assert.equal(m.appName, appName);
          assert.equal(m.procId, procId);
          assert.equal(m.msgId, msgId);
          assert.equal(m.message, message);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("property: no datagram throws anything but ProtocolError", () => {
    const pieces = fc.constantFrom(
      "<22>",
      "<22>1 ",
      "- ",
      "[a@1 ",
      'x="',
      "\\",
      "]",
      " ",
      "Nov 28 12:34:56 ",
      "2026-11-28T12:34:56Z ",
      "host ",
      "dovecot: ",
      "dovecot[1]: ",
      LOGIN,
      "\ufeff",
      "\0",
    );
    const datagrams = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.array(pieces, { maxLength: 12 }).map((p) => Buffer.from(p.join(""))),
    );
    fc.assert(
      fc.property(datagrams, (d) => {
        try {
          syslogRecord(decodeSyslog(d, NOW));
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
        }
      }),
      { numRuns: 20000 },
    );
  });
});
