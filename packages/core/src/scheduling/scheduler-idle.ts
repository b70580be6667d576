import type { Hold } from "./priority-scheduler.js";
import type { Pool } from "./pool.js";
import type { Concurrency } from "./scheduler.js";

/** A queued request, as far as the idle-while-waiting measure needs it. */
export interface WaitingCall {
  readonly appId: string | null;
  readonly slots: number;
  readonly durationMs: number;
  /** The only node whose devices may take the call; null or missing: any. */
  readonly node?: string | null;
}

/** The smallest waiting calls that may go on some devices: any call, and one that ends before the hold's shadow time. */
interface Smallest {
  any: number;
  short: number;
}

/**
 * Free slots that some waiting call could be placed on right now: a device's free slots count
 * when a waiting call whose app is under its limit, and that may go on that device (bound to its
 * node, or unbound when the device is not dedicated), fits in them — and, on the device held for
 * an aged head, only a call that ends before the head's shadow time. This is exactly what work
 * conservation forbids to stay idle; the simulator integrates it over time.
 */
export function usableIdleSlots(
  pool: Pool,
  waiting: Iterable<WaitingCall>,
  concurrency: Concurrency,
  hold: Hold | null,
  now: number,
): number {
  if (pool.freeSlots === 0) return 0;
  const unbound: Smallest = { any: Number.POSITIVE_INFINITY, short: Number.POSITIVE_INFINITY };
  const byNode = new Map<string, Smallest>();
  for (const w of waiting) {
    if (w.appId !== null) {
      const limit = concurrency.limit(w.appId);
      if (limit !== null && concurrency.active(w.appId) >= limit) continue;
    }
    const node = w.node ?? null;
    let smallest = unbound;
    if (node !== null) {
      smallest = byNode.get(node) ?? { any: Number.POSITIVE_INFINITY, short: Number.POSITIVE_INFINITY };
      byNode.set(node, smallest);
    }
    if (w.slots < smallest.any) smallest.any = w.slots;
    if (hold !== null && now + w.durationMs <= hold.shadowAt && w.slots < smallest.short) smallest.short = w.slots;
  }
  if (unbound.any === Number.POSITIVE_INFINITY && byNode.size === 0) return 0;
  let usable = 0;
  for (const { spec, holders } of pool.snapshot()) {
    let free = 0;
    for (const h of holders) if (h === null) free++;
    if (free === 0) continue;
    const held = hold !== null && hold.node === spec.node && hold.index === spec.index;
    const bound = byNode.get(spec.node);
    // A dedicated device takes only calls bound to its node.
    const open = spec.dedicated === true ? Number.POSITIVE_INFINITY : held ? unbound.short : unbound.any;
    const need = Math.min(open, (held ? bound?.short : bound?.any) ?? Number.POSITIVE_INFINITY);
    if (need <= free) usable += free;
  }
  return usable;
}
