// Outbox record codec (pure): one login event per line of a segment file,
//   <crc32: 8 lower-case hex digits> SP <seq: decimal> SP <event JSON, as published> LF
// The checksum (CRC-32, as zlib computes it) covers the bytes between the first space and the LF.
// JSON text never holds a raw LF, so a line is a record and the file stays readable with `cat`.
// A complete line that fails its checksum or its form (bit rot, stray bytes) is dropped and
// counted; bytes after the last LF are a write torn by a crash, which was never acknowledged
// (an append resolves only after the sync that follows its whole batch).
import { crc32 } from "node:zlib";

const SP = 0x20;
const LF = 0x0a;
const CRC_DIGITS = 8;
const CRC_TEXT = /^[0-9a-f]{8}$/;
/** Sequence numbers are safe integers: at most 16 decimal digits. */
const SEQ_TEXT = /^\d{1,16}$/;

export function encodeRecord(seq: number, json: Uint8Array): Buffer {
  const seqText = Buffer.from(`${seq} `, "latin1");
  const crc = crc32(json, crc32(seqText));
  const out = Buffer.allocUnsafe(CRC_DIGITS + 1 + seqText.length + json.length + 1);
  out.write(crc.toString(16).padStart(CRC_DIGITS, "0"), 0, "latin1");
  out[CRC_DIGITS] = SP;
  seqText.copy(out, CRC_DIGITS + 1);
  out.set(json, CRC_DIGITS + 1 + seqText.length);
  out[out.length - 1] = LF;
  return out;
}

export interface RawRecord {
  readonly seq: number;
  /** The event JSON (a view into the scanned buffer). */
  readonly json: Buffer;
}

export interface ScanResult {
  readonly records: RawRecord[];
  /** Complete lines that failed their checksum or form. */
  readonly corrupt: number;
  /** Bytes after the last LF: a record torn by a crash. */
  readonly tornBytes: number;
}

/** Splits a segment's bytes into records; never throws. */
export function scanRecords(buf: Buffer): ScanResult {
  const records: RawRecord[] = [];
  let corrupt = 0;
  let off = 0;
  for (;;) {
    const nl = buf.indexOf(LF, off);
    if (nl === -1) break;
    const record = parseLine(buf.subarray(off, nl));
    if (record === undefined) corrupt++;
    else records.push(record);
    off = nl + 1;
  }
  return { records, corrupt, tornBytes: buf.length - off };
}

function parseLine(line: Buffer): RawRecord | undefined {
  // The shortest record: crc, space, one digit, space, one byte of JSON.
  if (line.length < CRC_DIGITS + 4 || line[CRC_DIGITS] !== SP) return undefined;
  const crcText = line.toString("latin1", 0, CRC_DIGITS);
  if (!CRC_TEXT.test(crcText)) return undefined;
  const body = line.subarray(CRC_DIGITS + 1);
  if (crc32(body) !== parseInt(crcText, 16)) return undefined;
  const sp = body.indexOf(SP);
  if (sp === -1) return undefined;
  const seqText = body.toString("latin1", 0, sp);
  if (!SEQ_TEXT.test(seqText)) return undefined;
  return { seq: Number(seqText), json: body.subarray(sp + 1) };
}
