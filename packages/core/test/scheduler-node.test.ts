import { describe, expect, it } from "vitest";
import { Pool, PriorityScheduler, usableIdleSlots } from "../src/index.js";
import type { Hold } from "../src/index.js";
import { Bench, Counter, T, gpu, req } from "./scheduler-harness.js";

/** Requests bound to a node (asked for through the node's agent): placement, holds, ETAs, pool changes. */

const waitingOf = (b: Bench) => [...b.s.waiting()].map((w) => w.request);

describe("node-bound placement", () => {
  it("goes only on its node's devices, best fit there, even when another node has room", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0), gpu("n2", 1)]);
    b.busy("x", "n2", 1, [0], T + 30_000);
    b.enqueue(req("a", { node: "n1", queuedAt: T + 1 }), req("u", { queuedAt: T + 2 }));
    expect(b.run()).toEqual(["a", "u"]);
    expect(b.pool.assignmentOf("a")).toMatchObject({ node: "n1", index: 0, slots: [0] });
    expect(b.pool.assignmentOf("u")).toMatchObject({ node: "n2", index: 1, slots: [1] });
    b.enqueue(req("b", { node: "n1", queuedAt: T + 3 }));
    expect(b.run()).toEqual(["b"]);
    expect(b.pool.assignmentOf("b")).toMatchObject({ node: "n1", index: 0, slots: [1] });
    // n2#0 is wholly free, but "c" may not go there.
    b.enqueue(req("c", { node: "n1", queuedAt: T + 4 }));
    expect(b.run()).toEqual([]);
    expect(b.s.reason("c")).toBe("node");
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), T)).toBe(0);
  });

  it("fills its node's half-busy GPU first, keeping the node's whole GPU whole", () => {
    const b = new Bench([gpu("n1", 0), gpu("n1", 1), gpu("n2", 0)]);
    b.busy("y", "n1", 1, [0], T + 30_000);
    b.busy("z", "n2", 0, [0], T + 30_000);
    b.enqueue(req("a", { node: "n1" }));
    expect(b.run()).toEqual(["a"]);
    expect(b.pool.assignmentOf("a")).toMatchObject({ node: "n1", index: 1, slots: [1] });
  });

  it("a request bound to a node with no devices waits and blocks nobody, not even of a hold", () => {
    const b = new Bench([gpu("n", 0), gpu("n", 1)], {}, 5_000);
    b.busy("a", "n", 0, [0], T + 30_000);
    b.busy("b", "n", 1, [0], T + 40_000);
    b.enqueue(req("ghost", { node: "n9", priority: 3 }), req("xl", { slots: 2, priority: 2 }));
    const now = T + 6_000; // both have waited past holdAfterMs
    b.enqueue(req("l", { queuedAt: now, durationMs: 60_000 }));
    // The best-ranked request no device can take is passed over: the hold goes to "xl", and "l"
    // (which would end after the shadow time) keeps off the held device.
    expect(b.run(now)).toEqual(["l"]);
    expect(b.pool.assignmentOf("l")).toMatchObject({ node: "n", index: 1 });
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "n", index: 0, shadowAt: T + 30_000 });
    expect(b.s.place("ghost", now)).toEqual({ position: 1, reason: "node", etaMs: null });
  });

  it("does not make one node's requests wait behind another's; an aged bound head is held a device of its own node", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)], {}, 5_000);
    b.busy("a", "n1", 0, [0, 1], T + 30_000);
    b.busy("b", "n2", 0, [0], T + 20_000);
    b.enqueue(req("h", { node: "n1", priority: 3 }));
    const now = T + 6_000;
    b.enqueue(
      req("n2-long", { node: "n2", queuedAt: now, durationMs: 60_000 }),
      req("n2-short", { node: "n2", queuedAt: now, durationMs: 5_000 }),
      req("long", { queuedAt: now, durationMs: 60_000 }),
    );
    expect(b.run(now)).toEqual(["n2-short"]);
    expect(b.pool.assignmentOf("n2-short")).toMatchObject({ node: "n2", slots: [1] });
    // n2#0 would have room for "h" sooner, but "h" may only run on n1.
    expect(b.s.hold()).toEqual({ leaseId: "h", node: "n1", index: 0, shadowAt: T + 30_000 });
    b.release("b");
    expect(b.run(now + 1)).toEqual(["n2-long"]);
    b.release("a");
    expect(b.run(now + 2)).toEqual(["h", "long"]);
    expect(b.pool.assignmentOf("h")).toMatchObject({ node: "n1" });
  });

  it("backfills the held device of a bound head only with short requests that may run there", () => {
    const b = new Bench([gpu("n1", 0, 4), gpu("n2", 0)], {}, 5_000);
    b.busy("a", "n1", 0, [0, 1], T + 30_000);
    b.busy("b", "n2", 0, [0], T + 100_000);
    b.enqueue(req("big", { node: "n1", slots: 3, priority: 3 }));
    const now = T + 6_000;
    // Short enough for the shadow time, but bound to n2 (which has a slot free, not two): the
    // held slots on n1 are not for it. "long" could use them, but would delay "big".
    b.enqueue(req("n2-pair", { node: "n2", slots: 2, queuedAt: now, durationMs: 5_000 }), req("long", { slots: 2, queuedAt: now, durationMs: 60_000 }));
    expect(b.run(now)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "big", node: "n1", index: 0, shadowAt: T + 30_000 });
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), now)).toBe(0);
    b.enqueue(req("short", { slots: 2, queuedAt: now + 1, durationMs: 10_000 }));
    expect(b.run(now + 1)).toEqual(["short"]);
    expect(b.pool.assignmentOf("short")).toMatchObject({ node: "n1", index: 0, slots: [2, 3] });
  });
});

