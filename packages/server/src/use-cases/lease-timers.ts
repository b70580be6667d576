import type { Clock } from "../clock.js";

/** A lease's deadline or queue timeout, or (keyed by node name) a node's heartbeat deadline. */
export type TimerKind = "deadline" | "queue_timeout" | "heartbeat";

/**
 * At most one pending timer per lease: its deadline while active, its queue timeout while
 * queued. Timers are unref'd (they never keep the process alive) and all stop together.
 */
export class LeaseTimers {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly clock: Clock,
    private readonly fire: (leaseId: string, kind: TimerKind) => void,
  ) {}

  /** (Re)arms the lease's timer to fire at `at` (ms since epoch); past times fire at once. */
  arm(leaseId: string, kind: TimerKind, at: number): void {
    if (this.stopped) return;
    this.clear(leaseId);
    const t = setTimeout(() => {
      this.timers.delete(leaseId);
      this.fire(leaseId, kind);
    }, Math.max(0, at - this.clock.now()));
    t.unref();
    this.timers.set(leaseId, t);
  }

  clear(leaseId: string): void {
    const t = this.timers.get(leaseId);
    if (t) {
      clearTimeout(t);
      this.timers.delete(leaseId);
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
