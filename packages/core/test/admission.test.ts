import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_POLICY,
  EMPTY_LEDGER,
  decideAdmission,
  needsInFlightEnd,
  quotaLeftShare,
  quotaView,
  tierOf,
} from "../src/index.js";
import type { AdmissionAccount, AdmissionRequest, LedgerState, Placement, QueuePlace } from "../src/index.js";

const NOW = Date.UTC(2026, 11, 5, 12);
const policy = { ...DEFAULT_POLICY, queueMaxLength: 3 };
const large = policy.sizes["large"]!;
const xlarge = policy.sizes["xlarge"]!;

function account(
  tier = "free",
  ledger: Partial<LedgerState> = {},
  inFlightEnd: number | null = null,
): AdmissionAccount {
  return {
    identity: { kind: "user", id: "u_1", tier },
    tier: tierOf(policy, tier),
    overrideMs: null,
    ledger: { ...EMPTY_LEDGER, ...ledger },
    inFlightEnd,
  };
}

function request(o: Partial<AdmissionRequest> = {}): AdmissionRequest {
  return { durationMs: 60_000, size: large, queue: true, via: "ip-token", node: null, now: NOW, ...o };
}

const WAIT: Placement = { kind: "wait", place: { position: 1, reason: "node", etaMs: 5_000 }, queued: 0 };

