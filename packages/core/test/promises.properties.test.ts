import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { SchedulerOptions } from "../src/index.js";
import {
  arrivalArb,
  broken,
  burstArrivalArb,
  givingUpArrivalArb,
  mixedArrivalArb,
  replay,
} from "./promises-harness.js";
import type { Arrival } from "./promises-harness.js";

/**
 * The bound told at admission (eta_max) is a promise: with calls arriving all the time — higher
 * classes later, shorter ones, ones with more quota left, one-slot, two-slot and whole-GPU calls
 * mixed — and leases ending early or at their deadlines, no queued call starts later than the
 * bound it was told when it was queued (docs/scheduling.md §5 gives the argument).
 */

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

  const totals = { promised: 0, backfills: 0, gaveUp: 0 };
  const mixed = (options: Partial<SchedulerOptions>, arrival = mixedArrivalArb) =>
    fc.property(
      fc.integer({ min: 1, max: 3 }),
      fc.constantFrom(2, 4),
      fc.array(arrival, { minLength: 1, maxLength: 40 }),
      (gpus, slots, arrivals) => {
        const r = replay(gpus, slots, arrivals, options);
        totals.promised += r.promised;
        totals.backfills += r.backfills;
        totals.gaveUp += r.gaveUp;
        expect(r.late).toEqual([]);
      },
    );

  it("nor does any call of a mix of one-slot, two-slot and whole-GPU calls, on GPUs of 2 or 4 slots", () => {
    // 3,000 schedules of about 19,000 calls (5,100 of them queued with a promise); before multi-slot
    // calls' idle time was in the promises, 14 of those started late (docs/scheduling.md §5).
    Object.assign(totals, { promised: 0, backfills: 0, gaveUp: 0 });
    fc.assert(mixed({}), { numRuns: 3000, seed: 42 });
    // The backfill step (a call granted on the GPU held for a waiting head, docs/scheduling.md §5)
    // is exercised, not just allowed: 1,201 calls were placed that way.
    expect(totals.backfills).toBeGreaterThan(1000);
  });

  it("nor when queued calls give up (time out): a head that gives up before its GPU could clear gets none held", () => {
    Object.assign(totals, { promised: 0, backfills: 0, gaveUp: 0 });
    fc.assert(mixed({}, givingUpArrivalArb), { numRuns: 3000, seed: 42 });
    // 2,025 calls gave up; 455 were placed on a GPU held for another.
    expect(totals.gaveUp).toBeGreaterThan(1000);
    expect(totals.backfills).toBeGreaterThan(300);
  });

  it("nor in bursts on GPUs of 4 slots, where the GPU held for a whole-GPU head changes as another clears sooner", () => {
    // The case the written argument for backfill leaves open (docs/scheduling.md §5): uncharged
    // backfills on the GPU first held may run on while the newly held one stands idle.
    let switches = 0;
    let backfills = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.array(burstArrivalArb, { minLength: 1, maxLength: 40 }),
        (gpus, arrivals) => {
          const r = replay(gpus, 4, arrivals, {});
          switches += r.switches;
          backfills += r.backfills;
          expect(r.late).toEqual([]);
        },
      ),
      { numRuns: 3000, seed: 7 },
    );
    // Seed 7: the held GPU changed under a waiting head 26 times, 1,232 calls backfilled.
    expect(switches).toBeGreaterThan(10);
    expect(backfills).toBeGreaterThan(1000);
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

  it("a whole-GPU call that becomes the head later is charged the slot-time it leaves idle, in every promise behind it", () => {
    // Two one-slot calls run until +1 s; a one-slot call and a whole-GPU call of 1 s wait; a
    // whole-GPU call of a higher class and 21 s arrives. At +1 s it would be the head, and the GPU's
    // other slot of use to nobody for 1 s: that slot-second was in no promise, and the waiting
    // whole-GPU call started 0.5 s late. Now the newcomer's idle allowance is part of its cost.
    expect(broken(1, 2, [at0(1, 1, 1), at0(1, 1, 1), at0(1, 1, 1), at0(1, 1, 2), at0(2, 21, 2)], {})).toEqual([]);
    // A one-slot call of a higher class ranking ahead of a waiting whole-GPU call starts when the
    // GPU's first slot frees and keeps the other idle for its whole duration (seed 2 of the mix).
    expect(broken(1, 2, [at0(1, 2, 2), at0(1, 1, 4), at0(2, 21, 1)], {})).toEqual([]);
  });

  it("ranking by key alone (promises not kept) does break them: the properties above can fail", () => {
    expect(fc.check(property({ keepPromises: false }), { numRuns: 300 }).failed).toBe(true);
    expect(fc.check(mixed({ keepPromises: false }), { numRuns: 300 }).failed).toBe(true);
  });
});
