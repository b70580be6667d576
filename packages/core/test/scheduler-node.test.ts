import { describe, expect, it } from "vitest";
import { Pool, PriorityScheduler, usableIdleSlots } from "../src/index.js";
import type { Hold, PriorityRequest, QueuePlace } from "../src/index.js";
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
    expect(b.s.place("ghost", now)).toEqual({ position: 1, reason: "node", etaMs: null, expectedMs: null });
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
    b.enqueue(
      req("n2-pair", { node: "n2", slots: 2, queuedAt: now, durationMs: 5_000 }),
      req("long", { slots: 2, queuedAt: now, durationMs: 60_000 }),
    );
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
    b.enqueue(
      req("other", { node: "n2", priority: 3, durationMs: 30_000 }),
      req("u", { priority: 2, durationMs: 30_000 }),
      req("q", { node: "n1", durationMs: 30_000 }),
    );
    expect(b.run()).toEqual([]);
    return b;
  }

  it("counts only its node's slots and leases, and leaves other nodes' requests out of the work ahead", () => {
    const b = twoNodes();
    // n1: 10 s + 20 s left on 2 slots, plus "u" ahead (30 s; "other" is bound to n2): 30 s.
    expect(b.s.place("q", T)).toEqual({ position: 3, reason: "node", etaMs: 30_000, expectedMs: 20_000 });
    // n2: 100 s + 120 s on 2 slots, nothing ahead.
    expect(b.s.place("other", T)).toEqual({ position: 1, reason: "node", etaMs: 110_000, expectedMs: 100_000 });
    // Unbound: the whole pool, and "other" ahead of it counts (it may keep slots "u" could use busy).
    expect(b.s.place("u", T)).toEqual({
      position: 2,
      reason: "node",
      etaMs: (250_000 + 30_000) / 4,
      expectedMs: 10_000,
    });
    expect(waitPlace(b, req("p", { node: "n1", queuedAt: T + 1, durationMs: 30_000 }), T)).toEqual({
      position: 4,
      reason: "node",
      etaMs: 45_000,
      expectedMs: 40_000,
      soonestMs: 40_000, // nothing learnt: the expected start
    });
    // A bound xlarge waits for one of its own node's devices to clear.
    b.enqueue(req("xl", { node: "n2", slots: 2, priority: 5, durationMs: 15_000 }));
    expect(b.s.place("xl", T)?.etaMs).toBe(120_000);
    // ...and, bound to n2, it is not in n1's way.
    expect(b.s.place("q", T)).toEqual({ position: 4, reason: "node", etaMs: 30_000, expectedMs: 20_000 });
    b.s.remove("other");
    expect(b.s.place("q", T)).toEqual({ position: 3, reason: "node", etaMs: 30_000, expectedMs: 20_000 });
    expect(b.s.place("u", T)?.etaMs).toBe((250_000 + 30_000) / 4);
  });

  it("is null for a node with no devices", () => {
    const b = twoNodes();
    b.enqueue(req("g", { node: "n9" }));
    expect(b.s.place("g", T)).toEqual({ position: 4, reason: "node", etaMs: null, expectedMs: null });
    expect(waitPlace(b, req("p", { node: "n9", queuedAt: T + 1 }), T)).toEqual({
      position: 5,
      reason: "node",
      etaMs: null,
      expectedMs: null,
    });
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
    expect(s.dispatch(new Pool([gpu("n2", 0)]), c, () => undefined, T + 1).map((g) => g.assignment.node)).toEqual([
      "n2",
    ]);
  });

  it.each([
    ["reported", true],
    ["not reported", false],
  ])(
    "losing a node mid-flight (evictions %s): its app's slot is freed, its requests wait, and it can come back",
    (_, report) => {
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
      expect(b.s.place("c", T + 3)).toEqual({ position: 1, reason: "node", etaMs: null, expectedMs: null });
      b.pool.addDevice(gpu("n1", 0));
      expect(b.run(T + 4)).toEqual(["c"]);
      expect(b.pool.assignmentOf("c")).toMatchObject({ node: "n1", slots: [0, 1] });
    },
  );

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
    expect(b.s.place("r", T + 7_000)).toEqual({ position: 1, reason: "node", etaMs: null, expectedMs: null });
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
    usableIdleSlots(
      pool,
      calls.map((c) => ({ appId: null, slots: 1, durationMs: 1_000, ...c })),
      new Counter(),
      hold,
      T,
    );

  it("counts a free slot only for calls that may go on its device", () => {
    expect(idle([{ node: "n2" }])).toBe(2);
    expect(idle([{ node: "n1" }])).toBe(1);
    expect(idle([{ node: "n1", slots: 2 }])).toBe(0);
    expect(idle([{ node: "n9" }])).toBe(0);
    expect(idle([{ node: null }])).toBe(3);
    expect(
      idle([
        { node: "n1", slots: 2 },
        { node: "n2", slots: 2 },
      ]),
    ).toBe(2);
  });

  it("on a held device, only for short calls that may go there", () => {
    const hold: Hold = { leaseId: "h", node: "n2", index: 0, shadowAt: T + 500 };
    expect(idle([{ node: "n2" }], hold)).toBe(0);
    expect(idle([{ node: "n2", durationMs: 100 }], hold)).toBe(2);
    expect(idle([{ node: "n1", durationMs: 100 }], hold)).toBe(1);
    expect(idle([{ durationMs: 100 }], hold)).toBe(3);
  });
});

