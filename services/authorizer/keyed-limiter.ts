// Runs at most `limit` tasks at once, and tasks of one key one after another.
// run() resolves once the task has started (so a caller's loop applies back-pressure), not when
// it has finished; drain() waits for all started tasks.
export class KeyedLimiter {
  readonly #limit: number;
  readonly #onError: (err: unknown) => void;
  readonly #tails = new Map<string, Promise<void>>();
  readonly #running = new Set<Promise<void>>();

  /** A task that throws is reported to onError; the tasks queued behind it still run. */
  constructor(limit: number, onError: (err: unknown) => void) {
    this.#limit = limit;
    this.#onError = onError;
  }

  async run(key: string, task: () => Promise<void>): Promise<void> {
    while (this.#running.size >= this.#limit) await Promise.race(this.#running);
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const done: Promise<void> = previous
      .then(task)
      .catch(this.#onError)
      .finally(() => {
        this.#running.delete(done);
        if (this.#tails.get(key) === done) this.#tails.delete(key);
      });
    this.#tails.set(key, done);
    this.#running.add(done);
  }

  async drain(): Promise<void> {
    await Promise.allSettled([...this.#running]);
  }
}