describe("node-bound ETA", () => {
  function twoNodes(): Bench {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)]);
    b.busy("a", "n1", 0, [0], T + 10_000);
    b.busy("b", "n1", 0, [1], T + 20_000);
    b.busy("c", "n2", 0, [0], T + 100_000);
    b.busy("d", "n2", 0, [1], T + 120_000);
    b.enqueue(req("other", { node: "n2", priority: 3, durationMs: 30_000 }), req("u", { priority: 2, durationMs: 30_000 }), req("q", { node: "n1", durationMs: 30_000 }));
    expect(b.run()).toEqual([]);
    return b;
  }

  it("counts only its node's slots and leases, and leaves other nodes' requests out of the work ahead", () => {
    const b = twoNodes();
    // n1: 10 s + 20 s left on 2 slots, plus "u" ahead (30 s; "other" is bound to n2): 30 s.
    expect(b.s.place("q", T)).toEqual({ position: 3, reason: "node", etaMs: 30_000 });
    // n2: 100 s + 120 s on 2 slots, nothing ahead.
    expect(b.s.place("other", T)).toEqual({ position: 1, reason: "node", etaMs: 110_000 });
    // Unbound: the whole pool, and "other" ahead of it counts (it may keep slots "u" could use busy).
    expect(b.s.place("u", T)).toEqual({ position: 2, reason: "node", etaMs: (250_000 + 30_000) / 4 });
    expect(b.s.preview(req("p", { node: "n1", queuedAt: T + 1, durationMs: 30_000 }), T)).toEqual({ position: 4, reason: "node", etaMs: 45_000 });
    // A bound xlarge waits for one of its own node's devices to clear.
    b.enqueue(req("xl", { node: "n2", slots: 2, priority: 5, durationMs: 15_000 }));
    expect(b.s.place("xl", T)?.etaMs).toBe(120_000);
    // ...and, bound to n2, it is not in n1's way.
    expect(b.s.place("q", T)).toEqual({ position: 4, reason: "node", etaMs: 30_000 });
    b.s.remove("other");
    expect(b.s.place("q", T)).toEqual({ position: 3, reason: "node", etaMs: 30_000 });
    expect(b.s.place("u", T)?.etaMs).toBe((250_000 + 30_000) / 4);
  });

  it("is null for a node with no devices", () => {
    const b = twoNodes();
    b.enqueue(req("g", { node: "n9" }));
    expect(b.s.place("g", T)).toEqual({ position: 4, reason: "node", etaMs: null });
    expect(b.s.preview(req("p", { node: "n9", queuedAt: T + 1 }), T)).toEqual({ position: 5, reason: "node", etaMs: null });
  });

  it("stays known for a node when a lease of unknown deadline is on another", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)]);
    b.busy("a", "n1", 0, [0, 1], T + 10_000);
    b.pool.assign("ghost", 2, "n2"); // never reported: no deadline known
    b.enqueue(req("q", { node: "n1" }), req("u", { queuedAt: T + 1 }));
    expect(b.run()).toEqual([]);
    expect(b.s.place("q", T)?.etaMs).toBe(10_000);
    expect(b.s.place("u", T)?.etaMs).toBeNull();
  });
});

