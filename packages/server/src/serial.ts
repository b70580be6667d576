/**
 * Runs async sections one at a time, in arrival order. Uncontended entry costs one resolved
 * promise; waiters queue without polling.
 */
export class Serial {
  private tail: Promise<void> = Promise.resolve();
  private depth = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((resolve) => (done = resolve));
    this.depth++;
    return previous.then(fn).finally(() => {
      this.depth--;
      done();
    });
  }

  /** Sections waiting or running (for metrics). */
  get pending(): number {
    return this.depth;
  }
}