describe("decideAdmission", () => {
  it("admits onto a free slot, reserving duration × cost and counting the run", () => {
    const d = decideAdmission(policy, account(), request({ size: xlarge }), { kind: "now" });
    expect(d).toEqual({
      kind: "admitted",
      outcome: "granted",
      reservedMs: 120_000,
      split: { quotaMs: 120_000, overageMs: 0, holdMicros: 0 },
      ledger: { ...EMPTY_LEDGER, reservedMs: 120_000, runs: 1 },
    });
  });

  it("names the outcome after the placement: queued in line, or pending for the scheduler to place", () => {
    expect(decideAdmission(policy, account(), request(), WAIT)).toMatchObject({ kind: "admitted", outcome: "queued" });
    expect(decideAdmission(policy, account(), request(), { kind: "later" })).toMatchObject({
      kind: "admitted",
      outcome: "pending",
    });
  });

  it("refuses for quota before it looks at the pool: a person over quota is told so, not that the node is down", () => {
    const over = account("free", { usedMs: 200_000, windowStartedAt: NOW - 1_000 });
    for (const placement of [
      { kind: "node_missing" },
      { kind: "never", onlyAgents: false },
      WAIT,
      { kind: "now" },
    ] as Placement[]) {
      const d = decideAdmission(policy, over, request({ queue: false, node: "gpu-host" }), placement);
      expect(d.kind === "refused" && d.problem.code).toBe("quota_exceeded");
    }
  });

  it("refuses a call over the tier's maximum duration with 422, whatever the pool would do", () => {
    const d = decideAdmission(policy, account(), request({ durationMs: 121_000 }), { kind: "now" });
    expect(d).toMatchObject({
      kind: "refused",
      retryAfterS: null,
      problem: { code: "duration_too_long", status: 422 },
    });
  });

  it("refuses what the pool cannot take, each with its reason and a retry hint", () => {
    const cases: [Placement, Partial<AdmissionRequest>, string, number | null][] = [
      [{ kind: "node_missing" }, { node: "gpu-host" }, "node_not_registered", 5],
      [{ kind: "never", onlyAgents: false }, {}, "no_capacity", null],
      [{ kind: "never", onlyAgents: true }, {}, "no_capacity", null],
      [WAIT, { queue: false }, "queue_disabled", 5],
      [{ ...WAIT, queued: 3 }, {}, "queue_full", 60],
      // A full queue is the reason even for a call that would not have queued anyway.
      [{ ...WAIT, queued: 3 }, { queue: false }, "queue_full", 60],
    ];
    for (const [placement, o, reason, retryAfterS] of cases) {
      const d = decideAdmission(policy, account(), request(o), placement);
      expect(d).toMatchObject({
        kind: "refused",
        retryAfterS,
        problem: { code: "no_gpu_available", status: 503, reason },
      });
      if (d.kind === "refused") expect(d.problem.detail).toMatch(/Nothing was (reserved or )?charged/);
    }
    // queue: false behind the app's own limit says so, not that every GPU is busy.
    const limited: Placement = { ...WAIT, place: { position: 1, reason: "concurrency", etaMs: 5_000 } };
    const behindLimit = decideAdmission(policy, account(), request({ queue: false }), limited);
    expect(behindLimit).toMatchObject({ kind: "refused", problem: { reason: "queue_disabled" } });
    if (behindLimit.kind === "refused") {
      expect(behindLimit.problem.detail).toMatch(/max concurrency/);
      expect(behindLimit.problem.detail).not.toMatch(/Every GPU/);
    }
    const onNode = decideAdmission(policy, account(), request({ node: "gpu-host" }), { kind: "node_missing" });
    expect(onNode.kind === "refused" && onNode.problem.detail).toContain("Node gpu-host");
  });

  it("refuses at once a call expected to wait longer than it may (predicted_wait), only when asked to", () => {
    const long: Placement = {
      kind: "wait",
      place: { position: 4, reason: "node", etaMs: 90_000, expectedMs: 70_500 },
      queued: 2,
    };
    // No maxWaitMs (the device API by default): queued as before, whatever the wait.
    expect(decideAdmission(policy, account(), request(), long)).toMatchObject({ outcome: "queued" });
    // Null: as long as the tier's queue timeout (60 s) — 70.5 s expected is too long.
    const d = decideAdmission(policy, account(), request({ maxWaitMs: null }), long);
    expect(d).toMatchObject({
      kind: "refused",
      // Once the expected wait would leave a tenth of the 60 s unused: 71 − 54 s.
      retryAfterS: 17,
      problem: {
        code: "no_gpu_available",
        status: 503,
        reason: "predicted_wait",
        eta_s: 71,
        eta_max_s: 90,
        max_wait_s: 60,
      },
    });
    if (d.kind === "refused") {
      expect(d.problem.detail).toMatch(/about 71s \(at most 90s\), longer than the 60s queue timeout of the free tier/);
      expect(d.problem.detail).toMatch(/nothing was reserved or charged/);
    }
    // The expected wait decides, not the bound: 70.5 s fits an 80-s max_wait in a tier that waits 2 minutes.
    const patient = {
      ...policy,
      tiers: { ...policy.tiers, free: { ...tierOf(policy, "free"), queueTimeoutMs: 120_000 } },
    };
    const patientAccount = { ...account(), tier: tierOf(patient, "free") };
    expect(decideAdmission(patient, patientAccount, request({ maxWaitMs: 80_000 }), long)).toMatchObject({
      outcome: "queued",
    });
    // But not with a 75-s max_wait: expected to start in its last tenth (after 67.5 s), and the bound
    // (90 s) promises no start in time — refused, saying so.
    const close = decideAdmission(patient, patientAccount, request({ maxWaitMs: 75_000 }), long);
    expect(close).toMatchObject({
      kind: "refused",
      retryAfterS: 4,
      problem: { reason: "predicted_wait", eta_s: 71, eta_max_s: 90, max_wait_s: 75 },
    });
    if (close.kind === "refused")
      expect(close.problem.detail).toMatch(/about 71s \(at most 90s\), too close to the 75s this request allows/);
    // With no headroom (queue.predicted_wait_headroom: 0) only a wait longer than it may is refused.
    const literal = { ...patient, predictedWaitHeadroom: 0 };
    expect(decideAdmission(literal, patientAccount, request({ maxWaitMs: 75_000 }), long)).toMatchObject({
      outcome: "queued",
    });
    const longer = decideAdmission(literal, patientAccount, request({ maxWaitMs: 70_000 }), long);
    expect(longer).toMatchObject({ kind: "refused", retryAfterS: 1, problem: { eta_s: 71, max_wait_s: 70 } });
    // A fraction of a second asked for is said as asked, not rounded down to nothing.
    const half = decideAdmission(policy, account(), request({ maxWaitMs: 500 }), WAIT);
    expect(half).toMatchObject({ kind: "refused", retryAfterS: 5, problem: { max_wait_s: 0.5 } });
    if (half.kind === "refused") expect(half.problem.detail).toMatch(/the 0\.5s this request allows/);
    // With a bound that promises a start in time, the same expected wait is queued.
    const promised: Placement = { ...long, place: { ...(long.place as QueuePlace), etaMs: 75_000 } };
    expect(decideAdmission(patient, patientAccount, request({ maxWaitMs: 75_000 }), promised)).toMatchObject({
      outcome: "queued",
    });
    // A max_wait shorter than the timeout is named in the refusal.
    const short = decideAdmission(policy, account(), request({ maxWaitMs: 30_000 }), WAIT);
    expect(short).toMatchObject({ outcome: "queued" });
    const impatient = decideAdmission(policy, account(), request({ maxWaitMs: 2_000 }), WAIT);
    expect(impatient).toMatchObject({
      kind: "refused",
      retryAfterS: 4, // 5 s expected, less nine tenths of 2 s, rounded up
      problem: { reason: "predicted_wait", max_wait_s: 2 },
    });
    if (impatient.kind === "refused") expect(impatient.problem.detail).toMatch(/allows \(max_wait\)/);
    // A full queue or queue: false is said first; an unknown ETA is never a reason to refuse.
    expect(decideAdmission(policy, account(), request({ maxWaitMs: null }), { ...long, queued: 3 })).toMatchObject({
      problem: { reason: "queue_full" },
    });
    // A call told how soon it may well start (the lowest class) is refused only when even that is too late.
    const soon = (soonestMs: number): Placement => ({ ...long, place: { ...(long.place as QueuePlace), soonestMs } });
    expect(decideAdmission(policy, account(), request({ maxWaitMs: null }), soon(59_000))).toMatchObject({
      outcome: "queued",
    });
    expect(decideAdmission(policy, account(), request({ maxWaitMs: null }), soon(61_000))).toMatchObject({
      kind: "refused",
      retryAfterS: 17,
      problem: { reason: "predicted_wait", eta_s: 71 },
    });
    const unknown: Placement = { kind: "wait", place: { position: 1, reason: "node", etaMs: null }, queued: 0 };
    expect(decideAdmission(policy, account(), request({ maxWaitMs: 0 }), unknown)).toMatchObject({ outcome: "queued" });
  });

  it("a call that may not queue is still admitted when a slot takes it, or when the scheduler places it later", () => {
    expect(decideAdmission(policy, account(), request({ queue: false }), { kind: "now" })).toMatchObject({
      outcome: "granted",
    });
    expect(decideAdmission(policy, account(), request({ queue: false }), { kind: "later" })).toMatchObject({
      outcome: "pending",
    });
  });

  it("uses the in-flight end for the retry time of a quota refusal, and asks for it only then", () => {
    const busy = account("free", { reservedMs: 180_000, windowStartedAt: NOW - 1_000 });
    expect(needsInFlightEnd(policy, busy, request())).toBe(true);
    expect(needsInFlightEnd(policy, account(), request())).toBe(false);
    expect(
      needsInFlightEnd(policy, account("free", { usedMs: 200_000, windowStartedAt: NOW - 1_000 }), request()),
    ).toBe(false);
    const d = decideAdmission(policy, { ...busy, inFlightEnd: NOW + 30_000 }, request(), { kind: "now" });
    expect(d).toMatchObject({
      kind: "refused",
      retryAfterS: 30,
      problem: { code: "quota_exceeded", next_step: "wait_for_calls" },
    });
  });

  it("never admits past the quota, and an admission adds exactly its reservation to the ledger (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("anonymous", "free", "pro"),
        fc.integer({ min: 0, max: 2_000_000 }),
        fc.integer({ min: 0, max: 2_000_000 }),
        fc.integer({ min: 1, max: 300_000 }),
        fc.boolean(),
        (tier, usedMs, reservedMs, durationMs, big) => {
          const a = account(tier, { usedMs, reservedMs, windowStartedAt: NOW - 1_000 });
          const size = big ? xlarge : large;
          const d = decideAdmission(policy, a, request({ durationMs, size }), { kind: "now" });
          const view = quotaView(a.ledger, a.tier, null, policy.windowMs);
          if (d.kind === "admitted") {
            expect(d.reservedMs).toBe(durationMs * size.cost);
            expect(d.ledger.reservedMs).toBe(reservedMs + d.reservedMs);
            expect(usedMs + d.ledger.reservedMs).toBeLessThanOrEqual(view.quotaMs);
          } else {
            expect(durationMs > a.tier.maxDurationMs || durationMs * size.cost > view.leftMs).toBe(true);
          }
        },
      ),
    );
  });
});

describe("quotaLeftShare", () => {
  it("is the share of the quota left before the call, 0 for a quota of 0", () => {
    expect(quotaLeftShare(policy, account("free", { usedMs: 105_000 }))).toBeCloseTo(0.5);
    expect(quotaLeftShare(policy, { ...account(), overrideMs: 0 })).toBe(0);
  });
});