/** A GPU of a host's agent: only for calls bound to its node. */
const dedicated = (node: string, index: number, slots = 2) => ({ ...gpu(node, index, slots), dedicated: true });

describe("dedicated devices", () => {
  it("an unbound request never goes on a dedicated device, even when it is the only free one", () => {
    const b = new Bench([gpu("n1", 0), dedicated("agent", 0)]);
    b.busy("x", "n1", 0, [0, 1], T + 30_000);
    b.enqueue(req("u", { priority: 3 }), req("u2", { slots: 2, priority: 3 }));
    expect(b.run()).toEqual([]);
    expect(b.pool.snapshot().find((d) => d.spec.node === "agent")?.holders).toEqual([null, null]);
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), T)).toBe(0);
    // A request bound to the agent's node takes the slots the unbound ones may not.
    b.enqueue(req("a", { node: "agent", queuedAt: T + 1 }));
    expect(b.run(T + 1)).toEqual(["a"]);
    expect(b.pool.assignmentOf("a")).toMatchObject({ node: "agent", index: 0 });
    b.release("x");
    expect(b.run(T + 2)).toEqual(["u"]);
    expect(b.pool.assignmentOf("u")).toMatchObject({ node: "n1", index: 0 });
    // n1#0 and agent#0 have a slot free each now: "u2" waits for one device of its own.
    expect(b.s.reason("u2")).toBe("node");
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), T + 2)).toBe(0);
  });

  it("a bound request uses its node's dedicated and non-dedicated devices, best fit across both", () => {
    const b = new Bench([gpu("n", 0), dedicated("n", 1), gpu("m", 0)]);
    b.busy("x", "n", 1, [0], T + 30_000);
    b.enqueue(
      req("a", { node: "n", queuedAt: T + 1 }),
      req("b", { node: "n", slots: 2, queuedAt: T + 2 }),
      req("c", { node: "n", queuedAt: T + 3 }),
    );
    expect(b.run(T + 3)).toEqual(["a", "b"]);
    expect(b.pool.assignmentOf("a")).toMatchObject({ node: "n", index: 1, slots: [1] }); // the fuller device, dedicated
    expect(b.pool.assignmentOf("b")).toMatchObject({ node: "n", index: 0, slots: [0, 1] }); // the shared one
    expect(b.s.reason("c")).toBe("node"); // m#0 is free, but not its node's
    b.release("x");
    expect(b.run(T + 4)).toEqual(["c"]);
    expect(b.pool.assignmentOf("c")).toMatchObject({ node: "n", index: 1, slots: [0] });
  });

  it("in a pool of dedicated devices only, unbound requests wait with no ETA and block nobody, not even of a hold", () => {
    const b = new Bench([dedicated("a1", 0), dedicated("a2", 0)], {}, 0);
    b.busy("x", "a1", 0, [0], T + 30_000);
    b.enqueue(
      req("u", { priority: 3 }),
      req("xl", { slots: 2, priority: 3 }),
      req("b", { node: "a1", slots: 2, queuedAt: T + 1 }),
      req("c", { node: "a1" }),
    );
    expect(b.run(T + 1)).toEqual(["c"]);
    // "b" is the head a hold is made for: the unbound ones ahead of it could never be placed.
    expect(b.s.hold()).toEqual({ leaseId: "b", node: "a1", index: 0, shadowAt: T + 1 + 60_000 });
    expect(b.s.place("u", T + 1)).toEqual({ position: 1, reason: "node", etaMs: null, expectedMs: null });
    expect(b.s.place("xl", T + 1)?.etaMs).toBeNull();
    expect(waitPlace(b, req("p"), T + 1).etaMs).toBeNull();
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), T + 1)).toBe(0);
    // A shared device joins: the unbound requests go there, and only there; an aged unbound head
    // is held the shared device.
    b.pool.addDevice(gpu("s", 0));
    expect(b.run(T + 2)).toEqual(["u"]);
    expect(b.pool.assignmentOf("u")).toMatchObject({ node: "s" });
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "s", index: 0, shadowAt: T + 2 + 60_000 });
  });

  it("the ETA of an unbound request counts only the shared devices' slots and leases", () => {
    const b = new Bench([gpu("n1", 0), dedicated("agent", 0), dedicated("agent", 1)]);
    b.busy("a", "n1", 0, [0], T + 10_000);
    b.busy("b", "n1", 0, [1], T + 20_000);
    b.busy("c", "agent", 0, [0, 1], T + 5_000);
    b.busy("d", "agent", 1, [0, 1], T + 200_000);
    b.enqueue(req("u", { durationMs: 30_000 }), req("q", { node: "agent", priority: 0, durationMs: 30_000 }));
    expect(b.run()).toEqual([]);
    // 10 s + 20 s left on n1's 2 slots; agent's 4 slots and their leases are not for "u".
    expect(b.s.place("u", T)).toEqual({ position: 1, reason: "node", etaMs: 15_000, expectedMs: 10_000 });
    // A bound request still sees its node's slots, dedicated ones included, and the unbound work ahead.
    expect(b.s.place("q", T)).toEqual({
      position: 2,
      reason: "node",
      etaMs: (10_000 + 400_000 + 30_000) / 4,
      expectedMs: 5_000,
    });
    // An xlarge waits for n1#0 to clear, though agent#0 clears sooner.
    b.enqueue(req("xl", { slots: 2, priority: 5, durationMs: 1_000 }));
    expect(b.s.place("xl", T)).toEqual({ position: 1, reason: "node", etaMs: 20_000, expectedMs: 20_000 });
    b.s.remove("xl");
    // A lease of unknown deadline on a dedicated device does not make the unbound ETA unknown.
    b.pool.addDevice(dedicated("agent", 2, 1));
    b.pool.occupy("ghost", "agent", 2, [0]);
    expect(b.run(T)).toEqual([]);
    expect(b.s.place("u", T)?.etaMs).toBe(15_000);
    expect(b.s.place("q", T)?.etaMs).toBeNull();
  });

  it("an aged unbound head is held a shared device, though a dedicated one would clear sooner", () => {
    const b = new Bench([gpu("n1", 0), dedicated("agent", 0)], {}, 5_000);
    b.busy("a", "n1", 0, [0], T + 30_000);
    b.busy("b", "agent", 0, [0], T + 10_000);
    b.enqueue(req("xl", { slots: 2 }));
    expect(b.run(T + 6_000)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "xl", node: "n1", index: 0, shadowAt: T + 30_000 });
  });

  it("the held dedicated device of a bound head is backfilled only by short requests bound to its node", () => {
    const b = new Bench([dedicated("agent", 0, 4), gpu("n1", 0)], {}, 5_000);
    b.busy("a", "agent", 0, [0, 1], T + 30_000);
    b.busy("x", "n1", 0, [0, 1], T + 100_000);
    b.enqueue(req("big", { node: "agent", slots: 3, priority: 3 }));
    const now = T + 6_000;
    b.enqueue(req("short", { durationMs: 5_000, queuedAt: now }));
    expect(b.run(now)).toEqual([]);
    expect(b.s.hold()).toEqual({ leaseId: "big", node: "agent", index: 0, shadowAt: T + 30_000 });
    expect(usableIdleSlots(b.pool, waitingOf(b), b.c, b.s.hold(), now)).toBe(0);
    b.enqueue(req("mine", { node: "agent", durationMs: 5_000, queuedAt: now + 1 }));
    expect(b.run(now + 1)).toEqual(["mine"]);
    expect(b.pool.assignmentOf("mine")).toMatchObject({ node: "agent", slots: [2] });
  });

  it("a hold on a dedicated device does not hide a shared device with as many free slots from unbound requests", () => {
    const b = new Bench([dedicated("agent", 0), gpu("n1", 0)], {}, 5_000);
    b.busy("a", "agent", 0, [0], T + 30_000);
    b.busy("x", "n1", 0, [0], T + 100_000);
    b.enqueue(req("big", { node: "agent", slots: 2, priority: 3 }));
    const now = T + 6_000;
    b.enqueue(req("long", { durationMs: 60_000, queuedAt: now }));
    // agent#0 and n1#0 both have one slot free; agent#0 is held, and not for "long" anyway.
    expect(b.run(now)).toEqual(["long"]);
    expect(b.pool.assignmentOf("long")).toMatchObject({ node: "n1", slots: [1] });
    expect(b.s.hold()).toMatchObject({ leaseId: "big", node: "agent", index: 0 });
  });

  it("notices a shared node swapped for a dedicated one of the same size", () => {
    const b = new Bench([gpu("n1", 0), gpu("n2", 0)]);
    b.busy("x", "n1", 0, [0, 1], T + 60_000);
    b.enqueue(req("u"));
    expect(b.run()).toEqual(["u"]);
    b.release("u");
    b.removeNode("n2");
    b.pool.addDevice(dedicated("n2", 0));
    b.enqueue(req("v", { queuedAt: T + 1 }), req("w", { node: "n2", queuedAt: T + 2 }));
    expect(b.run(T + 2)).toEqual(["w"]);
    expect(b.s.place("v", T + 2)?.etaMs).toBe(60_000 - 2 + 0);
  });
});

