/**
 * Counts the store's running operations so `close` can let them finish and then drop the
 * connections at once. (postgres.js's own graceful end can wait out its whole timeout on a
 * connection that broke under a query, so the store ends it with timeout 0 once nothing of its own runs.)
 */
export class InFlight {
  private count = 0;
  private closed = false;
  private drained: (() => void) | null = null;

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error("The store is closed.");
    this.count++;
    try {
      return await fn();
    } finally {
      if (--this.count === 0) this.drained?.();
    }
  }

  /**
   * Counts one operation that outlives a call (a group of leader transactions, from BEGIN to
   * COMMIT) until the returned function is called (at most once counts).
   */
  hold(): () => void {
    if (this.closed) throw new Error("The store is closed.");
    this.count++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.count === 0) this.drained?.();
    };
  }

  /** Refuses new operations and resolves once the running ones are done, or after `timeoutMs`. */
  async close(timeoutMs: number): Promise<void> {
    this.closed = true;
    if (this.count === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.drained = () => (clearTimeout(timer), resolve());
    });
  }
}
