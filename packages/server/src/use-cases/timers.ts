import type { Clock } from "../clock.js";

/**
 * At most one pending timer per key (a lease's deadline or queue timeout; a node's heartbeat
 * deadline), firing `fire(key, kind)`. Timers are unref'd (they never keep the process alive) and
 * all stop together.
 */
export class Timers<K extends string> {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly fire: (key: string, kind: K) => void,
  ) {}

  /** (Re)arms the key's timer to fire at `at` (ms since epoch); past times fire at once. */
  arm(key: string, kind: K, at: number): void {
    if (this.stopped) return;
    this.clear(key);
    const t = setTimeout(
      () => {
        this.timers.delete(key);
        this.fire(key, kind);
      },
      Math.max(0, at - this.clock.now()),
    );
    t.unref();
    this.timers.set(key, t);
  }

  clear(key: string): void {
    const t = this.timers.get(key);
    if (t) {
      clearTimeout(t);
      this.timers.delete(key);
    }
  }

  clearAll(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  stop(): void {
    this.stopped = true;
    this.clearAll();
  }
}
