import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, HeldShares, Pool, PriorityScheduler, placementRefusal, tierOf } from "../src/index.js";
import type { Concurrency, DeviceSpec, PriorityRequest } from "../src/index.js";

/**
 * Honest admission's promise, checked by playing the schedule out: when calls hold what their
 * apps are learnt to hold and nothing new arrives, a call refused for `predicted_wait` would
 * indeed not have started within its wait bound (less the policy's headroom — a tenth by default,
 * none with `predicted_wait_headroom: 0` — when its eta_max promised no start within it), and one
 * admitted would have; for the lowest class, played out with every call holding the lower quartile
 * of its app's shares (its soonest likely start), with shares that spread; the expected wait is
 * never above the bound.
 */

const T0 = 1_700_000_000_000;
const APPS = ["a", "b", "c"] as const;
const LIMITS: Readonly<Record<string, number | null>> = { a: 1, b: null, c: 2 };

function devices(gpus: number): DeviceSpec[] {
  return Array.from({ length: gpus }, (_, i) => ({
    node: "n0",
    index: i,
    uuid: `GPU-${i}`,
    name: "L4",
    memoryMb: 24_576,
    slots: 2,
  }));
}

interface Call {
  readonly priority: number;
  readonly slots: number;
  readonly durationS: number;
  readonly app: number;
}

const callArb: fc.Arbitrary<Call> = fc.record({
  priority: fc.integer({ min: 1, max: 3 }),
  slots: fc.constantFrom(1, 1, 2),
  durationS: fc.integer({ min: 1, max: 90 }),
  app: fc.integer({ min: 0, max: 2 }),
});

/** A case on one GPU, one call of app b running for 90s, `last` arriving with a max_wait of 60s. */
function behindOne90s(
  shares: [number, number, number],
  last: Call,
  spread: boolean,
): [number, [number, number, number], Call[], Call[], Call, number, number | undefined, boolean] {
  return [1, shares, [{ priority: 3, slots: 2, durationS: 90, app: 1 }], [], last, 60, undefined, spread];
}

