import fc from "fast-check";
import { Pool, PriorityScheduler } from "../src/index.js";
import type { Concurrency, DeviceSpec, PriorityRequest, SchedulerOptions } from "../src/index.js";

/**
 * Replays random arrivals through the priority scheduler as the engine drives it, and says which
 * queued calls started later than the eta_max they were told at admission (docs/scheduling.md §5).
 */

const T0 = 1_700_000_000_000;
const NO_LIMITS: Concurrency = { active: () => 0, limit: () => null };

/** L4s of these slot counts, alternately on nodes n0 and n1. */
export function devicesOfSizes(sizes: readonly number[]): DeviceSpec[] {
  return sizes.map((slots, i) => ({
    node: `n${i % 2}`,
    index: i,
    uuid: `GPU-${i}`,
    name: "L4",
    memoryMb: 24_576,
    slots,
  }));
}

export const devices = (gpus: number, slots: number): DeviceSpec[] =>
  devicesOfSizes(Array.from({ length: gpus }, () => slots));

export interface Arrival {
  /** Time since the previous arrival. */
  readonly gapMs: number;
  readonly priority: number;
  readonly durationS: number;
  /** Share of its duration the call holds (1: to its deadline). */
  readonly holds: number;
  readonly share: number;
  /** Slots it asks for (at most a device's); one when left out. */
  readonly slots?: number;
  /** Seconds after arrival it gives up (times out) if still queued; never when left out. */
  readonly giveUpS?: number | undefined;
}

const arrivalFields = {
  gapMs: fc.integer({ min: 0, max: 8_000 }),
  priority: fc.integer({ min: 1, max: 3 }),
  durationS: fc.integer({ min: 1, max: 60 }),
  holds: fc.constantFrom(1, 1, 0.5, 0.1, 0),
  share: fc.constantFrom(1, 0.5, 0.05),
};

export const arrivalArb: fc.Arbitrary<Arrival> = fc.record(arrivalFields);

/** Arrivals of mixed sizes: one slot (three in five), two slots, four (a whole GPU of 4; of 2, capped at 2). */
export const mixedArrivalArb: fc.Arbitrary<Arrival> = fc.record({
  ...arrivalFields,
  slots: fc.constantFrom(1, 1, 1, 2, 4),
});

/** Arrivals of mixed sizes, some giving up after a while as the engine's queue timeout has them. */
export const givingUpArrivalArb: fc.Arbitrary<Arrival> = fc.record({
  ...arrivalFields,
  slots: fc.constantFrom(1, 1, 1, 2, 4),
  giveUpS: fc.constantFrom(undefined, 2, 10, 20, 60),
});

/**
 * Backfill-heavy schedules on GPUs of 4 slots: whole-GPU calls among one- and two-slot ones,
 * arriving in bursts, most ending early, some giving up — where the GPU held for a waiting
 * whole-GPU head changes as another clears sooner (the case docs/scheduling.md §5 leaves open).
 */
export const burstArrivalArb: fc.Arbitrary<Arrival> = fc.record({
  gapMs: fc.constantFrom(0, 0, 500, 1_000, 3_000),
  priority: fc.integer({ min: 1, max: 3 }),
  durationS: fc.constantFrom(1, 2, 5, 10, 20, 40),
  holds: fc.constantFrom(1, 1, 0.5, 0.1, 0),
  share: fc.constantFrom(1, 0.5),
  slots: fc.constantFrom(1, 1, 2, 4, 4),
  giveUpS: fc.constantFrom(undefined, undefined, 5, 30),
});

/** What one replay found: the queued calls that started later than their promise, and how many were promised. */
export interface Replay {
  /** `c007/2 at +23000 promised +22500`: the call, its slots, when it started and its promise (ms after the start). */
  readonly late: string[];
  readonly promised: number;
  /** Calls granted on the GPU held for another call (backfill past a waiting head). */
  readonly backfills: number;
  /** Queued calls that gave up (timed out) before a grant. */
  readonly gaveUp: number;
  /** Times the GPU held for a head changed to another while the same head waited. */
  readonly switches: number;
}

