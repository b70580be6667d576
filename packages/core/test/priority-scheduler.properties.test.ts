import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Pool, PriorityScheduler, usableIdleSlots } from "../src/index.js";
import { IndexedHeap } from "../src/scheduling/scheduler-heap.js";
import { devicesOfSizes } from "./promises-harness.js";
import type { Concurrency, Grant, PriorityRequest } from "../src/index.js";

/** Properties of the priority scheduler, driven like the engine drives it: dispatch after every change. */

const T0 = 1_700_000_000_000;
const LIMITS: Readonly<Record<string, number | null>> = { a: 1, b: 2, c: null };
const APPS = [null, "a", "b", "c"] as const;

const devices = devicesOfSizes;

interface Active {
  readonly request: PriorityRequest;
  readonly grantedAt: number;
}

/** The engine's side: the pool, app counts, and what is queued and active. */
class Harness implements Concurrency {
  now = T0;
  readonly pool: Pool;
  readonly scheduler: PriorityScheduler;
  readonly queued = new Map<string, PriorityRequest>();
  readonly running = new Map<string, Active>();
  readonly everGranted = new Set<string>();
  readonly log: string[] = [];
  /** What `trial` said of each arrival: its grant as `log` records it, or "wait". */
  readonly predicted = new Map<string, string>();
  private readonly appActive = new Map<string, number>();
  private n = 0;

  constructor(
    sizes: readonly number[],
    readonly holdAfterMs: number,
    agingStepMs: number,
    private readonly limits: Readonly<Record<string, number | null>> = LIMITS,
    /** Arrivals try grantNow first, as the engine does (else enqueue, then dispatch as usual). */
    private readonly grantNow = false,
    /** Before each arrival, ask `trial` what enqueue + dispatch will do with it, and record the answer. */
    private readonly trials = false,
  ) {
    this.pool = new Pool(devices(sizes));
    this.scheduler = new PriorityScheduler({ agingStepMs, holdAfterMs });
  }

  active(appId: string): number {
    return this.appActive.get(appId) ?? 0;
  }
  limit(appId: string): number | null {
    return this.limits[appId] ?? null;
  }

  enqueue(o: { priority: number; slots: number; durationMs: number; appId: string | null; share: number }): string {
    const leaseId = `q${this.n++}`;
    const request: PriorityRequest = {
      leaseId,
      appId: o.appId,
      identity: `user:${leaseId}`,
      slots: o.slots,
      priority: o.priority,
      durationMs: o.durationMs,
      seq: this.n,
      queuedAt: this.now,
      quotaLeftShare: o.share,
    };
    if (this.trials) {
      const t = this.scheduler.trial(request, this.pool, this, this.now);
      this.predicted.set(
        leaseId,
        t.kind === "now" ? `${this.now}:${leaseId}@${t.node}#${t.index}/${t.slots.join(",")}` : "wait",
      );
    }
    const now = this.grantNow ? this.scheduler.grantNow(request, this.pool, this, this.now) : null;
    if (now !== null) {
      this.granted(now, request);
      return leaseId;
    }
    this.queued.set(leaseId, request);
    this.scheduler.enqueue(request);
    return leaseId;
  }

  private granted(grant: Grant, request: PriorityRequest): void {
    expect(this.everGranted.has(grant.leaseId)).toBe(false);
    this.everGranted.add(grant.leaseId);
    this.running.set(grant.leaseId, { request, grantedAt: this.now });
    if (request.appId !== null) this.appActive.set(request.appId, this.active(request.appId) + 1);
    this.log.push(
      `${this.now}:${grant.leaseId}@${grant.assignment.node}#${grant.assignment.index}/${grant.assignment.slots.join(",")}`,
    );
  }

  end(leaseId: string): void {
    const a = this.running.get(leaseId);
    if (!a) return;
    this.running.delete(leaseId);
    expect(this.pool.release(leaseId)).toBe(true);
    this.scheduler.onReleased(leaseId);
    if (a.request.appId !== null) this.appActive.set(a.request.appId, this.active(a.request.appId) - 1);
  }

  cancel(leaseId: string): void {
    if (!this.queued.delete(leaseId)) return;
    expect(this.scheduler.remove(leaseId)).toBe(true);
  }

  dispatch(): string[] {
    const granted: string[] = [];
    this.scheduler.dispatch(
      this.pool,
      this,
      (grant, request) => {
        expect(this.queued.delete(grant.leaseId)).toBe(true);
        this.granted(grant, request);
        granted.push(grant.leaseId);
      },
      this.now,
    );
    return granted;
  }

