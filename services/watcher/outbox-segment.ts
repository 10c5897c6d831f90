// The files of an outbox directory (layout in outbox.ts): segment files of records
// (outbox-record.ts), named for the sequence number of their first record, and the position file
// that says below which sequence number every record is published (or dropped as expired).
import { open, readdir, readFile, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { errorMessage } from "../../shared/errors.ts";
import { decodeLoginEvent, type LoginEvent } from "../../shared/login-event.ts";
import type { Logger } from "../../shared/log.ts";
import { scanRecords } from "./outbox-record.ts";

export const POSITION_FILE = "outbox-position";
const SEGMENT_NAME = /^seg-(\d{16})\.log$/;

export interface StoredRecord {
  readonly seq: number;
  readonly event: LoginEvent;
}

export interface Segment {
  /** Sequence number of its first record: every record in it has a seq >= base. */
  readonly base: number;
  readonly path: string;
  bytes: number;
  /** Highest seq stored in it; base - 1 while it holds none. */
  lastSeq: number;
  /** Records in it still to publish, as far as we know before reading it again. */
  count: number;
  /** loginAt of its first record still to publish (for the outbox's age). */
  firstLoginAt: number | undefined;
  /** Its records, while it is being appended to or drained; undefined otherwise (memory). */
  records: StoredRecord[] | undefined;
  /** No longer appended to. */
  sealed: boolean;
}

export function newSegment(dir: string, base: number): Segment {
  const name = `seg-${String(base).padStart(16, "0")}.log`;
  return {
    base,
    path: join(dir, name),
    bytes: 0,
    lastSeq: base - 1,
    count: 0,
    firstLoginAt: undefined,
    records: [],
    sealed: false,
  };
}

export interface Recovered {
  /** Sealed segments that still hold records to publish, oldest first. */
  readonly segments: Segment[];
  /** Highest seq found in any segment (0 if none). */
  readonly maxSeq: number;
  /** Segments deleted because everything in them was published. */
  readonly removed: number;
  /** Segments that ended in a torn record. */
  readonly torn: number;
}

/** Scans every segment: counts what is left to publish and deletes segments with nothing left. */
export async function recoverSegments(
  dir: string,
  position: number,
  log: Logger,
): Promise<Recovered> {
  const names = (await readdir(dir)).filter((n) => SEGMENT_NAME.test(n)).sort();
  const segments: Segment[] = [];
  let maxSeq = 0;
  let removed = 0;
  let torn = 0;
  for (const name of names) {
    const seg = newSegment(dir, Number(SEGMENT_NAME.exec(name)?.[1]));
    const buf = await readFile(seg.path);
    const scan = scanRecords(buf);
    if (scan.tornBytes > 0) {
      torn++;
      log.warn(
        { segment: name, bytes: scan.tornBytes },
        "dropped a record torn by a crash at the end of a segment (it was never acknowledged)",
      );
    }
    let first: Buffer | undefined;
    for (const r of scan.records) {
      if (r.seq < seg.base || r.seq <= maxSeq) continue;
      maxSeq = r.seq;
      seg.lastSeq = r.seq;
      if (r.seq < position) continue;
      seg.count++;
      first ??= r.json;
    }
    if (seg.count === 0) {
      await unlink(seg.path);
      removed++;
      continue;
    }
    seg.bytes = buf.length;
    seg.firstLoginAt = first === undefined ? undefined : loginAtOf(first);
    seg.records = undefined;
    seg.sealed = true;
    segments.push(seg);
  }
  return { segments, maxSeq, removed, torn };
}

function loginAtOf(json: Buffer): number | undefined {
  try {
    return decodeLoginEvent(json).loginAt;
  } catch {
    return undefined;
  }
}

export interface Loaded {
  readonly records: StoredRecord[];
  /** Records dropped: bad checksum or form, out of order, or not a valid event. */
  readonly corrupt: number;
}

/**
 * Reads a sealed segment back for the drainer: the records with seq >= floor that `skip` does not
 * reject (sequence numbers of appends that failed in this run).
 */
export async function loadSegment(
  seg: Segment,
  floor: number,
  skip: (seq: number) => boolean,
  log: Logger,
): Promise<Loaded> {
  const scan = scanRecords(await readFile(seg.path));
  const records: StoredRecord[] = [];
  let corrupt = scan.corrupt;
  let last = seg.base - 1;
  for (const r of scan.records) {
    if (r.seq <= last) {
      corrupt++;
      continue;
    }
    last = r.seq;
    if (r.seq < floor || skip(r.seq)) continue;
    try {
      records.push({ seq: r.seq, event: decodeLoginEvent(r.json) });
    } catch (err) {
      corrupt++;
      log.error({ segment: seg.path, seq: r.seq, err: errorMessage(err) }, "bad outbox record");
    }
  }
  if (corrupt > 0) {
    log.error({ segment: seg.path, records: corrupt }, "dropped outbox records that fail checks");
  }
  return { records, corrupt };
}

/** Makes the creation of a file in `dir` durable, where the file system can. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } catch (err) {
    // Some file systems (network, FUSE) cannot sync a directory; their own semantics apply.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EINVAL" && code !== "ENOTSUP") throw err;
  } finally {
    await fh.close();
  }
}

// ---- position file: `<seq, 16 digits> <crc32 of the digits, 8 hex>\n`, rewritten in place ----

const POSITION_BYTES = 26;

export function encodePosition(seq: number): Buffer {
  const digits = String(seq).padStart(16, "0");
  const crc = crc32(digits).toString(16).padStart(8, "0");
  return Buffer.from(`${digits} ${crc}\n`, "latin1");
}

export function decodePosition(buf: Buffer): number | undefined {
  const m = /^(\d{16}) ([0-9a-f]{8})\n$/.exec(buf.toString("latin1"));
  if (m === null || crc32(m[1] ?? "") !== parseInt(m[2] ?? "", 16)) return undefined;
  return Number(m[1]);
}

export interface PositionFile {
  readonly fh: FileHandle;
  /** Undefined when the file is new, or unreadable (then everything on disk is published again). */
  readonly position: number | undefined;
  readonly existed: boolean;
}

export async function openPositionFile(dir: string): Promise<PositionFile> {
  const path = join(dir, POSITION_FILE);
  let fh: FileHandle;
  let existed = true;
  try {
    fh = await open(path, "r+");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    fh = await open(path, "w+", 0o600);
    existed = false;
  }
  const buf = Buffer.alloc(64);
  const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
  return { fh, position: decodePosition(buf.subarray(0, bytesRead)), existed };
}

/**
 * One positioned write of a few bytes: a crash of the process cannot tear it. Not synced (a
 * re-publish is harmless); after a power loss a torn or stale position only re-publishes more.
 */
export async function writePosition(fh: FileHandle, seq: number): Promise<void> {
  const buf = encodePosition(seq);
  const { bytesWritten } = await fh.write(buf, 0, POSITION_BYTES, 0);
  if (bytesWritten !== POSITION_BYTES) throw new Error(`short write of the outbox position`);
}
