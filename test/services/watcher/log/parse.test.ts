// Log line parser: named tables of real-looking lines per server (login-sources.md §4), the
// "must NOT match" list (§4.7), and property tests that no string throws or yields a bad record.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { tryParseAddress } from "../../../../shared/address.ts";
import {
  MAX_LINE_CHARS,
  parseLogLine,
  parseLogMessage,
  type LogRecord,
} from "../../../../services/watcher/log/parse.ts";

/** Local time, as classic syslog timestamps are read. */
const local = (mo: number, d: number, h: number, mi: number, s: number, y = 2026) =>
  new Date(y, mo - 1, d, h, mi, s).getTime();
const NOW = local(11, 29, 10, 0, 0);
const AT = local(11, 28, 12, 34, 56);
const TS = "Nov 28 12:34:56";

interface Case {
  name: string;
  line: string;
  want: LogRecord;
}

const SID = "RkamOl1hNJh/AAAB";

const dovecot: Case[] = [
  {
    name: "syslog imap-login (reference line)",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=12345, TLS, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "syslog pop3-login",
    line: `${TS} mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.10, mpid=12346, TLS, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "198.51.100.7",
      user: "bob",
      service: "pop3",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "own log_path, Dovecot 2.3.19.1 exact",
    line: `Nov 28 21:55:04 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=16473, secured, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "127.0.0.1",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: local(11, 28, 21, 55, 4),
    },
  },
  {
    name: "own log_path pop3, second loopback address as the client",
    line: "Nov 28 21:55:57 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.2, lip=127.0.0.1, mpid=17131, session=<hW7nPl1hxJd/AAAC>",
    want: {
      kind: "login",
      ip: "127.0.0.2",
      user: "alice",
      service: "pop3",
      server: "dovecot",
      session: "hW7nPl1hxJd/AAAC",
      at: local(11, 28, 21, 55, 57),
    },
  },
  {
    name: "IPv6 bare, long session id",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=::1, lip=::1, mpid=12345, secured, session=<x8iyOl1h2ooAAAAAAAAAAAAAAAAAAAAB>`,
    want: {
      kind: "login",
      ip: "::1",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: "x8iyOl1h2ooAAAAAAAAAAAAAAAAAAAAB",
      at: AT,
    },
  },
  {
    name: "IPv6 upper case becomes RFC 5952",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=2001:DB8:0:0::5, lip=2001:db8::1, mpid=1, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "2001:db8::5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "IPv4-mapped becomes IPv4",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=::ffff:203.0.113.5, lip=::ffff:192.0.2.10, mpid=1, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "RFC 3339 timestamp (rsyslog on Debian 12)",
    line: `2026-11-28T12:34:56.123456+01:00 mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1, TLS, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: Date.UTC(2026, 10, 28, 11, 34, 56, 123),
    },
  },
  {
    name: "elements in another order",
    line: `${TS} mail dovecot: imap-login: Login: session=<${SID}>, rip=203.0.113.5, user=<alice>, method=PLAIN`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "user holding commas and a space",
    line: `${TS} mail dovecot: imap-login: Login: user=<smith, john>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "smith, john",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "empty user, no session element",
    line: `${TS} mail dovecot: pop3-login: Login: user=<>, method=EXTERNAL, rip=203.0.113.5, lip=192.0.2.10`,
    want: { kind: "login", ip: "203.0.113.5", service: "pop3", server: "dovecot", at: AT },
  },
  {
    name: "tag with a pid, no host",
    line: `${TS} dovecot[812]: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
      at: AT,
    },
  },
  {
    name: "no timestamp (a syslog message body)",
    line: `dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, session=<${SID}>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      session: SID,
    },
  },
  {
    name: "Dovecot 1.0 form",
    line: `${TS} mail dovecot: imap-login: Login: alice [203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "dovecot",
      at: AT,
    },
  },
  {
    name: "Dovecot 1.0 with a mapped address in brackets",
    line: `${TS} mail dovecot: pop3-login: Login: alice [::ffff:203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "dovecot",
      at: AT,
    },
  },
  {
    name: "logout, 2.3 mail_log_prefix via syslog",
    line: `${TS} mail dovecot: imap(alice)<12345><${SID}>: Disconnected: Logged out in=12 out=345`,
    want: { kind: "logout", user: "alice", service: "imap", session: SID, at: AT },
  },
  {
    name: "logout, own log_path",
    line: `Nov 28 21:56:00 imap(alice)<16473><${SID}>: Info: Disconnected: Logged out in=44 out=545 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0`,
    want: {
      kind: "logout",
      user: "alice",
      service: "imap",
      session: SID,
      at: local(11, 28, 21, 56, 0),
    },
  },
  {
    name: "logout, 2.2 prefix without pid and session",
    line: `${TS} mail dovecot: pop3(alice): Disconnected: Logged out top=0/0, retr=1/1024, del=1/1, size=1024`,
    want: { kind: "logout", user: "alice", service: "pop3", at: AT },
  },
  {
    name: "connection closed in IDLE",
    line: `${TS} mail dovecot: imap(alice)<12345><${SID}>: Connection closed (IDLE running for 0.001 + waiting input for 1785.002 secs, 2 B in + 10+10 B out, state=wait-input) in=1234 out=5678`,
    want: { kind: "logout", user: "alice", service: "imap", session: SID, at: AT },
  },
  {
    name: "disconnected for inactivity",
    line: `${TS} mail dovecot: imap(alice)<12345><${SID}>: Disconnected for inactivity in=1 out=2`,
    want: { kind: "logout", user: "alice", service: "imap", session: SID, at: AT },
  },
];

const uw: Case[] = [
  {
    name: "ipop3d Login (reference line)",
    line: `${TS} mail ipop3d[123]: Login user=alice host=client.example.com [203.0.113.5] nmsgs=3/3`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "imapd Login (reference line)",
    line: `${TS} mail imapd[123]: Login user=alice host=client.example.com [203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "Authenticated with mech",
    line: `${TS} mail imapd[123]: Authenticated user=alice host=client.example.com [203.0.113.5] mech=PLAIN`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "Auth, host only [ip]",
    line: `${TS} mail imapsd[123]: Auth user=alice host=[203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "APOP",
    line: `${TS} mail ipop3sd[123]: APOP user=alice host=client.example.com [203.0.113.5] nmsgs=0/0`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "Admin prefix",
    line: `${TS} mail imapd[123]: Admin Login user=root host=client.example.com [203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "root",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "Solaris message id before Login",
    line: `${TS} mail imapd[123]: [ID 748625 mail.info] Login user=alice host=client.example.com [203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "[...] glued before Login (pop-before-smtp's alternative UW pattern)",
    line: `${TS} mail imapd[123]: [ID 748625 mail.info]Login user=alice host=client.example.com [203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "IPv6 and a user name forging host=",
    line: `${TS} mail imapd[123]: Login user=x host=[198.51.100.66] host=client.example.com [2001:db8::5]`,
    want: {
      kind: "login",
      ip: "2001:db8::5",
      user: "x host=[198.51.100.66]",
      service: "imap",
      server: "uw-imap",
      at: AT,
    },
  },
  {
    name: "Logout",
    line: `${TS} mail imapd[123]: Logout user=alice host=client.example.com [203.0.113.5]`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "imap", at: AT },
  },
  {
    name: "Autologout",
    line: `${TS} mail imapd[123]: Autologout user=alice host=client.example.com [203.0.113.5]`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "imap", at: AT },
  },
  {
    name: "Killed",
    line: `${TS} mail imapd[123]: Killed (lost mailbox lock) user=alice host=client.example.com [203.0.113.5]`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "imap", at: AT },
  },
  {
    name: "Command stream end of file",
    line: `${TS} mail ipop3d[123]: Command stream end of file while reading line user=alice host=client.example.com [203.0.113.5]`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "pop3", at: AT },
  },
];

