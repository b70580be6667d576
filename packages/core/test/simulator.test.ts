import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, requestedDurationMs, simulate, tierForPerson, tierOf } from "../src/index.js";
import type { SimulationResult, TraceRecord } from "../src/index.js";

const T0 = Date.UTC(2024, 10, 15, 12, 0, 0);
const S = 1000;

/** The first person ids (p0, p1, …) the tier rule puts in each tier. */
function peopleOf(tier: string, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (tierForPerson(`p${i}`, 5, 20) === tier) out.push(`p${i}`);
  return out;
}

function rec(atS: number, person: string, execS: number, o: Partial<TraceRecord> = {}): TraceRecord {
  return { arrivalMs: T0 + atS * S, person, app: "M1", execMs: execS * S, imagesPerPrompt: 1, ...o };
}

describe("simulator rules", () => {
  it("assigns tiers by a stable hash: about 5 % pro, 20 % free, the rest anonymous", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const t = tierForPerson(`G${i}`, 5, 20);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect((counts.get("pro") ?? 0) / 20_000).toBeCloseTo(0.05, 1);
    expect((counts.get("free") ?? 0) / 20_000).toBeCloseTo(0.2, 1);
    expect(tierForPerson("G0264", 5, 20)).toBe(tierForPerson("G0264", 5, 20));
    expect(tierForPerson("anyone", 0, 0)).toBe("anonymous");
    expect(tierForPerson("anyone", 100, 0)).toBe("pro");
  });

  it("rounds GPU time up to whole steps, at least one, at most the tier's maximum", () => {
    expect(requestedDurationMs(0, 15 * S, 120 * S)).toBe(15 * S);
    expect(requestedDurationMs(15 * S, 15 * S, 120 * S)).toBe(15 * S);
    expect(requestedDurationMs(15 * S + 1, 15 * S, 120 * S)).toBe(30 * S);
    expect(requestedDurationMs(500 * S, 15 * S, 120 * S)).toBe(120 * S);
  });
});

