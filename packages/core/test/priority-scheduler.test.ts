import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, Pool, PriorityScheduler, schedulerOptionsFor, usableIdleSlots } from "../src/index.js";
import { Bench, Counter, STEP, T, gpu, req } from "./scheduler-harness.js";
import type { PriorityRequest, QueuePlace } from "../src/index.js";

describe("PriorityScheduler ordering", () => {
  it("ranks by class, then shorter duration, then quota left, then arrival", () => {
    const b = new Bench([gpu("n", 0)]);
    b.busy("x", "n", 0, [0, 1], T + 60_000);
    b.enqueue(
      req("anon", { priority: 1 }),
      req("free-late", { priority: 2, queuedAt: T + 2, quotaLeftShare: 0.5 }),
      req("free-early", { priority: 2, queuedAt: T + 1, quotaLeftShare: 0.5 }),
      req("free-short", { priority: 2, queuedAt: T + 3, durationMs: 30_000, quotaLeftShare: 0.5 }),
      req("free-rich", { priority: 2, queuedAt: T + 4, quotaLeftShare: 1 }),
      req("free-poor", { priority: 2, queuedAt: T + 4, quotaLeftShare: 0.2 }),
      req("pro", { priority: 3, queuedAt: T + 5 }),
    );
    expect(b.order()).toEqual(["pro", "free-short", "free-rich", "free-early", "free-late", "free-poor", "anon"]);
    expect(b.order().map((id) => b.s.position(id))).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(b.run()).toEqual([]);
    b.release("x");
    expect(b.run(T + 10)).toEqual(["pro", "free-short"]);
  });

  it("ages on a fixed grid: one step waited ranks like a fresh request one class up", () => {
    const b = new Bench([gpu("n", 0)]);
    b.busy("x", "n", 0, [0, 1], T + 600_000);
    b.enqueue(req("old-anon", { priority: 1, queuedAt: T }));
    // A free request one step later has the same effective class; arrival decides.
    b.enqueue(req("free-next-step", { priority: 2, queuedAt: T + STEP }));
    // A pro request one step later outranks it, as does a free one in the same step (and ties
    // with it: the earlier arrival goes first).
    b.enqueue(req("pro-next-step", { priority: 3, queuedAt: T + STEP + 5 }));
    b.enqueue(req("free-same-step", { priority: 2, queuedAt: T + STEP - 1 }));
    // Two steps later, even pro ranks behind the old anonymous request.
    b.enqueue(req("pro-two-steps", { priority: 3, queuedAt: T + 2 * STEP }));
    expect(b.order()).toEqual(["free-same-step", "pro-next-step", "old-anon", "free-next-step", "pro-two-steps"]);
  });

  it("positions follow removals and reasons are null for unknown leases", () => {
    const b = new Bench([gpu("n", 0)]);
    b.enqueue(req("a", { queuedAt: T + 1 }), req("b", { queuedAt: T + 2 }), req("c", { queuedAt: T + 3 }));
    expect(["a", "b", "c"].map((id) => b.s.position(id))).toEqual([1, 2, 3]);
    expect(b.s.remove("b")).toBe(true);
    expect(b.s.remove("b")).toBe(false);
    expect(b.s.has("b")).toBe(false);
    expect(b.s.position("c")).toBe(2);
    expect(b.s.position("zz")).toBeNull();
    expect(b.s.reason("zz")).toBeNull();
    expect(b.s.place("zz", T)).toBeNull();
    expect(() => b.s.enqueue(req("a"))).toThrow(/already queued/);
    expect(b.s.size).toBe(2);
  });

  it("derives its options from the queue timeout", () => {
    // A promise's room per class is a fifth of the queue timeout: 12 s of the default minute.
    expect(schedulerOptionsFor(DEFAULT_POLICY)).toMatchObject({
      agingStepMs: 15_000,
      holdAfterMs: 15_000,
      promiseRoomMs: 12_000,
    });
    expect(schedulerOptionsFor({ queueTimeoutMs: 120_000 }, { holdAfterMs: 0 })).toMatchObject({
      agingStepMs: 30_000,
      holdAfterMs: 0,
      promiseRoomMs: 24_000,
    });
    expect(() => new PriorityScheduler({ agingStepMs: 0 })).toThrow(/agingStepMs/);
    // The classes judged on their soonest likely start are the anonymous tier's, wherever it sits.
    expect(schedulerOptionsFor(DEFAULT_POLICY)).toMatchObject({ soonestUpToClass: 1, promiseTopClass: 3 });
    const anonymous = { ...DEFAULT_POLICY.tiers["anonymous"]!, priority: 2 };
    const pro = { ...DEFAULT_POLICY.tiers["pro"]!, priority: 5 };
    const renumbered = { ...DEFAULT_POLICY, tiers: { ...DEFAULT_POLICY.tiers, anonymous, pro } };
    expect(schedulerOptionsFor(renumbered)).toMatchObject({ soonestUpToClass: 2, promiseTopClass: 5 });
  });
});

