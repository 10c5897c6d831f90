/**
 * RPC record marking for stream transports (RFC 5531 section 11, "Record Marking Standard").
 * Pure: bytes from a TCP connection in, whole records out, or a ProtocolError.
 *
 * A record is one or more fragments, each behind a 4-byte header whose high bit marks the last
 * fragment and whose low 31 bits give its length. The decoder is incremental, like the policy
 * codec: it returns every complete record at the start of the buffer and how many bytes they took;
 * the caller keeps the rest and calls again with more.
 *
 * Limits, checked as soon as a fragment header arrives, before its data is waited for (so a peer
 * announcing a 2 GiB fragment is cut off after 4 bytes, not after 2 GiB):
 * - `maxRecordBytes`: the payload of one record, all fragments together.
 * - `maxFragments`: fragments in one record. Zero-length fragments add nothing to the payload but
 *   4 bytes each to what we buffer, so without this bound a peer could grow the buffer forever.
 * So an unfinished record costs at most maxRecordBytes + 4 * maxFragments bytes of buffer.
 */
import { ProtocolError } from "../../../shared/protocol-error.ts";

export interface RecordLimits {
  maxRecordBytes: number;
  maxFragments: number;
}

/**
 * A DRAC v2 call is 104 bytes, one with the largest credential and verifier RFC 5531 allows
 * 904; rpcbind calls carry three short strings. 8 KiB is ample; a bigger record is an error and
 * the connection is closed. Real clients send one fragment; 16 leaves room for odd ones.
 */
export const DEFAULT_RECORD_LIMITS: Readonly<RecordLimits> = Object.freeze({
  maxRecordBytes: 8192,
  maxFragments: 16,
});

const LAST_FRAGMENT = 0x80000000;
const MAX_FRAGMENT_LENGTH = 0x7fffffff;

/**
 * Decodes every complete record at the start of `buf`. `consumed` counts the bytes of those
 * records; the bytes after it belong to a record still arriving.
 * @throws ProtocolError when a record passes a limit, complete or not.
 */
export function decodeRecords(
  buf: Buffer,
  limits: RecordLimits = DEFAULT_RECORD_LIMITS,
): { records: Buffer[]; consumed: number } {
  const records: Buffer[] = [];
  let consumed = 0;
  let pos = 0;
  let parts: Buffer[] = [];
  let size = 0;
  while (buf.length - pos >= 4) {
    const header = buf.readUInt32BE(pos);
    const length = header & MAX_FRAGMENT_LENGTH;
    size += length;
    if (size > limits.maxRecordBytes) {
      throw new ProtocolError(`record longer than ${limits.maxRecordBytes} bytes`);
    }
    if (parts.length + 1 > limits.maxFragments) {
      throw new ProtocolError(`more than ${limits.maxFragments} fragments in one record`);
    }
    if (buf.length - pos - 4 < length) break;
    parts.push(buf.subarray(pos + 4, pos + 4 + length));
    pos += 4 + length;
    if ((header & LAST_FRAGMENT) !== 0) {
      // concat copies, so a record never pins the chunk it arrived in.
      records.push(Buffer.concat(parts, size));
      consumed = pos;
      parts = [];
      size = 0;
    }
  }
  return { records, consumed };
}

/**
 * Frames one record; `fragmentBytes` splits it into fragments of at most that size (tests and
 * our client; real servers send one fragment).
 * @throws RangeError if `fragmentBytes` is not a positive integer up to 2^31-1: a caller's bug.
 */
export function encodeRecord(payload: Buffer, fragmentBytes = MAX_FRAGMENT_LENGTH): Buffer {
  if (
    !Number.isInteger(fragmentBytes) ||
    fragmentBytes < 1 ||
    fragmentBytes > MAX_FRAGMENT_LENGTH
  ) {
    throw new RangeError(`fragment size ${fragmentBytes}`);
  }
  const out: Buffer[] = [];
  let at = 0;
  do {
    const length = Math.min(fragmentBytes, payload.length - at);
    const last = at + length >= payload.length;
    const header = Buffer.alloc(4);
    header.writeUInt32BE((last ? LAST_FRAGMENT : 0) + length);
    out.push(header, payload.subarray(at, at + length));
    at += length;
  } while (at < payload.length);
  return Buffer.concat(out);
}