const courier: Case[] = [
  {
    name: "imapd LOGIN (reference line)",
    line: `${TS} mail imapd: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[51234], protocol=IMAP`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "pop3d with stls=1",
    line: `${TS} mail pop3d: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[51234], protocol=POP3, stls=1`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "imapd-ssl, IPv6 client",
    line: `${TS} mail imapd-ssl: LOGIN, user=alice@example.com, ip=[2001:db8::5], port=[51234], protocol=IMAP`,
    want: {
      kind: "login",
      ip: "2001:db8::5",
      user: "alice@example.com",
      service: "imap",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "pop3d-ssl",
    line: `${TS} mail pop3d-ssl: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[995], protocol=POP3`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "courierpop3login, no protocol field",
    line: `${TS} mail courierpop3login: LOGIN, user=alice, ip=[::ffff:203.0.113.5]`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "imaplogin",
    line: `${TS} mail imaplogin: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[4711], protocol=IMAP`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "couriertcpd names the protocol",
    line: `${TS} mail couriertcpd: LOGIN, user=alice, ip=[::ffff:203.0.113.5], port=[4711], protocol=POP3`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "courier",
      at: AT,
    },
  },
  {
    name: "LOGOUT",
    line: `${TS} mail imapd: LOGOUT, user=alice, ip=[::ffff:203.0.113.5], headers=0, body=0, rcvd=83, sent=509, time=5`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "imap", at: AT },
  },
  {
    name: "TIMEOUT",
    line: `${TS} mail imapd: TIMEOUT, user=alice, ip=[::ffff:203.0.113.5], headers=0, body=0, rcvd=83, sent=509, time=1800`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "imap", at: AT },
  },
  {
    name: "DISCONNECTED",
    line: `${TS} mail pop3d: DISCONNECTED, user=alice, ip=[::ffff:203.0.113.5], port=[51234], top=0, retr=0, rcvd=6, sent=30, time=0`,
    want: { kind: "logout", ip: "203.0.113.5", user: "alice", service: "pop3", at: AT },
  },
];