describe("PriorityScheduler backfill and holds", () => {
  it("backfills a large request past an xlarge head that does not fit", () => {
    const b = new Bench([gpu("n", 0), gpu("n", 1)]);
    b.busy("x0", "n", 0, [0], T + 30_000);
    b.busy("x1", "n", 1, [0], T + 40_000);
    b.enqueue(req("xl", { slots: 2, priority: 3 }), req("l", { priority: 1 }));
    expect(b.run()).toEqual(["l"]);
    expect(b.s.reason("xl")).toBe("node");
    expect(b.s.hold()).toBeNull();
  });

  it("holds the device that frees soonest for an aged head; only requests ending before then may use it", () => {
    const b = new Bench([gpu("n", 0), gpu("n", 1)], {}, 5_000);
    b.busy("a", "n", 0, [0], T + 30_000);
    b.busy("b", "n", 1, [0], T + 40_000);
    b.enqueue(req("xl", { slots: 2, priority: 3, queuedAt: T }));
    const now = T + 6_000; // the head has waited past holdAfterMs
    b.enqueue(req("long", { queuedAt: now, durationMs: 60_000 }), req("short", { queuedAt: now, durationMs: 20_000 }));
    // n#0 frees soonest (T+30s): held. "short" ends at T+26s < T+30s, so it may use n#0 or n#1;
    // "long" may only use n#1.
    expect(b.run(now)).toEqual(["short", "long"]);
    expect(b.pool.assignmentOf("long")?.index).toBe(1);
    expect(b.pool.assignmentOf("short")?.index).toBe(0);
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "n", index: 0, shadowAt: T + 30_000 });
    // Another long one cannot take a held slot: it waits, and that is not idle-while-waiting.
    b.enqueue(req("long2", { queuedAt: now + 1, durationMs: 60_000 }));
    expect(b.run(now + 1)).toEqual([]);
    expect(
      usableIdleSlots(
        b.pool,
        [...b.s.waiting()].map((w) => w.request),
        b.c,
        b.s.hold(),
        now + 1,
      ),
    ).toBe(0);
    b.release("a");
    b.release("short");
    expect(b.run(now + 20_000)).toEqual(["xl"]);
    // Now "long2" heads the queue, aged, with every slot busy: the slot that frees first is its.
    expect(b.s.hold()).toEqual({ leaseId: "long2", node: "n", index: 1, shadowAt: T + 40_000 });
  });

  it("holds no device for a head that gives up before the device could clear, and holds it again once it could", () => {
    // The GPU's other slot is busy until T+30s; the whole-GPU head gives up (times out) at T+20s.
    // Holding the free slot for it would keep it idle for a call that will most likely fail anyway.
    const b = new Bench([gpu("n", 0)], {}, 5_000);
    b.busy("a", "n", 0, [0], T + 30_000);
    b.enqueue(req("xl", { slots: 2, priority: 3, queuedAt: T, giveUpAt: T + 20_000 }));
    const now = T + 6_000; // aged: it would have had the device held before
    b.enqueue(req("long", { queuedAt: now, durationMs: 60_000 }));
    expect(b.run(now)).toEqual(["long"]);
    expect(b.s.hold()).toBeNull();
    expect(b.s.reason("xl")).toBe("node");
    // One that waits until after the device clears keeps it held: the long call waits.
    const c = new Bench([gpu("n", 0)], {}, 5_000);
    c.busy("a", "n", 0, [0], T + 30_000);
    c.enqueue(req("xl", { slots: 2, priority: 3, queuedAt: T, giveUpAt: T + 30_000 }));
    c.enqueue(req("long", { queuedAt: now, durationMs: 60_000 }));
    expect(c.run(now)).toEqual([]);
    expect(c.s.hold()).toEqual({ leaseId: "xl", node: "n", index: 0, shadowAt: T + 30_000 });
    // When the lease ends early the head could start in time again: it is held for and granted.
    b.release("long");
    b.release("a");
    expect(b.run(now + 1_000)).toEqual(["xl"]);
  });

  it("does not hold for a head that has not waited long enough", () => {
    const b = new Bench([gpu("n", 0)], {}, 5_000);
    b.busy("a", "n", 0, [0], T + 30_000);
    b.enqueue(req("xl", { slots: 2, priority: 3 }), req("long", { queuedAt: T + 1, durationMs: 60_000 }));
    expect(b.run(T + 1_000)).toEqual(["long"]);
  });

  it("places large requests best-fit, keeping whole GPUs whole", () => {
    const b = new Bench([gpu("n", 0), gpu("n", 1)]);
    b.busy("a", "n", 1, [0], T + 30_000);
    b.enqueue(req("l"));
    expect(b.run()).toEqual(["l"]);
    expect(b.pool.assignmentOf("l")).toMatchObject({ index: 1, slots: [1] });
  });
});

