/**
 * A server's open connections, for its idle sweep and its close(): an array in which each
 * connection keeps its own index, so that adding and deleting take constant time.
 *
 * Not a Set: once a Set's table has reached V8's old generation (a server idle for a while),
 * adding and deleting short-lived connections kept every one of them alive through
 * young-generation collections until the next full one. Under `node --trace-gc` the milter role's
 * scavenges took 9-14 ms and promoted about 11 MB each; with this array 0.3-0.5 ms and nothing.
 */
export interface Indexed {
  /** Its place in the OpenConnections holding it; -1 when in none. */
  openIndex: number;
}

export class OpenConnections<T extends Indexed> {
  readonly #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  /** Adding one already held is a no-op. */
  add(item: T): void {
    if (item.openIndex >= 0) return;
    item.openIndex = this.#items.length;
    this.#items.push(item);
  }

  /** Moves the last one into the gap: no hole, no shifting. Deleting one not held is harmless. */
  delete(item: T): void {
    const i = item.openIndex;
    if (this.#items[i] !== item) return;
    const last = this.#items.pop();
    if (last !== undefined && last !== item) {
      this.#items[i] = last;
      last.openIndex = i;
    }
    item.openIndex = -1;
  }

  /** A copy: closing a connection deletes it. */
  list(): T[] {
    return [...this.#items];
  }
}