  /** Every invariant the scheduler promises, checked against the pool itself. */
  check(): void {
    const { pool, scheduler } = this;
    // Grants never exceed capacity, and the pool's count agrees with the leases granted.
    let slots = 0;
    for (const a of this.running.values()) slots += a.request.slots;
    expect(pool.busySlots).toBe(slots);
    expect(pool.busySlots).toBeLessThanOrEqual(pool.totalSlots);
    // No slot double-booked: each active lease holds exactly its slots, on one device.
    const held = new Map<string, string[]>();
    for (const { spec, holders } of pool.snapshot()) {
      for (const h of holders) if (h !== null) held.set(h, [...(held.get(h) ?? []), `${spec.node}#${spec.index}`]);
    }
    expect([...held.keys()].sort()).toEqual([...this.running.keys()].sort());
    for (const [id, where] of held) {
      expect(where.length).toBe(this.running.get(id)?.request.slots);
      expect(new Set(where).size).toBe(1);
    }
    // App limits hold.
    for (const app of ["a", "b"]) expect(this.active(app)).toBeLessThanOrEqual(this.limit(app) ?? Infinity);
    // Work conservation: no free slot could take a waiting request right now.
    const hold = scheduler.hold();
    expect(usableIdleSlots(pool, this.queued.values(), this, hold, this.now)).toBe(0);
    // A hold is only for a head that no device fits: an aged one, or one (unbound) with a promise to keep.
    if (hold !== null) {
      const head = this.queued.get(hold.leaseId);
      expect(head).toBeDefined();
      if (this.now - (head as PriorityRequest).queuedAt < this.holdAfterMs) expect(head?.node ?? null).toBeNull();
      expect(pool.fits((head as PriorityRequest).slots)).toBe(false);
    }
    // The queue is what the engine thinks, and positions are a permutation in waiting() order.
    expect(scheduler.size).toBe(this.queued.size);
    const order = [...scheduler.waiting()];
    expect(order.map((w) => w.position)).toEqual(order.map((_, i) => i + 1));
    for (const w of order) {
      expect(this.queued.has(w.request.leaseId)).toBe(true);
      expect(scheduler.position(w.request.leaseId)).toBe(w.position);
    }
  }
}

type Op =
  | {
      readonly t: "enqueue";
      readonly priority: number;
      readonly slots: number;
      readonly durationS: number;
      readonly app: number;
      readonly share: number;
    }
  | { readonly t: "end"; readonly pick: number }
  | { readonly t: "cancel"; readonly pick: number }
  | { readonly t: "advance"; readonly ms: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant("enqueue" as const),
      priority: fc.integer({ min: 1, max: 3 }),
      slots: fc.constantFrom(1, 1, 2),
      durationS: fc.integer({ min: 1, max: 120 }),
      app: fc.integer({ min: 0, max: 3 }),
      share: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("end" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 40_000 }) }) },
);

function apply(h: Harness, op: Op): void {
  switch (op.t) {
    case "enqueue":
      h.enqueue({
        priority: op.priority,
        slots: op.slots,
        durationMs: op.durationS * 1000,
        appId: APPS[op.app] ?? null,
        share: op.share,
      });
      break;
    case "end": {
      const ids = [...h.running.keys()];
      if (ids.length > 0) h.end(ids[op.pick % ids.length] as string);
      break;
    }
    case "cancel": {
      const ids = [...h.queued.keys()];
      if (ids.length > 0) h.cancel(ids[op.pick % ids.length] as string);
      break;
    }
    case "advance":
      h.now += op.ms;
      break;
  }
  h.dispatch();
}

const poolArb = fc.array(fc.constantFrom(1, 2, 2, 2), { minLength: 1, maxLength: 4 });