const cyrus: Case[] = [
  {
    name: "imap login (reference line)",
    line: `${TS} mail imap[4242]: login: client.example.com [::ffff:203.0.113.5] alice plaintext User logged in`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "cyrus",
      at: AT,
    },
  },
  {
    name: "cyrus/imap with SESSIONID (2.3+)",
    line: `${TS} mail cyrus/imap[4242]: login: client.example.com [203.0.113.5] alice PLAIN+TLS User logged in SESSIONID=<mail.example.com-4242-1732794896-1-1234567890>`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "cyrus",
      session: "mail.example.com-4242-1732794896-1-1234567890",
      at: AT,
    },
  },
  {
    name: "pop3d without a host name",
    line: `${TS} mail pop3d[77]: login: [203.0.113.5] alice plaintext User logged in`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "cyrus",
      at: AT,
    },
  },
  {
    name: "cyrus/pop3, IPv6",
    line: `${TS} mail cyrus/pop3[77]: login: client.example.com [2001:db8::5] alice plaintext User logged in`,
    want: {
      kind: "login",
      ip: "2001:db8::5",
      user: "alice",
      service: "pop3",
      server: "cyrus",
      at: AT,
    },
  },
  {
    name: "imaps",
    line: `${TS} mail imaps[4242]: login: client.example.com [203.0.113.5] alice DIGEST-MD5 User logged in`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "imap",
      server: "cyrus",
      at: AT,
    },
  },
];