describe("predicted_wait", () => {
  it("refuses exactly the calls that would not start within their wait bound; expected ≤ bound", () => {
    // The property means little unless both answers came up.
    const seen = new Set<string>();
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        // What each app's calls hold of their reservation (learnt from 5 completed calls each).
        fc.tuple(
          fc.double({ min: 0.05, max: 1, noNaN: true }),
          fc.double({ min: 0.05, max: 1, noNaN: true }),
          fc.double({ min: 0.05, max: 1, noNaN: true }),
        ),
        fc.array(callArb, { minLength: 1, maxLength: 8 }),
        fc.array(callArb, { maxLength: 12 }),
        callArb,
        fc.integer({ min: 0, max: 120 }),
        // The default headroom, or none (queue.predicted_wait_headroom: 0: the rule without it).
        fc.constantFrom(undefined, 0),
        // Every call of an app held the same share, or they spread (their lower quartile below the median).
        fc.boolean(),
        (gpus, shares, running, waiting, last, maxWaitS, headroom, spread) => {
          const policy =
            headroom === undefined ? DEFAULT_POLICY : { ...DEFAULT_POLICY, predictedWaitHeadroom: headroom };
          const held = new HeldShares();
          const shareOf = (app: string): number => shares[APPS.indexOf(app as (typeof APPS)[number])] as number;
          const spreadOf = [0.4, 0.6, 1, 1, 1];
          for (const app of APPS)
            for (let i = 0; i < 5; i++)
              held.learn(app, Math.min(1, shareOf(app) * (spread ? (spreadOf[i] as number) : 1)) * 60_000, 60_000);
          // A call of the lowest class is refused on its soonest likely start: the forecast with every
          // call holding the lower quartile of its app's shares. Its schedule is played out that way.
          const quantile = last.priority <= 1 ? 0.25 : undefined;
          const pool = new Pool(devices(gpus));
          const scheduler = new PriorityScheduler({ agingStepMs: 15_000, holdAfterMs: 15_000 }, held);
          const active = new Map<string, number>();
          const concurrency: Concurrency = {
            active: (app) => active.get(app) ?? 0,
            limit: (app) => LIMITS[app] ?? null,
          };
          let n = 0;
          const request = (c: Call): PriorityRequest => ({
            leaseId: `q${String(n++).padStart(3, "0")}`,
            appId: APPS[c.app] as string,
            identity: `user:${n}`,
            slots: c.slots,
            priority: c.priority,
            durationMs: c.durationS * 1000,
            seq: n,
            queuedAt: T0,
            quotaLeftShare: 1,
          });
          // Each lease ends when its app's calls are learnt to end: the schedule "as expected".
          const ends: { at: number; id: string; app: string }[] = [];
          const starts = new Map<string, number>();
          let now = T0;
          const dispatch = (): void => {
            scheduler.dispatch(
              pool,
              concurrency,
              (grant, r) => {
                starts.set(grant.leaseId, now);
                const app = r.appId as string;
                active.set(app, (active.get(app) ?? 0) + 1);
                ends.push({ at: now + held.expectedHoldMs(app, r.durationMs, quantile), id: grant.leaseId, app });
              },
              now,
            );
          };
          for (const c of running) scheduler.enqueue(request(c));
          dispatch();
          // Calls queued at T0 behind the running ones; every queued call's expected wait is within its bound.
          for (const c of waiting) {
            scheduler.enqueue(request(c));
            dispatch();
          }
          for (const r of waiting.map((_, i) => `q${String(running.length + i).padStart(3, "0")}`)) {
            const place = scheduler.place(r, now);
            if (place !== null && place.etaMs !== null)
              expect(place.expectedMs ?? Infinity).toBeLessThanOrEqual(place.etaMs);
          }
          // One more arrives and is asked about as admission asks; then it is queued anyway, to see.
          const probe = request(last);
          const trial = scheduler.trial(probe, pool, concurrency, now);
          let asked: { refused: boolean; expectedMs: number | null; boundMs: number; soonest: boolean } | null = null;
          if (trial.kind === "wait") {
            const { etaMs, expectedMs } = trial.place;
            if (etaMs !== null) expect(expectedMs ?? Infinity).toBeLessThanOrEqual(etaMs);
            const refused = placementRefusal(
              policy,
              { size: { name: "s", slots: last.slots, cost: 1 }, node: null, queue: true, maxWaitMs: maxWaitS * 1000 },
              { kind: "wait", place: trial.place, queued: scheduler.size },
              tierOf(DEFAULT_POLICY, "pro"),
            );
            expect(refused === null || refused.problem["reason"] === "predicted_wait").toBe(true);
            asked = {
              refused: refused !== null,
              expectedMs: expectedMs ?? null,
              boundMs: etaMs ?? Infinity,
              soonest: trial.place.soonestMs != null,
            };
          }
          scheduler.enqueue(probe);
          dispatch();
          // Play it out: leases end as expected (the lowest class: as soon as they may well end), nothing new arrives.
          while (ends.length > 0) {
            ends.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : 1));
            const e = ends.shift() as { at: number; id: string; app: string };
            now = e.at;
            pool.release(e.id);
            scheduler.onReleased(e.id);
            active.set(e.app, (active.get(e.app) ?? 1) - 1);
            dispatch();
          }
          if (asked !== null && asked.expectedMs !== null) {
            // The bound: max_wait, at most the tier's queue timeout — less its last tenth when the
            // call's eta_max does not promise a start within it, unless the call is of the lowest
            // class (told its soonest likely start: refused only when that is too late).
            const limitMs = Math.min(maxWaitS * 1000, DEFAULT_POLICY.queueTimeoutMs);
            const startByMs =
              asked.soonest || asked.boundMs <= limitMs ? limitMs : Math.floor(limitMs * (1 - (headroom ?? 0.1)));
            const waited = (starts.get(probe.leaseId) ?? Infinity) - T0;
            if (asked.refused) expect(waited).toBeGreaterThan(startByMs);
            else expect(waited).toBeLessThanOrEqual(startByMs);
            seen.add(asked.refused ? "refused" : "admitted");
            // Queued on its soonest likely start although its expected start is later.
            if (!asked.refused && asked.soonest && (asked.expectedMs ?? 0) > limitMs)
              seen.add("admitted on its soonest start");
            // Refused though it would have started within the whole limit: the last tenth's rule.
            if (asked.refused && waited <= limitMs)
              seen.add(`refused in the last tenth, headroom ${headroom ?? "default"}`);
          }
        },
      ),
      {
        numRuns: 300,
        // Random runs come upon the two rarer cases only now and then; these always do. The last tenth:
        // on one GPU a pro call waits behind one of 90s whose app's calls hold 63% (57s expected,
        // 90s at most), so its eta_max promises nothing and it is expected in the minute's last tenth.
        examples: [
          behindOne90s([0.5, 0.63, 0.5], { priority: 3, slots: 2, durationS: 10, app: 1 }, false),
          // And a call of the lowest class is queued on its soonest likely start (54s), though its
          // expected start (90s) is too late.
          behindOne90s([0.5, 1, 0.5], { priority: 1, slots: 2, durationS: 10, app: 1 }, true),
        ],
      },
    );
    // Without headroom, no call that would have started within its whole limit is refused.
    expect([...seen].sort()).toEqual([
      "admitted",
      "admitted on its soonest start",
      "refused",
      "refused in the last tenth, headroom default",
    ]);
  });
});
