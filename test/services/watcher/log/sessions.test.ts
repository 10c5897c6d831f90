// Session keep-alive: transcripts of logins, logouts and due() calls with the renewals expected,
// on a 30 min TTL (renewal after 20 min).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { LogRecord } from "../../../../services/watcher/log/record.ts";
import {
  SessionTracker,
  type Renewal,
  type SessionTrackerOptions,
} from "../../../../services/watcher/log/sessions.ts";

const MIN = 60_000;
const TTL = 30 * MIN;
const A = "203.0.113.5";
const B = "198.51.100.7";

type Step = { at: number; record: LogRecord } | { at: number; due: Renewal[] };

interface Case {
  name: string;
  options?: Partial<SessionTrackerOptions>;
  steps: Step[];
  stats?: Partial<SessionTracker["stats"]>;
  open?: number;
}

const imapLogin = (ip: string, session?: string, user = "alice"): LogRecord => ({
  kind: "login",
  ip,
  user,
  service: "imap",
  server: "dovecot",
  ...(session === undefined ? {} : { session }),
});
const renew = (ip: string, user = "alice", service = "imap"): Renewal => ({ ip, user, service });

const cases: Case[] = [
  {
    name: "an open IMAP session is renewed every 2/3 TTL until its logout",
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: 19 * MIN, due: [] },
      { at: 20 * MIN, due: [renew(A)] },
      { at: 39 * MIN, due: [] },
      { at: 40 * MIN, due: [renew(A)] },
      { at: 45 * MIN, record: { kind: "logout", user: "alice", service: "imap", session: "s1" } },
      { at: 60 * MIN, due: [] },
    ],
    stats: { renewals: 2, logins: 1, logouts: 1 },
    open: 0,
  },
  {
    name: "a POP3 session that ends at once is never renewed",
    steps: [
      { at: 0, record: { kind: "login", ip: A, service: "pop3", server: "dovecot", session: "p" } },
      { at: 1000, record: { kind: "logout", service: "pop3", session: "p" } },
      { at: 25 * MIN, due: [] },
    ],
  },
  {
    name: "two sessions at one address: one renewal, until both end",
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: 5 * MIN, record: imapLogin(A, "s2") },
      { at: 25 * MIN, due: [renew(A)] },
      { at: 26 * MIN, record: { kind: "logout", session: "s1" } },
      { at: 45 * MIN, due: [renew(A)] },
      { at: 46 * MIN, record: { kind: "logout", session: "s2" } },
      { at: 70 * MIN, due: [] },
    ],
  },
  {
    name: "without session ids, logouts close by address (UW, Courier)",
    steps: [
      {
        at: 0,
        record: { kind: "login", ip: A, user: "alice", service: "imap", server: "courier" },
      },
      { at: 0, record: { kind: "login", ip: A, user: "bob", service: "imap", server: "courier" } },
      { at: MIN, record: { kind: "logout", ip: A, user: "alice", service: "imap" } },
      { at: 21 * MIN, due: [renew(A, "bob")] },
      { at: 22 * MIN, record: { kind: "logout", ip: A } },
      { at: 50 * MIN, due: [] },
    ],
  },
  {
    name: "a logout with only a user closes that user's oldest session (Dovecot 2.2)",
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: MIN, record: imapLogin(B, "s2", "carol") },
      { at: 2 * MIN, record: { kind: "logout", user: "alice", service: "imap" } },
      { at: 21 * MIN, due: [renew(B, "carol")] },
    ],
    open: 1,
  },
  {
    name: "a logout that matches nothing is counted and opens nothing",
    steps: [
      { at: 0, record: { kind: "logout", ip: A, user: "alice", service: "imap" } },
      { at: 0, record: { kind: "logout", session: "unknown" } },
      { at: 0, record: { kind: "logout" } },
      { at: 25 * MIN, due: [] },
    ],
    stats: { logouts: 3, unmatchedLogouts: 3 },
    open: 0,
  },
  {
    name: "a missed logout stops renewing after the maximum session age",
    options: { maxSessionAgeMs: 60 * MIN },
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: 20 * MIN, due: [renew(A)] },
      { at: 40 * MIN, due: [renew(A)] },
      { at: 60 * MIN, due: [] },
    ],
    stats: { expired: 1 },
    open: 0,
  },
  {
    name: "beyond maxSessions the oldest session is evicted",
    options: { maxSessions: 2 },
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: MIN, record: imapLogin(B, "s2", "bob") },
      { at: 2 * MIN, record: imapLogin(B, "s3", "bob") },
      { at: 22 * MIN, due: [renew(B, "bob")] },
    ],
    stats: { evicted: 1 },
    open: 2,
  },
  {
    name: "a login read late is due at once",
    steps: [
      { at: 25 * MIN, record: { ...imapLogin(A, "s1"), at: 0 } },
      { at: 25 * MIN, due: [renew(A)] },
      { at: 44 * MIN, due: [] },
    ],
  },
  {
    name: "a login time in the future counts as now",
    steps: [
      { at: 0, record: { ...imapLogin(A, "s1"), at: 10 * MIN } },
      { at: 20 * MIN, due: [renew(A)] },
    ],
  },
  {
    name: "the same login line read twice is one session",
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: 0, record: imapLogin(A, "s1") },
      { at: MIN, record: { kind: "logout", session: "s1" } },
      { at: 25 * MIN, due: [] },
    ],
    open: 0,
  },
  {
    name: "a login older than the maximum session age is not tracked",
    steps: [{ at: 25 * 60 * MIN, record: { ...imapLogin(A, "s1"), at: 0 } }],
    stats: { stale: 1, logins: 0 },
    open: 0,
  },
  {
    name: "a renewal names the latest login's user and service",
    steps: [
      { at: 0, record: imapLogin(A, "s1") },
      { at: MIN, record: { kind: "login", ip: A, service: "pop3", server: "qpopper" } },
      { at: 21 * MIN, due: [{ ip: A, service: "pop3" }] },
    ],
  },
];

describe("SessionTracker", () => {
  for (const c of cases) {
    it(c.name, () => {
      const t = new SessionTracker({ leaseTtlMs: TTL, ...c.options });
      for (const step of c.steps) {
        if ("record" in step) t.record(step.record, step.at);
        else assert.deepEqual(t.due(step.at), step.due, `due at ${step.at / MIN} min`);
      }
      for (const [k, v] of Object.entries(c.stats ?? {})) {
        assert.equal(t.stats[k as keyof typeof t.stats], v, k);
      }
      if (c.open !== undefined) assert.equal(t.size, c.open);
    });
  }

  it("refuses nonsense options", () => {
    assert.throws(() => new SessionTracker({ leaseTtlMs: 0 }), RangeError);
    assert.throws(() => new SessionTracker({ leaseTtlMs: TTL, renewAfter: 1 }), RangeError);
    assert.throws(() => new SessionTracker({ leaseTtlMs: TTL, maxSessions: 0 }), RangeError);
  });

  it("stays within maxSessions under many logins", () => {
    const t = new SessionTracker({ leaseTtlMs: TTL, maxSessions: 100 });
    for (let i = 0; i < 10_000; i++) {
      t.record(imapLogin(`10.0.${i >> 8}.${i & 255}`, `s${i}`), i);
    }
    assert.equal(t.size, 100);
    assert.equal(t.addresses, 100);
    assert.equal(t.stats.evicted, 9900);
  });
});