const qpopper: Case[] = [
  {
    name: "popper login (reference line)",
    line: `${TS} mail popper[123]: (v4.0.5) POP login by user "alice" at (client.example.com) 203.0.113.5`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "qpopper",
      at: AT,
    },
  },
  {
    name: "in.qpopper",
    line: `${TS} mail in.qpopper[123]: (v4.1.0) POP login by user "alice" at (client.example.com) 203.0.113.5`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "qpopper",
      at: AT,
    },
  },
  {
    name: "own log format [popper]",
    line: `${TS} [popper] (v4.0.5) POP login by user "alice" at (client.example.com) 203.0.113.5`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "qpopper",
      at: AT,
    },
  },
  {
    name: "Stats with host",
    line: `${TS} mail qpopper[123]: Stats: alice 2 2048 0 0 client.example.com 203.0.113.5`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "qpopper",
      at: AT,
    },
  },
  {
    name: "Stats without host",
    line: `${TS} mail popper[123]: Stats: alice 0 0 0 0 203.0.113.5`,
    want: {
      kind: "login",
      ip: "203.0.113.5",
      user: "alice",
      service: "pop3",
      server: "qpopper",
      at: AT,
    },
  },
];

const mustNotMatch: { name: string; line: string }[] = [
  {
    name: "Dovecot aborted login (has user=, method=, rip=)",
    line: `${TS} mail dovecot: imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, session=<${SID}>`,
  },
  {
    name: "Dovecot 2.2 aborted login",
    line: `${TS} mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, session=<${SID}>`,
  },
  {
    name: "Dovecot disconnected, auth failed",
    line: `${TS} mail dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, TLS, session=<${SID}>`,
  },
  {
    name: "Dovecot log_path, no auth attempts",
    line: `Nov 28 21:55:10 imap-login: Info: Disconnected (no auth attempts in 0 secs): user=<>, rip=203.0.113.5, lip=127.0.0.1, session=<${SID}>`,
  },
  {
    name: "Dovecot auth failure",
    line: `${TS} mail dovecot: auth: passwd-file(bob,203.0.113.5,<${SID}>): Password mismatch`,
  },
  {
    name: "Dovecot auth worker failure",
    line: `${TS} mail dovecot: auth-worker(4711): pam(bob,203.0.113.5,<${SID}>): pam_authenticate() failed: Authentication failure (password mismatch?)`,
  },
  {
    name: "Dovecot proxy started",
    line: `${TS} mail dovecot: imap-login: proxy(alice): Started proxying to 192.0.2.20 (0.012 secs): user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, session=<${SID}>`,
  },
  {
    name: "Dovecot proxy disconnecting",
    line: `${TS} mail dovecot: pop3-login: proxy(alice): disconnecting 203.0.113.5 (Disconnected by client: EOF(0s idle, in=23, out=120))`,
  },
  {
    name: "Dovecot submission-login (not POP/IMAP)",
    line: `${TS} mail dovecot: submission-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1, TLS, session=<${SID}>`,
  },
  {
    name: "Dovecot managesieve-login",
    line: `${TS} mail dovecot: managesieve-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1, session=<${SID}>`,
  },
  {
    name: "Dovecot mail process, not a session end",
    line: `${TS} mail dovecot: imap(alice)<12345><${SID}>: Error: Mailbox INBOX: UID=12: read() failed`,
  },
  {
    name: "Dovecot login without rip",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, lip=192.0.2.10, session=<${SID}>`,
  },
  {
    name: "Dovecot rip out of range",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=203.0.113.256, lip=192.0.2.10`,
  },
  {
    name: "Dovecot rip with a zone id",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, method=PLAIN, rip=fe80::1%eth0, lip=fe80::2`,
  },
  {
    name: "Dovecot rip twice (forged element)",
    line: `${TS} mail dovecot: imap-login: Login: user=<x>, rip=198.51.100.66, z=<>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10`,
  },
  {
    name: "Dovecot unclosed <value>",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice, method=PLAIN, rip=203.0.113.5`,
  },
  {
    name: "login text quoted in a Postfix line",
    line: `${TS} mail postfix/cleanup[2201]: 4Xyz1: warning: header Subject: imap-login: Login: user=<x>, rip=198.51.100.1 from unknown[198.51.100.1]`,
  },
  {
    name: "another program wearing Dovecot's message",
    line: `${TS} mail notdovecot: imap-login: Login: user=<x>, method=PLAIN, rip=198.51.100.1`,
  },
  {
    name: "Postfix connect",
    line: `${TS} mail postfix/smtpd[1234]: connect from unknown[203.0.113.5]`,
  },
  {
    name: "Postfix relay denied",
    line: `${TS} mail postfix/smtpd[1234]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <x@remote.example>: Relay access denied; from=<a@b.example> to=<x@remote.example> proto=ESMTP helo=<pc>`,
  },
  {
    name: "Courier LOGIN FAILED",
    line: `${TS} mail imapd: LOGIN FAILED, user=bob, ip=[::ffff:203.0.113.5]`,
  },
  {
    name: "Courier login without a protocol from couriertcpd",
    line: `${TS} mail couriertcpd: LOGIN, user=bob, ip=[::ffff:203.0.113.5], port=[4711]`,
  },
  {
    name: "Cyrus badlogin",
    line: `${TS} mail imap[4242]: badlogin: client.example.com [203.0.113.5] plaintext bob SASL(-13): authentication failure: checkpass failed`,
  },
  {
    name: "Cyrus login without a mechanism",
    line: `${TS} mail imap[4242]: login: client.example.com [203.0.113.5] alice`,
  },
  {
    name: "UW Login failed",
    line: `${TS} mail imapd[123]: Login failed user=bob auth=bob host=client.example.com [203.0.113.5]`,
  },
  {
    name: "UW AUTHENTICATE failure",
    line: `${TS} mail imapd[123]: AUTHENTICATE PLAIN failure host=client.example.com [203.0.113.5]`,
  },
  {
    name: "UW Login without an address",
    line: `${TS} mail imapd[123]: Login user=alice host=client.example.com`,
  },
  {
    name: "qpopper wrong password",
    line: `${TS} mail popper[123]: bob at client.example.com (203.0.113.5): -ERR [AUTH] Password supplied for "bob" is incorrect.`,
  },
  {
    name: "qpopper Stats with a word for a counter",
    line: `${TS} mail popper[123]: Stats: alice 0 x 0 0 203.0.113.5`,
  },
  { name: "empty line", line: "" },
  { name: "a timestamp only", line: TS },
  { name: "no tag", line: `${TS} mail hello world` },
  {
    name: "longer than MAX_LINE_CHARS",
    line: `${TS} mail dovecot: imap-login: Login: user=<alice>, rip=203.0.113.5, x=${"y".repeat(MAX_LINE_CHARS)}`,
  },
];