describe("devices added and nodes removed between dispatches", () => {
  it("a request bound to a node that joins later is granted at the next dispatch, on devices larger than any before", () => {
    const b = new Bench([gpu("n1", 0)]);
    b.enqueue(req("q", { node: "n2", queuedAt: T + 1 }), req("w", { node: "n2", slots: 3, queuedAt: T + 2 }));
    expect(b.run()).toEqual([]);
    expect(b.s.place("w", T)?.etaMs).toBeNull();
    b.pool.addDevice(gpu("n2", 0, 4));
    expect(b.run(T + 1)).toEqual(["q", "w"]);
    expect(b.pool.assignmentOf("w")).toMatchObject({ node: "n2", index: 0, slots: [1, 2, 3] });
  });

  it("notices a node swapped for another of the same size (every slot count unchanged)", () => {
    const b = new Bench([gpu("n1", 0)]);
    b.enqueue(req("q", { node: "n2" }));
    expect(b.run()).toEqual([]);
    b.removeNode("n1");
    b.pool.addDevice(gpu("n2", 0));
    expect(b.run(T + 1)).toEqual(["q"]);
    expect(b.pool.assignmentOf("q")).toMatchObject({ node: "n2" });
  });

  it("notices being handed another pool with the same counts", () => {
    const s = new PriorityScheduler();
    const c = new Counter();
    s.enqueue(req("q", { node: "n2" }));
    expect(s.dispatch(new Pool([gpu("n1", 0)]), c, () => undefined, T)).toEqual([]);
    expect(s.dispatch(new Pool([gpu("n2", 0)]), c, () => undefined, T + 1).map((g) => g.assignment.node)).toEqual(["n2"]);
  });

  it.each([
    ["reported", true],
    ["not reported", false],
  ])("losing a node mid-flight (evictions %s): its app's slot is freed, its requests wait, and it can come back", (_, report) => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)], { app: 1 });
    b.busy("x", "n2", 0, [0], T + 60_000);
    b.enqueue(req("a", { appId: "app", node: "n1" }));
    expect(b.run()).toEqual(["a"]);
    b.enqueue(req("a2", { appId: "app", queuedAt: T + 1 }), req("c", { node: "n1", slots: 2, queuedAt: T + 2 }));
    expect(b.run(T + 2)).toEqual([]);
    expect(b.s.reason("a2")).toBe("concurrency");
    expect(b.removeNode("n1", report)).toEqual(["a"]);
    expect(b.run(T + 3)).toEqual(["a2"]);
    expect(b.pool.assignmentOf("a2")).toMatchObject({ node: "n2", slots: [1] });
    expect(b.s.place("c", T + 3)).toEqual({ position: 1, reason: "node", etaMs: null });
    b.pool.addDevice(gpu("n1", 0));
    expect(b.run(T + 4)).toEqual(["c"]);
    expect(b.pool.assignmentOf("c")).toMatchObject({ node: "n1", slots: [0, 1] });
  });

  it("a request whose node left stops being the head a hold is made for", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0), gpu("n2", 1)], {}, 5_000);
    b.busy("x", "n1", 0, [0], T + 50_000);
    b.busy("a", "n2", 0, [0], T + 30_000);
    b.busy("b", "n2", 1, [0], T + 40_000);
    b.enqueue(req("r", { node: "n1", slots: 2, priority: 3 }), req("xl", { slots: 2, priority: 2 }));
    expect(b.run(T + 6_000)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "r", node: "n1", index: 0, shadowAt: T + 50_000 });
    b.removeNode("n1");
    expect(b.run(T + 7_000)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "n2", index: 0, shadowAt: T + 30_000 });
    expect(b.s.place("r", T + 7_000)).toEqual({ position: 1, reason: "node", etaMs: null });
  });

  it("moves a hold off a device whose node left", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)], {}, 5_000);
    b.busy("a", "n1", 0, [0], T + 30_000);
    b.busy("b", "n2", 0, [0], T + 40_000);
    b.enqueue(req("xl", { slots: 2 }));
    expect(b.run(T + 6_000)).toEqual([]);
    expect(b.s.hold()).toMatchObject({ leaseId: "xl", node: "n1" });
    b.removeNode("n1");
    expect(b.run(T + 7_000)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "n2", index: 0, shadowAt: T + 40_000 });
  });
});

describe("usableIdleSlots with node-bound calls", () => {
  const pool = new Pool([gpu("n1", 0), gpu("n2", 0)]);
  pool.occupy("x", "n1", 0, [0]);
  const idle = (calls: { slots?: number; durationMs?: number; node?: string | null }[], hold: Hold | null = null) =>
    usableIdleSlots(pool, calls.map((c) => ({ appId: null, slots: 1, durationMs: 1_000, ...c })), new Counter(), hold, T);

  it("counts a free slot only for calls that may go on its device", () => {
    expect(idle([{ node: "n2" }])).toBe(2);
    expect(idle([{ node: "n1" }])).toBe(1);
    expect(idle([{ node: "n1", slots: 2 }])).toBe(0);
    expect(idle([{ node: "n9" }])).toBe(0);
    expect(idle([{ node: null }])).toBe(3);
    expect(idle([{ node: "n1", slots: 2 }, { node: "n2", slots: 2 }])).toBe(2);
  });

  it("on a held device, only for short calls that may go there", () => {
    const hold: Hold = { leaseId: "h", node: "n2", index: 0, shadowAt: T + 500 };
    expect(idle([{ node: "n2" }], hold)).toBe(0);
    expect(idle([{ node: "n2", durationMs: 100 }], hold)).toBe(2);
    expect(idle([{ node: "n1", durationMs: 100 }], hold)).toBe(1);
    expect(idle([{ durationMs: 100 }], hold)).toBe(3);
  });
});