describe("simulate", () => {
  it("serves tiers in class order when the pool is oversubscribed", () => {
    const [pro1, pro2] = peopleOf("pro", 2) as [string, string];
    const [free1, free2] = peopleOf("free", 2) as [string, string];
    const [anon1, anon2] = peopleOf("anonymous", 2) as [string, string];
    // A burst: 12 calls of 10 s on one GPU (2 slots), arriving anonymous first.
    const records: TraceRecord[] = [];
    const who = [anon1, anon2, free1, free2, pro1, pro2];
    for (let i = 0; i < 12; i++) records.push(rec(i * 0.1, who[i % 6] as string, 10));
    const r = simulate(records, "gpupool", { gpus: 1, speedup: 1 });
    const t = r.tiers;
    // Calls queued first were promised their bound: a pro call that cannot go ahead without
    // breaking those promises, and would wait past the timeout behind them, is refused at once.
    expect(r.granted + r.predictedWaitRefusals).toBe(12);
    expect(r.queueTimeouts).toBe(0);
    expect(r.etaBoundExceeded).toBe(0);
    expect(t["pro"]?.waitP95S).toBeLessThan(t["free"]?.waitP95S ?? 0);
    expect(t["free"]?.waitP95S).toBeLessThan(t["anonymous"]?.waitP95S ?? 0);
    expect(r.idleWhileWaitingSlotS).toBe(0);
  });

  it("FIFO idles slots behind an xlarge head; gpupool backfills them", () => {
    const people = peopleOf("anonymous", 4);
    const records = [
      rec(0, people[0] as string, 30), // takes one slot for 30 s
      rec(1, people[1] as string, 10, { imagesPerPrompt: 8 }), // xlarge: waits for the whole GPU
      rec(2, people[2] as string, 10), // fits the free slot now
      rec(3, people[3] as string, 10),
    ];
    const fifo = simulate(records, "fifo", { gpus: 1, speedup: 1 });
    const ours = simulate(records, "gpupool", { gpus: 1, speedup: 1 });
    expect(fifo.idleWhileWaitingSlotS).toBeGreaterThan(0);
    expect(ours.idleWhileWaitingSlotS).toBe(0);
    expect(ours.utilization).toBeGreaterThanOrEqual(fifo.utilization);
    expect(ours.granted).toBe(4);
  });

  it("counts quota denials per tier, queue timeouts, and calls stopped at their deadline", () => {
    const [anon] = peopleOf("anonymous", 1) as [string];
    const [other] = peopleOf("free", 1) as [string];
    // anonymous: 120 s a day. 200 s of GPU time asks for 120 s (the maximum) and is stopped there.
    const records = [rec(0, anon, 200), rec(1, anon, 10), rec(2, other, 10), rec(3, other, 10), rec(4, other, 10)];
    const r = simulate(records, "gpupool", { gpus: 1, speedup: 1, xlargeImages: null });
    expect(r.expired).toBe(1);
    expect(r.tiers["anonymous"]).toMatchObject({ requests: 2, granted: 1, quotaDenials: 1 });
    // One slot left for the free person's three 10-s calls: all granted in turn.
    expect(r.tiers["free"]).toMatchObject({ requests: 3, granted: 3, queueTimeouts: 0 });
    expect(r.admitted).toBe(4);
    // With a 5 s queue timeout, the second and third would wait for the first (until 12 s): they
    // are refused at once (predicted_wait) instead of timing out after 5 s...
    const short = { gpus: 1, speedup: 1, xlargeImages: null, policy: { ...DEFAULT_POLICY, queueTimeoutMs: 5 * S } };
    const honest = simulate(records, "gpupool", short);
    expect(honest.tiers["free"]).toMatchObject({ granted: 1, queueTimeouts: 0, predictedWaitRefusals: 2, waited: 0 });
    expect(honest.predictedWaitRefusals).toBe(2);
    expect(honest.endedInNothing).toBe(0);
    // ...and, queued as before, they wait the 5 s and time out: two waits of two ended in nothing.
    const queued = simulate(records, "gpupool", { ...short, honest: false });
    expect(queued.tiers["free"]).toMatchObject({ granted: 1, queueTimeouts: 2, predictedWaitRefusals: 0, waited: 2 });
    expect(queued.tiers["free"]?.waitP99S).toBe(5);
    expect(queued.tiers["free"]?.endedInNothing).toBe(1);
  });

  it("times a tier out after its own queue timeout", () => {
    const [a, b] = peopleOf("free", 2) as [string, string];
    const records = [rec(0, a, 30), rec(1, a, 30), rec(2, b, 10)];
    const tiers = { ...DEFAULT_POLICY.tiers, free: { ...tierOf(DEFAULT_POLICY, "free"), queueTimeoutMs: 5 * S } };
    const r = simulate(records, "gpupool", {
      gpus: 1,
      speedup: 1,
      xlargeImages: null,
      honest: false,
      policy: { ...DEFAULT_POLICY, tiers },
    });
    // Two slots: the first two run; the third waits 5 s (its tier's timeout, not the pool's 60 s).
    expect(r.tiers["free"]).toMatchObject({ granted: 2, queueTimeouts: 1 });
    expect(r.tiers["free"]?.waitP99S).toBe(5);
  });

  it("keeps an app at its limit waiting without blocking other apps", () => {
    const people = peopleOf("anonymous", 3);
    const records = [
      rec(0, people[0] as string, 20, { app: "A" }),
      rec(1, people[1] as string, 20, { app: "A" }),
      rec(2, people[2] as string, 20, { app: "B" }),
    ];
    const r = simulate(records, "gpupool", { gpus: 2, speedup: 1, appMaxConcurrency: 1 });
    expect(r.granted).toBe(3);
    // The second call of app A waits for the first (19 s); app B's call goes at once.
    expect(r.longestWaitS).toBe(19);
    expect(r.idleWhileWaitingSlotS).toBe(0);
  });

  const traceArb = fc.array(
    fc.record({
      gapS: fc.integer({ min: 0, max: 20 }),
      person: fc.integer({ min: 0, max: 14 }),
      app: fc.constantFrom("A", "B", "C"),
      execS: fc.integer({ min: 0, max: 150 }),
      images: fc.constantFrom(1, 1, 1, 4, 8),
    }),
    { maxLength: 120 },
  );
  const toRecords = (
    rows: { gapS: number; person: number; app: string; execS: number; images: number }[],
  ): TraceRecord[] => {
    let at = 0;
    return rows.map((r) => {
      at += r.gapS;
      return rec(at, `p${r.person}`, r.execS, { app: r.app, imagesPerPrompt: r.images });
    });
  };

  it("property: gpupool never idles a usable slot, accounts every call, and replays deterministically", () => {
    fc.assert(
      fc.property(
        traceArb,
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom(1, 3),
        fc.constantFrom(null, 1, 2),
        (rows, gpus, speedup, limit) => {
          const records = toRecords(rows);
          const options = { gpus, speedup, appMaxConcurrency: limit, proPercent: 20, freePercent: 30 };
          const a = simulate(records, "gpupool", options);
          const b = simulate(records, "gpupool", options);
          expect(a).toEqual(b);
          expect(a.idleWhileWaitingSlotS).toBe(0);
          check(a, records.length);
          check(simulate(records, "fifo", options), records.length);
        },
      ),
      { numRuns: 100 },
    );
  });
});

function check(r: SimulationResult, requests: number): void {
  expect(r.utilization).toBeLessThanOrEqual(1);
  expect(r.utilization).toBeGreaterThanOrEqual(0);
  expect(r.admitted).toBe(r.granted + r.queueTimeouts);
  let sum = 0;
  for (const t of Object.values(r.tiers)) sum += t.requests;
  expect(sum).toBe(requests);
  const denied = Object.values(r.tiers).reduce((n, t) => n + t.quotaDenials + t.noGpuAvailable, 0);
  expect(r.admitted + denied).toBe(requests);
  expect(r.jainFairness).toBeLessThanOrEqual(1);
}
