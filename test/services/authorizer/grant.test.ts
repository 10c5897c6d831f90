// nextLease(): what an event does to the value under its key, as a readable table.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BucketValue } from "../../../shared/bucket-value.ts";
import type { Lease } from "../../../shared/lease.ts";
import { nextLease, type GuardPolicy } from "../../../services/authorizer/grant.ts";

const NOW = Date.parse("2026-11-28T12:00:00Z");
const MIN = 60_000;
const OFF: GuardPolicy = { maxUsersPerIp: 0, usersWindowMs: 10 * MIN, refuseSharedAddress: false };
const FLAG: GuardPolicy = { maxUsersPerIp: 2, usersWindowMs: 10 * MIN, refuseSharedAddress: false };
const REFUSE: GuardPolicy = { ...FLAG, refuseSharedAddress: true };

function lease(
  loginAgoMin: number,
  ttlMin: number,
  user?: string,
  recent?: [string, number][],
): Lease {
  const loginAt = NOW - loginAgoMin * MIN;
  return {
    ip: "192.0.2.1",
    user,
    service: "imap",
    source: "http",
    watcher: "w",
    loginAt,
    expiresAt: loginAt + ttlMin * MIN,
    event: `e-${loginAgoMin}-${user ?? ""}`,
    recent,
  };
}
const held = (l: Lease): BucketValue => ({ kind: "lease", lease: l });
const revokedAgo = (min: number): BucketValue => ({ kind: "revoked", revokedAt: NOW - min * MIN });

interface Case {
  name: string;
  current?: BucketValue;
  userRevokedAgoMin?: number;
  candidate: Lease;
  guard?: GuardPolicy;
  want: string;
  expiresAt?: number;
  distinct?: number;
}

const cases: Case[] = [
  { name: "a new key is created", candidate: lease(0, 30), want: "write created" },
  {
    name: "a later login extends",
    current: held(lease(10, 30)),
    candidate: lease(0, 30),
    want: "write extended",
    expiresAt: NOW + 30 * MIN,
  },
  {
    name: "an older event keeps the longer lease",
    current: held(lease(0, 30)),
    candidate: lease(10, 30),
    want: "keep kept",
  },
  {
    name: "the same event again keeps",
    current: held(lease(5, 30)),
    candidate: lease(5, 30),
    want: "keep kept",
  },
  {
    name: "a lease past its expiry is created anew",
    current: held(lease(40, 30)),
    candidate: lease(0, 30),
    want: "write created",
  },
  {
    name: "a login before the revocation is refused",
    current: revokedAgo(5),
    candidate: lease(6, 30),
    want: "refuse revoked",
  },
  {
    name: "a login at the revocation instant is refused",
    current: revokedAgo(5),
    candidate: lease(5, 30),
    want: "refuse revoked",
  },
  {
    name: "a login after the revocation grants again",
    current: revokedAgo(5),
    candidate: lease(1, 30),
    want: "write created",
  },
  {
    name: "a login before the user's revocation is refused",
    userRevokedAgoMin: 3,
    candidate: lease(4, 30, "alice"),
    want: "refuse user-revoked",
  },
  {
    name: "a login after the user's revocation grants",
    userRevokedAgoMin: 3,
    candidate: lease(1, 30, "alice"),
    want: "write created",
  },
  {
    name: "the guard records a second user without extending",
    current: held(lease(0, 30, "alice", [["alice", NOW]])),
    candidate: lease(1, 30, "bob"),
    guard: FLAG,
    want: "write recorded",
    expiresAt: NOW + 30 * MIN,
    distinct: 2,
  },
  {
    name: "the guard flags a third user but still grants when only flagging",
    current: held(
      lease(1, 30, "alice", [
        ["alice", NOW - MIN],
        ["bob", NOW - MIN],
      ]),
    ),
    candidate: lease(0, 30, "carol"),
    guard: FLAG,
    want: "write extended",
    distinct: 3,
  },
  {
    name: "the guard refuses a third user when told to",
    current: held(
      lease(1, 30, "alice", [
        ["alice", NOW - MIN],
        ["bob", NOW - MIN],
      ]),
    ),
    candidate: lease(0, 30, "carol"),
    guard: REFUSE,
    want: "refuse shared-address",
    distinct: 3,
  },
  {
    name: "users outside the window are forgotten",
    current: held(
      lease(1, 30, "alice", [
        ["alice", NOW - 20 * MIN],
        ["bob", NOW - 15 * MIN],
      ]),
    ),
    candidate: lease(0, 30, "carol"),
    guard: REFUSE,
    want: "write extended",
    distinct: 1,
  },
  {
    name: "a known user again does not rewrite a longer lease",
    current: held(lease(0, 30, "alice", [["alice", NOW]])),
    candidate: lease(2, 30, "alice"),
    guard: FLAG,
    want: "keep kept",
    distinct: 1,
  },
  {
    name: "without a guard nothing is recorded",
    current: held(lease(0, 30, "alice")),
    candidate: lease(1, 30, "bob"),
    guard: OFF,
    want: "keep kept",
  },
];

describe("nextLease", () => {
  for (const c of cases) {
    it(c.name, () => {
      const g = nextLease(
        c.current,
        c.userRevokedAgoMin === undefined ? undefined : NOW - c.userRevokedAgoMin * MIN,
        c.candidate,
        c.guard ?? OFF,
        NOW,
      );
      assert.equal(`${g.action} ${g.outcome}`, c.want);
      if (c.expiresAt !== undefined) {
        assert.equal(g.action, "write");
        assert.equal(g.value.expiresAt, c.expiresAt);
      }
      if (c.distinct !== undefined) assert.equal(g.distinctUsers, c.distinct);
    });
  }

  it("never shortens, whatever the order of events", () => {
    const events = Array.from({ length: 50 }, (_, i) => lease((i * 37) % 29, 30 + (i % 7)));
    let current: BucketValue | undefined;
    for (const e of events) {
      const g = nextLease(current, undefined, e, OFF, NOW);
      if (g.action === "write") {
        if (current?.kind === "lease") assert.ok(g.value.expiresAt >= current.lease.expiresAt);
        current = { kind: "lease", lease: g.value };
      }
    }
    assert.equal(
      current?.kind === "lease" ? current.lease.expiresAt : 0,
      Math.max(...events.map((e) => e.expiresAt)),
    );
  });

  it("keeps at most limit + 1 recent users", () => {
    let current: BucketValue | undefined;
    for (let i = 0; i < 20; i++) {
      const g = nextLease(current, undefined, lease(0, 30 + i, `u${i}`), FLAG, NOW);
      if (g.action === "write") current = { kind: "lease", lease: g.value };
    }
    assert.equal(current?.kind === "lease" ? current.lease.recent?.length : -1, 3);
  });
});
