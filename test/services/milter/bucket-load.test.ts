// The mirror's initial load on a real nats-server: every key's last entry once, deletes and
// expiry markers as such, the revision to resume after, nothing left behind on the server; and
// the delivery subject's two forms.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  loadBucket,
  parseDelivery,
  type BucketEntry,
} from "../../../services/milter/bucket-load.ts";
import { startTestNatsServer, type TestNatsServer } from "../../support/nats-server.ts";
import { waitFor } from "../../support/wait.ts";

describe("parseDelivery", () => {
  const cases = [
    {
      name: "the classic form",
      reply: "$JS.ACK.KV_b.c1.1.42.7.1732849200123456789.3",
      want: { streamSeq: 42, deliverySeq: 7, timestampMs: 1732849200123, pending: 3 },
    },
    {
      name: "with domain and account hash",
      reply: "$JS.ACK.hub.ACCHASH.KV_b.c1.1.42.7.1732849200123456789.0",
      want: { streamSeq: 42, deliverySeq: 7, timestampMs: 1732849200123, pending: 0 },
    },
    {
      name: "with domain, account hash and a trailing token",
      reply: "$JS.ACK.hub.ACCHASH.KV_b.c1.1.42.7.1732849200123456789.0.xyz",
      want: { streamSeq: 42, deliverySeq: 7, timestampMs: 1732849200123, pending: 0 },
    },
    { name: "no reply", reply: undefined, want: undefined },
    { name: "an inbox", reply: "_INBOX.abc", want: undefined },
    { name: "too few tokens", reply: "$JS.ACK.KV_b.c1.1.42.7.3", want: undefined },
    { name: "a number that is not one", reply: "$JS.ACK.KV_b.c1.1.4x.7.1.3", want: undefined },
    { name: "an empty token", reply: "$JS.ACK.KV_b.c1.1..7.1.3", want: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(parseDelivery(c.reply), c.want);
    });
  }

  /** The plain reading, by split: what the fast one must agree with. */
  function reference(reply: string): unknown {
    const tokens = reply.split(".");
    if (tokens[0] !== "$JS" || tokens[1] !== "ACK") return undefined;
    const at = tokens.length === 9 ? 5 : tokens.length === 11 || tokens.length === 12 ? 7 : -1;
    if (at < 0) return undefined;
    const n = tokens.slice(at, at + 4).map((t) => (/^\d{1,20}$/.test(t) ? Number(t) : NaN));
    if (n.some(Number.isNaN)) return undefined;
    const [streamSeq, deliverySeq, nanos, pending] = n as [number, number, number, number];
    return { streamSeq, deliverySeq, timestampMs: Math.floor(nanos / 1e6), pending };
  }

  it("agrees with a plain split on any subject of tokens, in any order of calls", () => {
    const token = fc.oneof(
      { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 21n }).map(String) },
      { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_]{0,6}$/) },
    );
    const subject = fc
      .array(token, { minLength: 5, maxLength: 14 })
      .map((ts) => `$JS.ACK.${ts.join(".")}`);
    fc.assert(
      fc.property(fc.array(subject, { minLength: 1, maxLength: 4 }), (replies) => {
        for (const reply of replies) assert.deepEqual(parseDelivery(reply), reference(reply));
      }),
      { numRuns: 20_000 },
    );
  });
});

describe("loadBucket", () => {
  let server: TestNatsServer;
  let nc: NatsConnection;
  before(async () => {
    server = await startTestNatsServer();
    nc = await connect({ servers: server.url });
  });
  after(async () => {
    await nc.close();
    await server.cleanup();
  });

  async function load(bucket: string): Promise<{ entries: BucketEntry[]; revision: number }> {
    const entries: BucketEntry[] = [];
    const revision = await loadBucket(nc, bucket, (e) => entries.push(e));
    return { entries, revision };
  }

  it("resolves at once with revision 0 for an empty bucket", async () => {
    await new Kvm(jetstream(nc)).create("empty", { history: 1 });
    assert.deepEqual(await load("empty"), { entries: [], revision: 0 });
  });

  it("gives each key's last entry once, in revision order, deletes as such", async () => {
    const kv = await new Kvm(jetstream(nc)).create("keys", { history: 1 });
    const t0 = Date.now();
    await kv.put("v4.192.0.2.1", Buffer.from("one"));
    await kv.put("v4.192.0.2.2", Buffer.from("two"));
    await kv.put("v4.192.0.2.1", Buffer.from("one again"));
    await kv.put("v4.192.0.2.3", Buffer.from("three"));
    await kv.delete("v4.192.0.2.3");
    await kv.put("v4.192.0.2.4", Buffer.from("four"));
    await kv.purge("v4.192.0.2.4");
    const { entries, revision } = await load("keys");
    const seen = entries.map((e) => [e.key, e.operation, Buffer.from(e.value).toString()]);
    assert.deepEqual(seen, [
      ["v4.192.0.2.2", "PUT", "two"],
      ["v4.192.0.2.1", "PUT", "one again"],
      ["v4.192.0.2.3", "DEL", ""],
      ["v4.192.0.2.4", "PURGE", ""],
    ]);
    assert.deepEqual(
      entries.map((e) => e.revision),
      [2, 3, 5, 7],
    );
    assert.equal(revision, 7);
    for (const e of entries) {
      assert.ok(e.createdMs >= t0 - 1000 && e.createdMs <= Date.now() + 1000, String(e.createdMs));
    }
    const jsm = await jetstreamManager(nc);
    assert.deepEqual(await jsm.consumers.list("KV_keys").next(), [], "its consumer is removed");
  });

  it("reports a per-message TTL's expiry marker as a purge", async () => {
    await new Kvm(jetstream(nc)).create("expiring", { history: 1, markerTTL: 60_000 });
    const js = jetstream(nc);
    await js.publish("$KV.expiring.v4.192.0.2.9", Buffer.from("brief"), { ttl: "1s" });
    const jsm = await jetstreamManager(nc);
    // The marker replaces the message when it expires: the stream then holds one message again.
    await waitFor(
      async () =>
        (await jsm.streams.getMessage("KV_expiring", { seq: 2 }).catch(() => null)) !== null,
      5000,
      "the expiry marker",
    );
    const { entries, revision } = await load("expiring");
    assert.deepEqual(
      entries.map((e) => [e.key, e.operation, e.value.length]),
      [["v4.192.0.2.9", "PURGE", 0]],
    );
    assert.equal(revision, 2);
  });
});
