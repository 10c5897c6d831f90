/**
 * Splits a byte stream into LF-terminated lines with bounded memory: the log follower's framing
 * (and the benchmark's, so the figures are the follower's). Pure: bytes in, strings out.
 *
 * - A line is the bytes before an LF, decoded as UTF-8 (invalid sequences become U+FFFD); a CR
 *   before the LF is dropped. LF never occurs inside a UTF-8 sequence, so chunks can be cut at
 *   any byte.
 * - Budget: a line over `maxLineBytes` (its LF and CR not counted) is skipped whole and counted
 *   in `overlong`; at most `maxLineBytes` of an unfinished line are held, so memory stays at one
 *   chunk plus one line whatever the input.
 * - Each chunk is decoded once up to its last LF and split with indexOf: no per-line decoding.
 */

const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

export class LineSplitter {
  readonly maxLineBytes: number;
  /** Lines skipped because they were longer than maxLineBytes. */
  overlong = 0;
  #pending: Buffer = EMPTY;
  /** The current line is over the limit: drop bytes up to the next LF. */
  #skipping = false;

  constructor(maxLineBytes: number) {
    if (!(maxLineBytes >= 1)) throw new RangeError(`maxLineBytes ${maxLineBytes}`);
    this.maxLineBytes = maxLineBytes;
  }

  /** Bytes held of an unfinished line (0 while skipping one). */
  get pendingBytes(): number {
    return this.#pending.length;
  }

  /** Whether the bytes since the last LF belong to a line being skipped as too long. */
  get skipping(): boolean {
    return this.#skipping;
  }

  /**
   * The complete lines `chunk` finishes, in order (skipped ones left out). They, and any line
   * skipped as too long, end at the chunk's last LF; the bytes after it are held.
   */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    const last = chunk.lastIndexOf(LF);
    if (last < 0) {
      this.#hold(chunk);
      return lines;
    }
    const first = chunk.indexOf(LF);
    this.#finishFirst(chunk.subarray(0, first), lines);
    if (first < last) this.#splitWhole(chunk, first + 1, last, lines);
    this.#pending = EMPTY;
    this.#hold(chunk.subarray(last + 1));
    return lines;
  }

  /** Drops any unfinished line, e.g. when the file it came from was truncated. */
  reset(): void {
    this.#pending = EMPTY;
    this.#skipping = false;
  }

  /** Starts in the middle of a line (reading from an offset not after an LF): skip to the LF. */
  skipToNextLine(): void {
    this.#pending = EMPTY;
    this.#skipping = true;
  }

  /**
   * The unfinished line, if any and not over the limit, as a final line (the file ended without
   * an LF and will not grow again); then resets.
   */
  flush(): string | undefined {
    const rest = this.#skipping || this.#pending.length === 0 ? undefined : this.#pending;
    this.reset();
    return rest === undefined ? undefined : stripCr(rest.toString("utf8"));
  }

  #hold(bytes: Buffer): void {
    if (bytes.length === 0 || this.#skipping) return;
    if (this.#pending.length + bytes.length > this.maxLineBytes + 1) {
      // +1: the line may still turn out to end in CR LF, and the CR is not counted.
      this.overlong++;
      this.#pending = EMPTY;
      this.#skipping = true;
      return;
    }
    // Copy: a held subarray would pin the whole chunk it came from.
    this.#pending =
      this.#pending.length === 0 ? Buffer.from(bytes) : Buffer.concat([this.#pending, bytes]);
  }

  /** The line ended by the chunk's first LF: the held bytes plus `head`. */
  #finishFirst(head: Buffer, lines: string[]): void {
    if (this.#skipping) {
      this.#skipping = false;
      return;
    }
    const bytes = this.#pending.length === 0 ? head : Buffer.concat([this.#pending, head]);
    this.#emit(bytes.toString("utf8"), bytes.length, lines);
  }

  /** Lines wholly inside chunk[start, last], where chunk[last] is an LF. */
  #splitWhole(chunk: Buffer, start: number, last: number, lines: string[]): void {
    const text = chunk.toString("utf8", start, last + 1);
    let p = 0;
    for (let lf = text.indexOf("\n"); lf >= 0; lf = text.indexOf("\n", p)) {
      this.#emit(text.slice(p, lf), -1, lines);
      p = lf + 1;
    }
  }

  /** Adds `line` unless over the limit; `bytes` is its UTF-8 length, or -1 if not known. */
  #emit(line: string, bytes: number, lines: string[]): void {
    const text = stripCr(line);
    const max = this.maxLineBytes;
    // A UTF-16 unit is 1 to 3 UTF-8 bytes: only lines in between need counting.
    const size =
      bytes >= 0 && text.length === line.length
        ? bytes
        : text.length * 3 <= max || text.length > max
          ? text.length
          : Buffer.byteLength(text);
    if (size > max) {
      this.overlong++;
      return;
    }
    lines.push(text);
  }
}

function stripCr(line: string): string {
  return line.charCodeAt(line.length - 1) === 0x0d ? line.slice(0, -1) : line;
}
