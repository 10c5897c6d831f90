// Reading the whole lease bucket once (for `leases` and `revoke --user`): the last value of every
// key, through a watch's initial load, which ends at the entry with nothing pending after it.
import type { KV } from "@nats-io/kv";
import { decodeBucketValue, type BucketValue } from "../../shared/bucket-value.ts";
import { isAddressKey } from "../../shared/contract.ts";

const QUIET_MS = 2000;

export interface BucketEntry {
  readonly key: string;
  readonly revision: number;
  readonly value: BucketValue;
}

/** Every address key's current lease or tombstone; undecodable values are skipped. */
export async function readAddressEntries(kv: KV): Promise<BucketEntry[]> {
  if ((await kv.status()).values === 0) return [];
  const out: BucketEntry[] = [];
  const watch = await kv.watch();
  // The bucket can empty between status() and the watch (keys expire): then nothing arrives.
  let quiet = setTimeout(() => {
    watch.stop();
  }, QUIET_MS);
  try {
    for await (const e of watch) {
      clearTimeout(quiet);
      quiet = setTimeout(() => {
        watch.stop();
      }, QUIET_MS);
      if (e.operation === "PUT" && isAddressKey(e.key)) {
        try {
          out.push({ key: e.key, revision: e.revision, value: decodeBucketValue(e.value) });
        } catch {
          // Not ours to judge here; `doctor` reports undecodable values.
        }
      }
      if (e.delta === 0) break;
    }
  } finally {
    clearTimeout(quiet);
    watch.stop();
  }
  return out;
}