function table(name: string, cases: Case[]): void {
  describe(name, () => {
    for (const c of cases) {
      it(c.name, () => {
        assert.deepEqual(parseLogLine(c.line, NOW), c.want);
      });
    }
  });
}

table("Dovecot lines", dovecot);
table("UW imapd/ipop3d lines", uw);
table("Courier lines", courier);
table("Cyrus lines", cyrus);
table("qpopper lines", qpopper);

describe("must NOT match (login-sources.md §4.7)", () => {
  for (const c of mustNotMatch) {
    it(c.name, () => {
      assert.equal(parseLogLine(c.line, NOW), undefined);
    });
  }
  it("logout and disconnect lines never start a lease", () => {
    const all = [...dovecot, ...uw, ...courier].filter((c) => c.want.kind === "logout");
    assert.ok(all.length >= 10);
    for (const c of all) assert.equal(parseLogLine(c.line, NOW)?.kind, "logout", c.name);
  });
});

describe("parseLogMessage (program already known, as from syslog)", () => {
  it("gives the line's record without its timestamp", () => {
    for (const c of [...dovecot, ...uw, ...courier, ...cyrus, ...qpopper]) {
      const m = /^(?:\S+ +\d+ \S+|\S+T\S+) (?:mail )?(\S+?)(?:\[\d+\])?: (.*)$/.exec(c.line);
      if (m === null) continue; // log_path and [popper] lines have no syslog tag
      const want: LogRecord = { ...c.want };
      delete want.at;
      assert.deepEqual(parseLogMessage(m[1] ?? "", m[2] ?? ""), want, c.name);
    }
  });
});

