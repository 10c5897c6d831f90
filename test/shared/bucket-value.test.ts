// Bucket values: leases and revocation tombstones, decoded from what the KV watch hands over.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeBucketValue, encodeRevocation } from "../../shared/bucket-value.ts";
import { encodeLease, leaseView, type Lease } from "../../shared/lease.ts";

const TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const LEASE: Lease = {
  ip: "203.0.113.5",
  user: "alice",
  service: "pop3",
  source: "dovecot-log",
  watcher: "mx-1",
  loginAt: Date.parse("2024-05-01T12:00:00.000Z"),
  expiresAt: Date.parse("2024-05-01T12:30:00.000Z"),
  event: "e-1",
  trace: TRACE,
};

describe("decodeBucketValue", () => {
  it("reads a value that is a view into a larger buffer", () => {
    const lease = encodeLease(LEASE);
    const framed = new Uint8Array(lease.length + 20).fill(0x7b);
    framed.set(lease, 10);
    assert.deepEqual(decodeBucketValue(framed.subarray(10, 10 + lease.length)), {
      kind: "lease",
      lease: LEASE,
    });
  });

  it("reads a revocation", () => {
    const r = encodeRevocation({ revokedAt: LEASE.loginAt, by: "cli", user: "alice" });
    assert.deepEqual(decodeBucketValue(r), {
      kind: "revoked",
      revokedAt: LEASE.loginAt,
      by: "cli",
      user: "alice",
    });
  });

  it("rejects an unknown kind and what is not JSON, naming the problem", () => {
    assert.throws(() => decodeBucketValue(Buffer.from('{"kind":"other"}')), /"kind"/);
    assert.throws(() => decodeBucketValue(Buffer.from("\uFEFF{}")), /not valid JSON/);
  });
});

describe("leaseView", () => {
  it("keeps only the decision's fields, and only those present", () => {
    assert.deepEqual(leaseView(LEASE), { expiresAt: LEASE.expiresAt, user: "alice", trace: TRACE });
    assert.deepEqual(leaseView({ ...LEASE, user: undefined, trace: undefined }), {
      expiresAt: LEASE.expiresAt,
    });
    assert.deepEqual(Object.keys(leaseView({ ...LEASE, user: undefined })), ["expiresAt", "trace"]);
  });
});
