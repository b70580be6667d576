/**
 * Runs async sections one at a time, in arrival order. Uncontended entry costs one resolved
 * promise; waiters queue without polling.
 */
export class Serial {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((resolve) => (done = resolve));
    return previous.then(fn).finally(done);
  }
}
