import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Pool, PriorityScheduler } from "../src/index.js";
import type { Concurrency, DeviceSpec, PriorityRequest, SchedulerOptions } from "../src/index.js";

/**
 * The bound told at admission (eta_max) is a promise: with calls arriving all the time — higher
 * classes later, shorter ones, ones with more quota left — and leases ending early or at their
 * deadlines, no queued one-slot call starts later than the bound it was told when it was queued.
 * With multi-slot calls about, the cases found on the November trace are kept (below); the
 * argument does not cover every schedule with them (docs/scheduling.md §5 says which).
 */

const T0 = 1_700_000_000_000;
const NO_LIMITS: Concurrency = { active: () => 0, limit: () => null };

function devices(gpus: number, slots: number): DeviceSpec[] {
  return Array.from({ length: gpus }, (_, i) => ({
    node: `n${i % 2}`,
    index: i,
    uuid: `GPU-${i}`,
    name: "L4",
    memoryMb: 24_576,
    slots,
  }));
}

interface Arrival {
  /** Time since the previous arrival. */
  readonly gapMs: number;
  readonly priority: number;
  readonly durationS: number;
  /** Share of its duration the call holds (1: to its deadline). */
  readonly holds: number;
  readonly share: number;
  /** Slots it asks for (at most a device's); one when left out. */
  readonly slots?: number;
}

const arrivalArb: fc.Arbitrary<Arrival> = fc.record({
  gapMs: fc.integer({ min: 0, max: 8_000 }),
  priority: fc.integer({ min: 1, max: 3 }),
  durationS: fc.integer({ min: 1, max: 60 }),
  holds: fc.constantFrom(1, 1, 0.5, 0.1, 0),
  share: fc.constantFrom(1, 0.5, 0.05),
});

/** Replays arrivals through the scheduler as the engine drives it; returns each grant that came later than its promise. */
function broken(
  gpus: number,
  slots: number,
  arrivals: readonly Arrival[],
  options: Partial<SchedulerOptions>,
): string[] {
  const pool = new Pool(devices(gpus, slots));
  const scheduler = new PriorityScheduler({ agingStepMs: 15_000, holdAfterMs: 15_000, ...options });
  const promised = new Map<string, number>();
  const ends: { at: number; id: string }[] = [];
  const holds = new Map<string, number>();
  const late: string[] = [];
  let now = T0;
  const dispatch = (): void => {
    scheduler.dispatch(
      pool,
      NO_LIMITS,
      (grant, r) => {
        const by = promised.get(grant.leaseId);
        if (by !== undefined && now > by) late.push(`${grant.leaseId} at +${now - T0} promised +${by - T0}`);
        ends.push({ at: now + Math.floor(r.durationMs * (holds.get(r.leaseId) ?? 1)), id: grant.leaseId });
      },
      now,
    );
  };
  const endUntil = (t: number): void => {
    for (;;) {
      ends.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : 1));
      const e = ends[0];
      if (e === undefined || e.at > t) return;
      ends.shift();
      now = e.at;
      pool.release(e.id);
      scheduler.onReleased(e.id, now);
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
    };
    holds.set(request.leaseId, a.holds);
    const trial = scheduler.trial(request, pool, NO_LIMITS, now);
    if (trial.kind === "wait" && trial.place.etaMs !== null) promised.set(request.leaseId, now + trial.place.etaMs);
    scheduler.enqueue(request);
    dispatch();
  });
  endUntil(Number.POSITIVE_INFINITY);
  return late;
}

describe("promises", () => {
  const property = (options: Partial<SchedulerOptions>) =>
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.constantFrom(1, 2, 4),
      fc.array(arrivalArb, { minLength: 1, maxLength: 40 }),
      (gpus, slots, arrivals) => {
        expect(broken(gpus, slots, arrivals, options)).toEqual([]);
      },
    );

  it("no queued one-slot call starts later than the eta_max it was told, whatever arrives after it", () => {
    fc.assert(property({}), { numRuns: 400 });
  });

  // Calls arriving at once on one GPU (2 or 4 slots) with a whole-GPU call among them: each case
  // broke a promise before (minimal cases from random schedules, of the kinds seen on the trace).
  const at0 = (priority: number, durationS: number, slots: number): Arrival => ({
    gapMs: 0,
    priority,
    durationS,
    holds: 1,
    share: 1,
    slots,
  });

  it("a call that passes a waiting whole-GPU call and takes a slot of its held GPU is charged the slot-time it leaves idle", () => {
    // The GPU is held for the whole-GPU call (c001); a free-tier call (c002) arriving next may go
    // ahead of it only if its promise survives the 22 s the other slot would then stand idle.
    expect(broken(1, 2, [at0(1, 1, 1), at0(1, 1, 2), at0(2, 22, 1), at0(1, 1, 1)], {})).toEqual([]);
    expect(broken(1, 2, [at0(1, 1, 1), at0(1, 1, 4), at0(2, 22, 1)], {})).toEqual([]);
  });

  it("calls behind a waiting whole-GPU call do not lose their place to backfill that runs past when the GPU frees", () => {
    // The held GPU frees at +1 s; a call of 21 s (c003) used to backfill there because it ended by
    // the whole-GPU call's promise (+21 s), which pushed it and the call queued behind it (c002) late.
    expect(broken(1, 4, [at0(1, 1, 1), at0(1, 1, 4), at0(1, 22, 1), at0(1, 21, 1), at0(1, 1, 1)], {})).toEqual([]);
    expect(broken(1, 4, [at0(1, 1, 1), at0(2, 1, 4), at0(2, 12, 1), at0(1, 11, 1), at0(1, 1, 1)], {})).toEqual([]);
  });

  it("known gap (docs/scheduling.md §5): a whole-GPU call that becomes the head later leaves a slot idle that no promise counted", () => {
    // Two one-slot calls run until +1 s; a one-slot call and a whole-GPU call of 1 s wait (promised
    // +21 s and +22.5 s); a whole-GPU call of a higher class and 21 s arrives and ranks between them.
    // At +1 s it becomes the head; the GPU's other slot is of use to nobody for 1 s, in no promise.
    // When multi-slot promises are kept, this test fails: make it expect [] and drop "known gap".
    expect(broken(1, 2, [at0(1, 1, 1), at0(1, 1, 1), at0(1, 1, 1), at0(1, 1, 2), at0(2, 21, 2)], {})).toEqual([
      "c003 at +23000 promised +22500",
    ]);
  });

  it("ranking by key alone (promises not kept) does break them: the property above can fail", () => {
    const result = fc.check(property({ keepPromises: false }), { numRuns: 300 });
    expect(result.failed).toBe(true);
  });
});