describe("usableIdleSlots with dedicated devices", () => {
  const pool = new Pool([gpu("n1", 0), dedicated("agent", 0)]);
  pool.occupy("x", "n1", 0, [0]);
  const idle = (calls: { slots?: number; durationMs?: number; node?: string | null }[], hold: Hold | null = null) =>
    usableIdleSlots(
      pool,
      calls.map((c) => ({ appId: null, slots: 1, durationMs: 1_000, ...c })),
      new Counter(),
      hold,
      T,
    );

  it("counts a dedicated device's free slots only for calls bound to its node", () => {
    expect(idle([{ node: null }])).toBe(1);
    expect(idle([{ node: null, slots: 2 }])).toBe(0);
    expect(idle([{ node: "agent", slots: 2 }])).toBe(2);
    expect(idle([{ node: "n1" }])).toBe(1);
    const hold: Hold = { leaseId: "h", node: "agent", index: 0, shadowAt: T + 500 };
    expect(idle([{ node: null, durationMs: 100 }], hold)).toBe(1);
    expect(idle([{ node: "agent", durationMs: 100 }], hold)).toBe(2);
  });
});

/** Where a request arriving at `now` would wait (the scheduler's trial, which must say it waits). */
function waitPlace(b: Bench, request: PriorityRequest, now: number): QueuePlace {
  const trial = b.s.trial(request, b.pool, b.c, now);
  if (trial.kind !== "wait") throw new Error(`expected ${request.leaseId} to wait, the trial places it now`);
  return trial.place;
}