describe("PriorityScheduler concurrency", () => {
  it("keeps an app at its limit waiting with reason concurrency, without blocking other apps", () => {
    const b = new Bench([gpu("n", 0), gpu("n", 1)], { limited: 1 });
    b.enqueue(
      req("l1", { appId: "limited", priority: 3, queuedAt: T + 1 }),
      req("l2", { appId: "limited", priority: 3, queuedAt: T + 2 }),
      req("l3", { appId: "limited", priority: 3, queuedAt: T + 3 }),
      req("o1", { appId: "other", queuedAt: T + 4 }),
      req("u1", { appId: null, queuedAt: T + 5 }),
    );
    expect(b.run()).toEqual(["l1", "o1", "u1"]);
    expect(b.s.reason("l2")).toBe("concurrency");
    expect(b.s.place("l2", T)?.reason).toBe("concurrency");
    expect([...b.s.waiting()].map((w) => [w.request.leaseId, w.position, w.reason])).toEqual([
      ["l2", 1, "concurrency"],
      ["l3", 2, "concurrency"],
    ]);
    b.release("l1");
    expect(b.s.reason("l2")).toBe("node");
    expect(b.run(T + 10)).toEqual(["l2"]);
    expect(b.s.reason("l3")).toBe("concurrency");
  });

  it("a limit of 0 keeps that app waiting while others proceed; raising it lets it go", () => {
    const limits: Record<string, number | null> = { off: 0 };
    const b = new Bench([gpu("n", 0)], limits);
    b.enqueue(req("a", { appId: "off", priority: 3 }), req("b", { appId: "on", slots: 2, queuedAt: T + 1 }));
    expect(b.run()).toEqual(["b"]);
    expect(b.s.reason("a")).toBe("concurrency");
    b.release("b");
    limits["off"] = 1;
    b.s.appLimitChanged("off");
    expect(b.run(T + 5)).toEqual(["a"]);
  });

  it("notices a freed app slot even without onReleased (checked at dispatch)", () => {
    const b = new Bench([gpu("n", 0)], { app: 1 });
    b.enqueue(req("a1", { appId: "app" }), req("a2", { appId: "app", queuedAt: T + 1 }));
    expect(b.run()).toEqual(["a1"]);
    b.pool.release("a1");
    b.c.dec("app");
    expect(b.run(T + 5)).toEqual(["a2"]);
  });
});