/** Replays arrivals through the scheduler as the engine drives it. */
export function replay(
  gpus: number,
  slots: number,
  arrivals: readonly Arrival[],
  options: Partial<SchedulerOptions>,
): Replay {
  const pool = new Pool(devices(gpus, slots));
  const scheduler = new PriorityScheduler({ agingStepMs: 15_000, holdAfterMs: 15_000, ...options });
  const promised = new Map<string, number>();
  // Lease ends and give-ups; at one instant, ends first (as the engine and the simulator do).
  const ends: { at: number; id: string; giveUp?: true }[] = [];
  const queued = new Set<string>();
  let backfills = 0;
  let switches = 0;
  let gaveUp = 0;
  const holds = new Map<string, number>();
  const late: string[] = [];
  let now = T0;
  const dispatch = (): void => {
    const held = scheduler.hold();
    scheduler.dispatch(
      pool,
      NO_LIMITS,
      (grant, r) => {
        queued.delete(grant.leaseId);
        const on = grant.assignment;
        if (held !== null && held.leaseId !== grant.leaseId && held.node === on.node && held.index === on.index)
          backfills++;
        const by = promised.get(grant.leaseId);
        if (by !== undefined && now > by) late.push(`${grant.leaseId}/${r.slots} at +${now - T0} promised +${by - T0}`);
        ends.push({ at: now + Math.floor(r.durationMs * (holds.get(r.leaseId) ?? 1)), id: grant.leaseId });
      },
      now,
    );
    const after = scheduler.hold();
    if (held !== null && after !== null && held.leaseId === after.leaseId && held.index !== after.index) switches++;
  };
  const endUntil = (t: number): void => {
    for (;;) {
      ends.sort((a, b) => a.at - b.at || (a.giveUp ? 1 : 0) - (b.giveUp ? 1 : 0) || (a.id < b.id ? -1 : 1));
      const e = ends[0];
      if (e === undefined || e.at > t) return;
      ends.shift();
      now = e.at;
      if (e.giveUp) {
        if (!queued.delete(e.id)) continue;
        scheduler.remove(e.id);
        gaveUp++;
      } else {
        pool.release(e.id);
        scheduler.onReleased(e.id, now);
      }
      dispatch();
    }
  };
  arrivals.forEach((a, i) => {
    const at = now + a.gapMs;
    endUntil(at);
    now = at;
    const request: PriorityRequest = {
      leaseId: `c${String(i).padStart(3, "0")}`,
      appId: null,
      identity: `user:${i}`,
      slots: Math.min(a.slots ?? 1, slots),
      priority: a.priority,
      durationMs: a.durationS * 1000,
      seq: i,
      queuedAt: now,
      quotaLeftShare: a.share,
      ...(a.giveUpS === undefined ? {} : { giveUpAt: now + a.giveUpS * 1000 }),
    };
    holds.set(request.leaseId, a.holds);
    const trial = scheduler.trial(request, pool, NO_LIMITS, now);
    if (trial.kind === "wait" && trial.place.etaMs !== null) promised.set(request.leaseId, now + trial.place.etaMs);
    scheduler.enqueue(request);
    queued.add(request.leaseId);
    if (request.giveUpAt != null) ends.push({ at: request.giveUpAt, id: request.leaseId, giveUp: true });
    dispatch();
  });
  endUntil(Number.POSITIVE_INFINITY);
  return { late, promised: promised.size, backfills, gaveUp, switches };
}

/** The queued calls that started later than their promise (see `replay`). */
export function broken(
  gpus: number,
  slots: number,
  arrivals: readonly Arrival[],
  options: Partial<SchedulerOptions>,
): string[] {
  return replay(gpus, slots, arrivals, options).late;
}
