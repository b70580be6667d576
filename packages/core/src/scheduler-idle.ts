import type { Hold } from "./priority-scheduler.js";
import type { Pool } from "./pool.js";
import type { Concurrency } from "./scheduler.js";

/** A queued request, as far as the idle-while-waiting measure needs it. */
export interface WaitingCall {
  readonly appId: string | null;
  readonly slots: number;
  readonly durationMs: number;
}

/**
 * Free slots that some waiting call could be placed on right now: a device's free slots count
 * when a waiting call whose app is under its limit fits in them — and, on the device held for an
 * aged head, only a call that ends before the head's shadow time. This is exactly what work
 * conservation forbids to stay idle; the simulator integrates it over time.
 */
export function usableIdleSlots(pool: Pool, waiting: Iterable<WaitingCall>, concurrency: Concurrency, hold: Hold | null, now: number): number {
  if (pool.freeSlots === 0) return 0;
  let minAny = Number.POSITIVE_INFINITY;
  let minShort = Number.POSITIVE_INFINITY;
  for (const w of waiting) {
    if (w.appId !== null) {
      const limit = concurrency.limit(w.appId);
      if (limit !== null && concurrency.active(w.appId) >= limit) continue;
    }
    if (w.slots < minAny) minAny = w.slots;
    if (hold !== null && now + w.durationMs <= hold.shadowAt && w.slots < minShort) minShort = w.slots;
  }
  if (minAny === Number.POSITIVE_INFINITY) return 0;
  let usable = 0;
  for (const { spec, holders } of pool.snapshot()) {
    let free = 0;
    for (const h of holders) if (h === null) free++;
    if (free === 0) continue;
    const held = hold !== null && hold.node === spec.node && hold.index === spec.index;
    if ((held ? minShort : minAny) <= free) usable += free;
  }
  return usable;
}