describe("timestamps", () => {
  const line = (ts: string) =>
    `${ts} mail dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1`;
  const cases: { name: string; ts: string; now?: number; at: number | undefined }[] = [
    { name: "classic, two-digit day", ts: "Nov 28 12:34:56", at: AT },
    { name: "classic, space-padded day", ts: "Nov  8 01:02:03", at: local(11, 8, 1, 2, 3) },
    {
      name: "classic, zero-padded day (Dovecot %d)",
      ts: "Nov 08 01:02:03",
      at: local(11, 8, 1, 2, 3),
    },
    { name: "classic, unpadded day", ts: "Nov 8 01:02:03", at: local(11, 8, 1, 2, 3) },
    {
      name: "rollover: Dec 31 read on Jan 1 is last year's",
      ts: "Dec 31 23:59:58",
      now: local(1, 1, 0, 0, 10, 2027),
      at: local(12, 31, 23, 59, 58, 2026),
    },
    {
      name: "rollover: Jan 1 read just before midnight (clock ahead) is next year's",
      ts: "Jan  1 00:00:01",
      now: local(12, 31, 23, 59, 59, 2026),
      at: local(1, 1, 0, 0, 1, 2027),
    },
    {
      name: "a date later this year is last year's",
      ts: "Dec 24 18:00:00",
      now: local(6, 1, 12, 0, 0, 2026),
      at: local(12, 24, 18, 0, 0, 2025),
    },
    {
      name: "Feb 29 falls in the last leap year",
      ts: "Feb 29 12:00:00",
      now: local(3, 1, 12, 0, 0, 2029),
      at: local(2, 29, 12, 0, 0, 2028),
    },
    {
      name: "Feb 29 with no leap year near",
      ts: "Feb 29 12:00:00",
      now: local(3, 1, 12, 0, 0, 2027),
      at: undefined,
    },
    { name: "classic, hour 24", ts: "Nov 28 24:00:00", at: undefined },
    { name: "classic, day 0", ts: "Nov  0 12:00:00", at: undefined },
    {
      name: "RFC 3339 with µs and +01:00",
      ts: "2026-11-28T12:34:56.123456+01:00",
      at: Date.UTC(2026, 10, 28, 11, 34, 56, 123),
    },
    {
      name: "RFC 3339 with -05:30",
      ts: "2026-11-28T12:34:56-05:30",
      at: Date.UTC(2026, 10, 28, 18, 4, 56),
    },
    { name: "RFC 3339 Z", ts: "2026-11-28T12:34:56Z", at: Date.UTC(2026, 10, 28, 12, 34, 56) },
    {
      name: "RFC 3339 lower-case t and z, one fraction digit",
      ts: "2026-11-28t12:34:56.5z",
      at: Date.UTC(2026, 10, 28, 12, 34, 56, 500),
    },
    {
      name: "journalctl -o short-iso zone without a colon",
      ts: "2026-11-28T12:34:56+0100",
      at: Date.UTC(2026, 10, 28, 11, 34, 56),
    },
    { name: "date-time without zone is local", ts: "2026-11-28T12:34:56", at: AT },
    { name: "date space time without zone is local", ts: "2026-11-28 12:34:56", at: AT },
    { name: "RFC 3339 Feb 30", ts: "2026-02-30T12:00:00Z", at: undefined },
    { name: "RFC 3339 month 13", ts: "2026-13-01T12:00:00Z", at: undefined },
    { name: "RFC 3339 offset hour 24", ts: "2026-11-28T12:34:56+24:00", at: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const record = parseLogLine(line(c.ts), c.now ?? NOW);
      assert.equal(record?.kind, "login");
      assert.equal(record.at, c.at);
    });
  }

  it("reads a clock given for `now` only for a line that yields a record", () => {
    const reads: number[] = [];
    const clock = () => {
      reads.push(NOW);
      return NOW;
    };
    assert.equal(
      parseLogLine("Nov 28 12:34:56 mail postfix/smtpd[1]: connect from x", clock),
      undefined,
    );
    assert.equal(reads.length, 0, "a line that is no login reads no clock");
    assert.equal(parseLogLine(line("Nov 28 12:34:56"), clock)?.at, AT);
    assert.equal(reads.length, 1);
  });

  it("agrees with Date in a zone with summer time, across both switches, in any order", () => {
    const saved = process.env["TZ"];
    process.env["TZ"] = "Europe/Berlin";
    try {
      const now = new Date(2026, 10, 29).getTime();
      const pad = (n: number) => String(n).padStart(2, "0");
      // 2026: clocks go forward on March 29 at 02:00, back on October 25 at 03:00.
      const times = fc.tuple(
        fc.constantFrom([2, 29], [9, 25], [0, 1]),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 0, max: 59 }),
        fc.integer({ min: 0, max: 59 }),
      );
      fc.assert(
        fc.property(fc.array(times, { minLength: 1, maxLength: 20 }), (list) => {
          for (const [[mon, day], h, m, sec] of list) {
            const ts = `${["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"][mon] ?? ""} ${pad(day)} ${pad(h)}:${pad(m)}:${pad(sec)}`;
            const at = parseLogLine(line(ts), now)?.at;
            assert.equal(at, new Date(2026, mon, day, h, m, sec).getTime(), ts);
          }
        }),
        { numRuns: 300 },
      );
    } finally {
      if (saved === undefined) delete process.env["TZ"];
      else process.env["TZ"] = saved;
    }
  });

  it("every month's abbreviation, and near misses of each", () => {
    const months = [
      "Jan",
      "Feb",
      "Mar",
      "Apr",
      "May",
      "Jun",
      "Jul",
      "Aug",
      "Sep",
      "Oct",
      "Nov",
      "Dec",
    ];
    months.forEach((m, i) => {
      // Day 1 of each month: this year's, but for December, over a day after NOW: last year's.
      const at = parseLogLine(line(`${m}  1 00:00:00`), NOW)?.at;
      assert.equal(at, local(i + 1, 1, 0, 0, 0, i === 11 ? 2025 : 2026), m);
      for (const miss of [
        m.toLowerCase(),
        m.toUpperCase(),
        `${m.slice(0, 2)}x`,
        `x${m.slice(1)}`,
      ]) {
        assert.equal(parseLogLine(line(`${miss}  1 00:00:00`), NOW)?.at, undefined, miss);
      }
    });
  });
});

