/**
 * The log follower's position, kept in a small JSON file across restarts:
 * `{"v":1,"path":"/var/log/mail.log","dev":"2049","ino":"1311","offset":4096,"tail":"<base64>"}`.
 * - `dev`/`ino` name the file (decimal strings: inode numbers may exceed 2^53);
 * - `offset` is the byte just after the last line handed to the consumer;
 * - `tail` is up to TAIL_BYTES bytes before `offset`, so a file that was truncated and grew past
 *   the offset again, or a new file that reused the inode number, is not mistaken for ours.
 * Written to `<path>.tmp`, flushed, then renamed over the old one: a crash leaves either the
 * old or the new state, never half of one. A state for another log path is ignored.
 * Also here: the checks that an open file still holds a position (isAt, tailMatches).
 */
import { open, readFile, rename, type FileHandle } from "node:fs/promises";

export const TAIL_BYTES = 64;

export interface FollowState {
  readonly path: string;
  readonly dev: string;
  readonly ino: string;
  readonly offset: number;
  readonly tail: Buffer;
}

export class StateError extends Error {
  override name = "StateError";
}

/**
 * The saved state for `logPath`, or undefined if there is none (no file, or one for another
 * path). @throws StateError if the file exists but cannot be read or is not a state.
 */
export async function loadState(
  statePath: string,
  logPath: string,
): Promise<FollowState | undefined> {
  let text: string;
  try {
    text = await readFile(statePath, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new StateError(`cannot read ${statePath}`, { cause: err });
  }
  const state = decodeState(text);
  if (state === undefined) throw new StateError(`${statePath} is not a log follower state`);
  return state.path === logPath ? state : undefined;
}

function decodeState(text: string): FollowState | undefined {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof o !== "object" || o === null) return undefined;
  const { v, path, dev, ino, offset, tail } = o as Record<string, unknown>;
  const isId = (x: unknown): x is string => typeof x === "string" && /^[0-9]{1,20}$/.test(x);
  if (v !== 1 || typeof path !== "string" || !isId(dev) || !isId(ino)) return undefined;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return undefined;
  if (typeof tail !== "string" || tail.length > 2 * TAIL_BYTES) return undefined;
  const bytes = Buffer.from(tail, "base64");
  if (bytes.length > Math.min(TAIL_BYTES, offset)) return undefined;
  return { path, dev, ino, offset, tail: bytes };
}

/** Writes the state atomically (temp file, fsync, rename). */
export async function saveState(statePath: string, state: FollowState): Promise<void> {
  const text = JSON.stringify({
    v: 1,
    path: state.path,
    dev: state.dev,
    ino: state.ino,
    offset: state.offset,
    tail: state.tail.toString("base64"),
  });
  const tmp = `${statePath}.tmp`;
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(`${text}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, statePath);
}

/** The up to TAIL_BYTES bytes before `offset`. */
export async function readTail(fh: FileHandle, offset: number): Promise<Buffer> {
  const n = Math.min(TAIL_BYTES, offset);
  const buf = Buffer.alloc(n);
  const { bytesRead } = await fh.read(buf, 0, n, offset - n);
  return buf.subarray(0, bytesRead);
}

/** Whether the bytes before `offset` are still `tail`. */
export async function tailMatches(fh: FileHandle, offset: number, tail: Buffer): Promise<boolean> {
  if (tail.length === 0) return true;
  return (await readTail(fh, offset)).equals(tail);
}

/** Whether fh still holds the saved state's lines up to its offset. */
export async function isAt(fh: FileHandle, state: FollowState): Promise<boolean> {
  const { size } = await fh.stat();
  if (size < state.offset) return false;
  return tailMatches(fh, state.offset, state.tail);
}