describe("PriorityScheduler properties", () => {
  it("never double-books a slot, never exceeds capacity or app limits, and is work-conserving", () => {
    fc.assert(
      fc.property(
        poolArb,
        fc.constantFrom(0, 5_000, 15_000),
        fc.constantFrom(1_000, 15_000),
        fc.array(opArb, { maxLength: 120 }),
        (sizes, holdAfterMs, agingStepMs, ops) => {
          const h = new Harness(sizes, holdAfterMs, agingStepMs);
          for (const op of ops) {
            apply(h, op);
            h.check();
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("grantNow places an arrival exactly where enqueue + dispatch would, and the rest of the schedule is unchanged", () => {
    fc.assert(
      fc.property(
        poolArb,
        fc.constantFrom(0, 5_000, 15_000),
        fc.constantFrom(1_000, 15_000),
        fc.array(opArb, { maxLength: 120 }),
        (sizes, holdAfterMs, agingStepMs, ops) => {
          const queued = new Harness(sizes, holdAfterMs, agingStepMs);
          const direct = new Harness(sizes, holdAfterMs, agingStepMs, LIMITS, true);
          for (const op of ops) {
            apply(queued, op);
            apply(direct, op);
            direct.check();
            expect(direct.log).toEqual(queued.log);
            expect(direct.scheduler.hold()).toEqual(queued.scheduler.hold());
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("trial predicts exactly whether enqueue + dispatch grants an arrival at once, and on which slots, and changes nothing", () => {
    fc.assert(
      fc.property(
        poolArb,
        fc.constantFrom(0, 5_000, 15_000),
        fc.constantFrom(1_000, 15_000),
        fc.array(opArb, { maxLength: 120 }),
        (sizes, holdAfterMs, agingStepMs, ops) => {
          const plain = new Harness(sizes, holdAfterMs, agingStepMs);
          const tried = new Harness(sizes, holdAfterMs, agingStepMs, LIMITS, false, true);
          for (const op of ops) {
            const before = tried.log.length;
            apply(plain, op);
            apply(tried, op);
            expect(tried.log).toEqual(plain.log);
            expect(tried.scheduler.hold()).toEqual(plain.scheduler.hold());
            if (op.t !== "enqueue") continue;
            const id = [...tried.predicted.keys()].at(-1) as string;
            const granted = tried.log.slice(before).find((line) => line.includes(`:${id}@`));
            expect(granted ?? "wait").toBe(tried.predicted.get(id));
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("is deterministic: the same operations give the same grants", () => {
    fc.assert(
      fc.property(poolArb, fc.array(opArb, { maxLength: 80 }), (sizes, ops) => {
        const run = () => {
          const h = new Harness(sizes, 5_000, 5_000);
          for (const op of ops) apply(h, op);
          return h.log;
        };
        expect(run()).toEqual(run());
      }),
      { numRuns: 100 },
    );
  });

  it("never starves: under a stream of higher-class arrivals a low-class request is granted within the aging bound", () => {
    const MAX_DURATION_MS = 8_000;
    const streamArb = fc.array(
      fc.record({
        gapMs: fc.integer({ min: 300, max: 3_000 }),
        priority: fc.integer({ min: 1, max: 3 }),
        slots: fc.constantFrom(1, 1, 1, 2),
        durationMs: fc.integer({ min: 1_000, max: MAX_DURATION_MS }),
        runShare: fc.double({ min: 0.1, max: 1, noNaN: true }),
      }),
      { minLength: 1, maxLength: 12 },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom(1_000, 4_000),
        fc.constantFrom(0, 2_000, 8_000),
        fc.constantFrom(1, 2),
        fc.integer({ min: 1_000, max: MAX_DURATION_MS }),
        streamArb,
        (gpus, agingStepMs, holdAfterMs, victimSlots, victimDurationMs, stream) => {
          const h = new Harness(new Array<number>(gpus).fill(2), holdAfterMs, agingStepMs, {});
          // Lease ends (at a share of the duration, never past the deadline), in time order.
          interface End {
            at: number;
            id: string;
            index: number;
          }
          const ends = new IndexedHeap<End>(
            (a, b) => a.at < b.at || (a.at === b.at && a.id < b.id),
            (e) => e.index,
            (e, i) => {
              e.index = i;
            },
          );
          const runShare = new Map<string, number>();
          const dispatch = () => {
            for (const id of h.dispatch()) {
              const a = h.running.get(id) as Active;
              ends.push({ at: h.now + Math.ceil(a.request.durationMs * (runShare.get(id) ?? 1)), id, index: -1 });
            }
          };
          let victim: string | null = null;
          const victimAt = T0 + 5_000;
          // After this, no new arrival (class ≤ 3) can rank ahead of the victim (class 1).
          const agedAt = (Math.floor(victimAt / agingStepMs) + 3) * agingStepMs;
          let positionAtAged: number | null = null;
          let deadlineForVictim = Number.POSITIVE_INFINITY;
          let nextArrival = T0;
          let k = 0;
          for (let guard = 0; guard < 200_000; guard++) {
            const victimGranted = victim !== null && h.everGranted.has(victim);
            if (victimGranted && h.queued.size === 0 && ends.size === 0) break;
            // The stream keeps coming until the victim is granted, then everything drains.
            const arrivalAt = victimGranted ? Number.POSITIVE_INFINITY : nextArrival;
            const candidates = [
              arrivalAt,
              ends.peek()?.at ?? Number.POSITIVE_INFINITY,
              victim === null ? victimAt : Number.POSITIVE_INFINITY,
              positionAtAged === null && victim !== null ? agedAt : Number.POSITIVE_INFINITY,
            ];
            const at = Math.min(...candidates);
            expect(at).toBeLessThan(Number.POSITIVE_INFINITY);
            h.now = at;
            if (!victimGranted && h.now > deadlineForVictim) break;
            const end = ends.peek();
            if (end !== undefined && end.at === at) {
              ends.pop();
              h.end(end.id);
            } else if (victim === null && at === victimAt) {
              victim = h.enqueue({
                priority: 1,
                slots: victimSlots,
                durationMs: victimDurationMs,
                appId: null,
                share: 0,
              });
            } else if (at === arrivalAt) {
              const s = stream[k++ % stream.length] as (typeof stream)[number];
              const id = h.enqueue({
                priority: s.priority,
                slots: s.slots,
                durationMs: s.durationMs,
                appId: null,
                share: 1,
              });
              runShare.set(id, s.runShare);
              nextArrival = at + s.gapMs;
            } // else: the probe at agedAt
            dispatch();
            if (positionAtAged === null && victim !== null && h.now >= agedAt) {
              positionAtAged = h.scheduler.position(victim) ?? 0;
              deadlineForVictim = agedAt + positionAtAged * (holdAfterMs + 2 * MAX_DURATION_MS);
            }
          }
          expect(victim).not.toBeNull();
          const v = victim as string;
          expect(h.everGranted.has(v)).toBe(true);
          const a = h.running.get(v);
          if (a) expect(a.grantedAt).toBeLessThanOrEqual(deadlineForVictim);
          // And every request of the stream was granted too.
          expect(h.queued.size).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("the ETA of a one-slot request is an upper bound when nothing new arrives", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.array(
          fc.record({
            durationMs: fc.integer({ min: 1_000, max: 60_000 }),
            runShare: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          { maxLength: 6 },
        ),
        fc.array(
          fc.record({
            priority: fc.integer({ min: 1, max: 3 }),
            durationMs: fc.integer({ min: 1_000, max: 60_000 }),
            runShare: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          { minLength: 1, maxLength: 25 },
        ),
        (gpus, running, waiting) => {
          const h = new Harness(new Array<number>(gpus).fill(2), 0, 15_000, {});
          const share = new Map<string, number>();
          for (const r of running)
            share.set(
              h.enqueue({ priority: 9, slots: 1, durationMs: r.durationMs, appId: null, share: 1 }),
              r.runShare,
            );
          const ends: { at: number; id: string }[] = [];
          const track = (ids: string[]) => {
            for (const id of ids)
              ends.push({
                at: h.now + Math.floor((h.running.get(id) as Active).request.durationMs * (share.get(id) ?? 1)),
                id,
              });
          };
          track(h.dispatch());
          const etas = new Map<string, number>();
          for (const w of waiting)
            share.set(
              h.enqueue({ priority: w.priority, slots: 1, durationMs: w.durationMs, appId: null, share: 1 }),
              w.runShare,
            );
          track(h.dispatch());
          const start = h.now;
          for (const id of h.queued.keys()) {
            const place = h.scheduler.place(id, start);
            expect(place?.etaMs).not.toBeNull();
            etas.set(id, place?.etaMs as number);
          }
          const grantedAt = new Map<string, number>();
          while (ends.length > 0) {
            ends.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : 1));
            const e = ends.shift() as { at: number; id: string };
            h.now = e.at;
            h.end(e.id);
            const ids = h.dispatch();
            for (const id of ids) grantedAt.set(id, h.now);
            track(ids);
          }
          for (const [id, eta] of etas) expect((grantedAt.get(id) ?? Infinity) - start).toBeLessThanOrEqual(eta);
        },
      ),
      { numRuns: 150 },
    );
  });
});