/** Whether r is undefined or a record every consumer can take as it is. */
function valid(r: LogRecord | undefined): boolean {
  if (r === undefined) return true;
  const textOk = (x: string | undefined, max: number) =>
    x === undefined || (x.length >= 1 && x.length <= max && !/[\p{Cc}]/u.test(x));
  const atOk = r.at === undefined || Number.isFinite(r.at);
  if (!textOk(r.user, 256) || !textOk(r.session, 128) || !atOk) return false;
  if (r.kind === "logout") return r.ip === undefined || tryParseAddress(r.ip)?.text === r.ip;
  return (
    tryParseAddress(r.ip)?.text === r.ip &&
    ["pop3", "imap"].includes(r.service) &&
    ["dovecot", "courier", "cyrus", "uw-imap", "qpopper"].includes(r.server)
  );
}

describe("property: parseLogLine never throws and yields valid records", () => {
  const real = [...dovecot, ...uw, ...courier, ...cyrus, ...qpopper].map((c) => c.line);
  const fragments = [
    TS,
    " ",
    "mail ",
    "dovecot: ",
    "dovecot[1]: ",
    "imap-login: ",
    "pop3-login: ",
    "Info: ",
    "Login: ",
    "user=<",
    ">",
    ", ",
    "rip=",
    "203.0.113.5",
    "::ffff:",
    "2001:db8::5",
    "session=<",
    "imap(",
    ")",
    "<",
    "Disconnected",
    "imapd[1]: ",
    "imapd: ",
    "imap[1]: ",
    "popper[1]: ",
    "Login user=",
    " host=",
    "[",
    "]",
    "LOGIN, user=",
    ", ip=[",
    "login: ",
    "Stats: ",
    "0 ",
    '(v4) POP login by user "',
    '" at (',
    ") ",
    "SESSIONID=<",
    "2026-11-28T12:34:56Z ",
    "[popper] ",
    "\u0000",
    "\uffff",
    "\ud800",
    "=",
    "\r",
  ];

  it("arbitrary strings", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), fc.integer(), (s, now) =>
        valid(parseLogLine(s, now)),
      ),
      { numRuns: 5000 },
    );
  });

  it("strings assembled from login-line fragments", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...fragments), { maxLength: 40 }), (parts) =>
        valid(parseLogLine(parts.join(""), NOW)),
      ),
      { numRuns: 20000 },
    );
  });

  it("real lines with characters deleted, replaced or inserted", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...real),
        fc.array(fc.tuple(fc.nat(), fc.nat(2), fc.string({ maxLength: 3 })), { maxLength: 5 }),
        (line, edits) => {
          let s = line;
          for (const [at, op, text] of edits) {
            const i = at % (s.length + 1);
            s = s.slice(0, i) + (op === 1 ? "" : text) + s.slice(op === 0 ? i : i + 1);
          }
          return valid(parseLogLine(s, NOW));
        },
      ),
      { numRuns: 20000 },
    );
  });
});

