/**
 * Splits a byte stream into LF-terminated lines with bounded memory: the log follower's framing
 * (and the benchmark's, so the figures are the follower's). Pure: bytes in, lines out.
 *
 * - A line is the bytes before an LF, decoded as UTF-8 (invalid sequences become U+FFFD); a CR
 *   before the LF is dropped. LF never occurs inside a UTF-8 sequence, so chunks can be cut at
 *   any byte.
 * - Budget: a line over `maxLineBytes` (its LF and CR not counted) is skipped whole and counted
 *   in `overlong`; at most `maxLineBytes` of an unfinished line are held, so memory stays at one
 *   chunk plus one line whatever the input.
 * - Each chunk is decoded once, up to its last LF, into one string, and lines are handed out as
 *   ranges of it rather than as strings: the parser reads a flat string much faster than a
 *   sliced one (every character read of a slice goes through its parent), and most lines of a
 *   mail log are rejected without ever being sliced.
 */

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);

/**
 * The complete lines one chunk finished: line i is `text.slice(start(i), end(i))`. `text` holds
 * them all (with their LFs between); the batch is reused, so it is valid until the next push.
 */
export class LineBatch {
  text = "";
  count = 0;
  /**
   * Start and end (exclusive, CR dropped) of each line, in pairs; entries past 2 * count are
   * left over from earlier chunks (the array is reused, not regrown per chunk).
   */
  readonly bounds: number[] = [];

  start(i: number): number {
    return this.bounds[2 * i] ?? 0;
  }

  end(i: number): number {
    return this.bounds[2 * i + 1] ?? 0;
  }

  /** The lines as strings, for callers that keep them. */
  strings(): string[] {
    return Array.from({ length: this.count }, (_, i) =>
      this.text.slice(this.start(i), this.end(i)),
    );
  }
}

export class LineSplitter {
  readonly maxLineBytes: number;
  /** Lines skipped because they were longer than maxLineBytes. */
  overlong = 0;
  #pending: Buffer = EMPTY;
  /** The current line is over the limit: drop bytes up to the next LF. */
  #skipping = false;
  readonly #batch = new LineBatch();

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
  push(chunk: Buffer): LineBatch {
    const batch = this.#batch;
    batch.text = "";
    batch.count = 0;
    const last = chunk.lastIndexOf(LF);
    if (last < 0) {
      this.#hold(chunk);
      return batch;
    }
    const held = this.#pending.length;
    const firstBytes = held + chunk.indexOf(LF);
    const whole = chunk.subarray(0, last + 1);
    const text = (held === 0 ? whole : Buffer.concat([this.#pending, whole])).toString("utf8");
    batch.text = text;
    let lf = text.indexOf("\n");
    if (this.#skipping) this.#skipping = false;
    else this.#add(text, 0, lf, firstBytes);
    for (let p = lf + 1; (lf = text.indexOf("\n", p)) >= 0; p = lf + 1) this.#add(text, p, lf, -1);
    this.#pending = EMPTY;
    this.#hold(chunk.subarray(last + 1));
    return batch;
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
    if (rest === undefined) return undefined;
    const line = rest.toString("utf8");
    return line.charCodeAt(line.length - 1) === CR ? line.slice(0, -1) : line;
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

  /**
   * Adds text[start, lf) (dropping a CR before the LF) unless over the limit; `bytes` is its
   * UTF-8 length with any CR, or -1 if not known.
   */
  #add(text: string, start: number, lf: number, bytes: number): void {
    const cr = lf > start && text.charCodeAt(lf - 1) === CR ? 1 : 0;
    const end = lf - cr;
    const chars = end - start;
    const max = this.maxLineBytes;
    // A UTF-16 unit is 1 to 3 UTF-8 bytes: only lines in between need counting.
    const size =
      bytes >= 0
        ? bytes - cr
        : chars * 3 <= max || chars > max
          ? chars
          : Buffer.byteLength(text.slice(start, end));
    if (size > max) {
      this.overlong++;
      return;
    }
    const batch = this.#batch;
    batch.bounds[2 * batch.count] = start;
    batch.bounds[2 * batch.count + 1] = end;
    batch.count++;
  }
}