describe("PriorityScheduler ETA and the engine's reports", () => {
  it("estimates from the slots' deadlines and the work ahead", () => {
    const b = new Bench([gpu("n", 0)]);
    b.busy("a", "n", 0, [0], T + 10_000);
    b.busy("b", "n", 0, [1], T + 20_000);
    b.enqueue(req("q1", { durationMs: 30_000, queuedAt: T + 1 }), req("q2", { durationMs: 30_000, queuedAt: T + 2 }));
    expect(b.run()).toEqual([]);
    // residual 10 s + 20 s over 2 slots: 15 s; then 30 s of work ahead for q2: 30 s.
    expect(b.s.place("q1", T)).toEqual({ position: 1, reason: "node", etaMs: 15_000, expectedMs: 10_000 });
    expect(b.s.place("q2", T)).toEqual({ position: 2, reason: "node", etaMs: 30_000, expectedMs: 20_000 });
    // A newcomer is told its bound (45 s) as a promise, with room for calls of higher classes to
    // go ahead of it later: 12 s per class below the top (class 1 of 3 here).
    expect(waitPlace(b, req("new", { durationMs: 30_000, queuedAt: T + 3 }), T)).toEqual({
      position: 3,
      reason: "node",
      etaMs: 45_000 + 2 * 12_000,
      expectedMs: 40_000,
      // Nothing learnt: every call holds its reservation, so its soonest likely start is the expected one.
      soonestMs: 40_000,
    });
    // An xlarge request waits for a whole device at least.
    b.enqueue(req("xl", { slots: 2, priority: 5, durationMs: 15_000 }));
    expect(b.s.place("xl", T)).toEqual({ position: 1, reason: "node", etaMs: 20_000, expectedMs: 20_000 });
  });

  it("expects a queued call ahead to leave at its give-up time, as the engine times it out", () => {
    const b = new Bench([gpu("n", 0)]);
    b.busy("a", "n", 0, [0], T + 10_000);
    b.busy("b", "n", 0, [1], T + 20_000);
    // q1 times out at +5 s, before any slot frees; q2 waits as long as it takes.
    b.enqueue(req("q1", { durationMs: 30_000, giveUpAt: T + 5_000 }), req("q2", { durationMs: 30_000 }));
    expect(b.run()).toEqual([]);
    // The newcomer starts when the second slot frees (+20 s), not after q1's 30 s there (+40 s).
    expect(waitPlace(b, req("new", { durationMs: 30_000, queuedAt: T + 1 }), T)).toMatchObject({
      position: 3,
      expectedMs: 20_000,
    });
    // A queued call's own give-up time does not hide its start: q2 at +10 s, q1 never (its bound).
    expect(b.s.place("q2", T)).toMatchObject({ expectedMs: 10_000 });
    expect(b.s.place("q1", T)).toMatchObject({ expectedMs: 15_000, etaMs: 15_000 });
  });

  it("tells a trial of the lowest class how soon it may well start, from a low quantile of what calls hold", () => {
    const s = new PriorityScheduler({ agingStepMs: STEP, holdAfterMs: 5_000 });
    const b = new Bench([gpu("n", 0)]);
    Object.assign(b, { s });
    // Calls of app m held 20 %, 40 %, 60 % and 80 % of their reservations: median 40 %, lower quartile 20 %.
    for (const share of [0.2, 0.4, 0.6, 0.8]) s.held.learn("m", share * 100_000, 100_000);
    b.busy("a", "n", 0, [0, 1], T + 100_000, "m");
    const anon = waitPlace(b, req("anon", { appId: "m", priority: 1 }), T);
    expect(anon).toMatchObject({ expectedMs: 40_000, soonestMs: 20_000 });
    // A paying tier is refused on its expected wait alone: no soonest start is worked out for it.
    expect(waitPlace(b, req("pro", { appId: "m", priority: 3 }), T).soonestMs).toBeUndefined();
  });

  it("rebuilds its view when the pool changed behind its back", () => {
    const b = new Bench([gpu("n", 0)]);
    b.pool.assign("ghost", 2); // never reported
    b.enqueue(req("q"));
    expect(b.run()).toEqual([]);
    expect(b.s.place("q", T)?.etaMs).toBeNull();
    b.pool.release("ghost"); // never reported either
    expect(b.run(T + 1)).toEqual(["q"]);
  });

  it("counts leases reported by onGranted and forgets them at onReleased", () => {
    const b = new Bench([gpu("n", 0)]);
    b.busy("r", "n", 0, [0, 1], T + 50_000);
    b.enqueue(req("q"));
    expect(b.s.place("q", T)?.etaMs).toBeNull(); // nothing known before the first dispatch
    expect(b.run()).toEqual([]);
    expect(b.s.place("q", T)?.etaMs).toBe(50_000);
    b.release("r");
    b.s.onReleased("r");
    expect(b.run(T + 1)).toEqual(["q"]);
  });

  it("an empty queue dispatches nothing", () => {
    expect(new PriorityScheduler().dispatch(new Pool([gpu("n", 0)]), new Counter(), () => undefined, T)).toEqual([]);
  });
});

/** Where a request arriving at `now` would wait (the scheduler's trial, which must say it waits). */
function waitPlace(b: Bench, request: PriorityRequest, now: number): QueuePlace {
  const trial = b.s.trial(request, b.pool, b.c, now);
  if (trial.kind !== "wait") throw new Error(`expected ${request.leaseId} to wait, the trial places it now`);
  return trial.place;
}