describe("property: a line read in place equals the line alone", () => {
  // The follower hands lines over as ranges of one string holding the whole chunk; nothing
  // before or after the range (here: other lines, or the rest of a cut line) may change the result.
  const real = [...dovecot, ...uw, ...courier, ...cyrus, ...qpopper].map((c) => c.line);
  const line = fc.oneof(
    fc.constantFrom(...real),
    fc.constantFrom(...real).chain((l) => fc.nat(l.length).map((n) => l.slice(0, n))),
    fc.string({ unit: "binary", maxLength: 120 }),
  );
  it("with any text before and after the range", () => {
    fc.assert(
      fc.property(
        line,
        line,
        line,
        fc.constantFrom("\n", "\r\n", "", " "),
        (l, before, after, sep) => {
          const text = `${before}${sep}${l}${sep}${after}`;
          const start = before.length + sep.length;
          const inPlace = parseLogLine(text, NOW, start, start + l.length);
          assert.deepEqual(inPlace, parseLogLine(l, NOW));
        },
      ),
      { numRuns: 20000 },
    );
  });
});

describe("records hold no reference to the chunk their line came from", () => {
  // A session tracker keeps records for hours; a user or session id that is a V8 slice of a
  // 64 KiB chunk would keep the whole chunk alive (record.ts `own`).
  it("200 records from 200 chunks of 100 KB leave no chunk alive", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const login =
      "Nov 28 12:34:56 mail dovecot: imap-login: Login: user=<alice.longname@example.com>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1, session=<RkamOl1hNJh/AAAB0123456789>";
    const kept: LogRecord[] = [];
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 200; i++) {
      const text = `${String(i).padStart(6, "0")}${"x".repeat(100_000)}\n${login}\n`;
      const start = text.indexOf("\n") + 1;
      const record = parseLogLine(text, NOW, start, start + login.length);
      assert.equal(record?.kind, "login");
      kept.push(record);
    }
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    assert.equal(kept.length, 200);
    // Pinned, the chunks would hold 20 MB.
    assert.ok(grown < 5_000_000, `heap grew by ${grown} bytes`);
  });
});
