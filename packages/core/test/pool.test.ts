import { describe, expect, it } from "vitest";
import { Pool } from "../src/index.js";
import type { DeviceSpec } from "../src/index.js";

function gpu(node: string, index: number, slots = 2): DeviceSpec {
  return { node, index, uuid: `GPU-${node}-${index}`, name: "NVIDIA L4", memoryMb: 24_576, slots };
}

function holders(pool: Pool): Record<string, (string | null)[]> {
  return Object.fromEntries(pool.snapshot().map((d) => [`${d.spec.node}#${d.spec.index}`, d.holders]));
}

describe("Pool basics", () => {
  it("counts slots", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1), gpu("n2", 0)]);
    expect(pool.totalSlots).toBe(6);
    expect(pool.busySlots).toBe(0);
    expect(pool.freeSlots).toBe(6);
    expect(pool.couldEverFit(2)).toBe(true);
    expect(pool.couldEverFit(3)).toBe(false);
    expect(pool.couldEverFit(0)).toBe(false);
  });

  it("refuses duplicate devices and devices without slots", () => {
    const pool = new Pool([gpu("n1", 0)]);
    expect(() => pool.addDevice(gpu("n1", 0))).toThrow(/already/);
    expect(() => pool.addDevice(gpu("n1", 1, 0))).toThrow(/at least one slot/);
    expect(() => pool.addDevice(gpu("n1", 2, 1.5))).toThrow(/at least one slot/);
  });

  it("an empty pool fits nothing", () => {
    const pool = new Pool();
    expect(pool.fits(1)).toBe(false);
    expect(pool.assign("a", 1)).toBeNull();
  });

  it("refuses to assign a lease twice", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1)]);
    pool.assign("a", 1);
    expect(() => pool.assign("a", 1)).toThrow(/already holds/);
  });
});

describe("best fit", () => {
  it("fills half-free GPUs first so whole GPUs stay free for xlarge", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1)]);
    const a = pool.assign("a", 1);
    const b = pool.assign("b", 1);
    expect(a).toMatchObject({ node: "n1", index: 0, slots: [0] });
    expect(b).toMatchObject({ node: "n1", index: 0, slots: [1] });
    const x = pool.assign("x", 2);
    expect(x).toMatchObject({ node: "n1", index: 1, uuid: "GPU-n1-1", slots: [0, 1] });
    expect(pool.busySlots).toBe(4);
    expect(pool.fits(1)).toBe(false);
  });

  it("after a release, the next large goes to the half-free GPU, not the whole one", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1), gpu("n1", 2)]);
    pool.assign("a", 1);
    pool.assign("b", 1); // n1#0 full
    pool.assign("c", 1); // n1#1 half
    expect(pool.release("a")).toBe(true); // n1#0 half
    pool.assign("d", 1);
    pool.assign("e", 1);
    expect(pool.assignmentOf("d")?.index === 2 || pool.assignmentOf("e")?.index === 2).toBe(false);
    expect(holders(pool)["n1#2"]).toEqual([null, null]);
    expect(pool.assign("x", 2)).toMatchObject({ index: 2 });
  });

  it("xlarge needs both slots of ONE GPU, even when two GPUs each have one free slot", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n2", 0)]);
    for (const id of ["a", "b", "c", "d"]) expect(pool.assign(id, 1)).not.toBeNull();
    pool.release("a");
    pool.release("c");
    expect(pool.freeSlots).toBe(2);
    expect(pool.fits(2)).toBe(false);
    expect(pool.assign("x", 2)).toBeNull();
    expect(pool.busySlots).toBe(2);
    expect(pool.assignmentOf("x")).toBeNull();
    // a large still fits
    expect(pool.fits(1)).toBe(true);
    pool.release("b");
    expect(pool.assign("x", 2)).toMatchObject({ node: "n1", slots: [0, 1] });
  });

  it("reuses the freed slot index of a half-busy GPU", () => {
    const pool = new Pool([gpu("n1", 0)]);
    pool.assign("a", 1);
    pool.assign("b", 1);
    pool.release("a");
    expect(pool.assign("c", 1)).toMatchObject({ slots: [0] });
    expect(holders(pool)["n1#0"]).toEqual(["c", "b"]);
  });
});

describe("release", () => {
  it("is idempotent", () => {
    const pool = new Pool([gpu("n1", 0)]);
    pool.assign("a", 2);
    expect(pool.release("a")).toBe(true);
    expect(pool.busySlots).toBe(0);
    expect(pool.release("a")).toBe(false);
    expect(pool.release("never")).toBe(false);
    expect(pool.busySlots).toBe(0);
    expect(pool.freeSlots).toBe(2);
    expect(holders(pool)["n1#0"]).toEqual([null, null]);
    expect(pool.assign("b", 2)).not.toBeNull();
  });
});

describe("removeNode", () => {
  it("returns the evicted leases and forgets the node's slots", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1), gpu("n2", 0)]);
    pool.assign("a", 1); // n1#0
    pool.assign("b", 1); // n1#0
    pool.assign("x", 2); // n1#1
    pool.assign("c", 1); // n2#0
    const evicted = pool.removeNode("n1");
    expect(evicted.sort()).toEqual(["a", "b", "x"]);
    expect(pool.totalSlots).toBe(2);
    expect(pool.busySlots).toBe(1);
    expect(pool.assignmentOf("a")).toBeNull();
    expect(pool.release("x")).toBe(false);
    expect(pool.busySlots).toBe(1);
    expect(pool.snapshot().map((d) => d.spec.node)).toEqual(["n2"]);
    expect(pool.assignmentOf("c")).toMatchObject({ node: "n2" });
    // the evicted lease id may be assigned again elsewhere
    expect(pool.assign("a", 1)).toMatchObject({ node: "n2", slots: [1] });
  });

  it("returns nothing for an idle or unknown node", () => {
    const pool = new Pool([gpu("n1", 0)]);
    expect(pool.removeNode("n9")).toEqual([]);
    expect(pool.removeNode("n1")).toEqual([]);
    expect(pool.totalSlots).toBe(0);
    expect(pool.fits(1)).toBe(false);
  });

  it("a node can come back after removal", () => {
    const pool = new Pool([gpu("n1", 0)]);
    pool.removeNode("n1");
    pool.addDevice(gpu("n1", 0));
    expect(pool.assign("a", 2)).toMatchObject({ node: "n1", index: 0 });
  });
});

describe("occupy (recovery)", () => {
  it("restores a known assignment", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1)]);
    expect(pool.occupy("a", "n1", 1, [1])).toMatchObject({ node: "n1", index: 1, slots: [1] });
    expect(pool.busySlots).toBe(1);
    expect(holders(pool)["n1#1"]).toEqual([null, "a"]);
    // best fit now prefers the half-busy GPU
    expect(pool.assign("b", 1)).toMatchObject({ index: 1, slots: [0] });
  });

  it("refuses conflicts and leaves the pool untouched", () => {
    const pool = new Pool([gpu("n1", 0)]);
    pool.occupy("a", "n1", 0, [0]);
    const before = holders(pool);
    expect(pool.occupy("b", "n1", 0, [0])).toBeNull(); // slot taken
    expect(pool.occupy("b", "n1", 0, [0, 1])).toBeNull(); // one of them taken
    expect(pool.occupy("a", "n1", 0, [1])).toBeNull(); // lease already holds slots
    expect(pool.occupy("b", "n1", 7, [1])).toBeNull(); // unknown device
    expect(pool.occupy("b", "n9", 0, [1])).toBeNull(); // unknown node
    expect(pool.occupy("b", "n1", 0, [2])).toBeNull(); // slot out of range
    expect(pool.occupy("b", "n1", 0, [-1])).toBeNull(); // negative slot
    expect(holders(pool)).toEqual(before);
    expect(pool.busySlots).toBe(1);
    expect(pool.occupy("b", "n1", 0, [1])).not.toBeNull();
    expect(pool.busySlots).toBe(2);
  });

  it("refuses the same slot listed twice (it would count one slot as two)", () => {
    const pool = new Pool([gpu("n1", 0)]);
    expect(pool.occupy("a", "n1", 0, [0, 0])).toBeNull();
    expect(pool.busySlots).toBe(0);
    expect(pool.assign("b", 1)).not.toBeNull();
  });
});

describe("node-bound calls", () => {
  it("fits, assigns and could-ever-fit only on the given node", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n2", 0, 4)]);
    expect(pool.assign("a", 2, "n1")).toMatchObject({ node: "n1", index: 0 });
    expect(pool.fits(1)).toBe(true);
    expect(pool.fits(1, "n1")).toBe(false);
    expect(pool.assign("b", 1, "n1")).toBeNull();
    expect(pool.assignmentOf("b")).toBeNull();
    expect(pool.couldEverFit(4)).toBe(true);
    expect(pool.couldEverFit(4, "n1")).toBe(false);
    expect(pool.couldEverFit(2, "n1")).toBe(true);
    expect(pool.couldEverFit(0, "n1")).toBe(false);
    expect(pool.fits(1, null)).toBe(true);
    expect(pool.assign("c", 1, null)).toMatchObject({ node: "n2" });
  });

  it("a node that is not in the pool fits nothing, ever", () => {
    const pool = new Pool([gpu("n1", 0)]);
    expect(pool.hasNode("n9")).toBe(false);
    expect(pool.fits(1, "n9")).toBe(false);
    expect(pool.couldEverFit(1, "n9")).toBe(false);
    expect(pool.assign("a", 1, "n9")).toBeNull();
    expect(pool.busySlots).toBe(0);
  });

  it("best fit within the node: the fullest device that still fits, then the first added", () => {
    const pool = new Pool([gpu("n1", 0, 4), gpu("n1", 1, 4), gpu("n2", 0, 4)]);
    pool.occupy("x", "n2", 0, [0, 1, 2]); // the fullest device of the pool is on another node
    pool.occupy("y", "n1", 1, [0]);
    expect(pool.assign("a", 1, "n1")).toMatchObject({ node: "n1", index: 1, slots: [1] });
    expect(pool.assign("b", 3, "n1")).toMatchObject({ node: "n1", index: 0, slots: [0, 1, 2] });
    // n1#0 and n1#1 both have one free slot now: the first added wins.
    expect(pool.assign("c", 1, "n1")).toMatchObject({ node: "n1", index: 0, slots: [3] });
  });

  it("lists its nodes in the order they joined and forgets a removed one", () => {
    const pool = new Pool([gpu("n2", 0), gpu("n1", 0), gpu("n2", 1)]);
    expect(pool.nodes()).toEqual(["n2", "n1"]);
    expect(pool.hasNode("n1")).toBe(true);
    pool.removeNode("n2");
    expect(pool.nodes()).toEqual(["n1"]);
    expect(pool.hasNode("n2")).toBe(false);
    expect(pool.fits(1, "n2")).toBe(false);
  });
});

describe("devices added and removed at run time", () => {
  it("a device added after construction counts everywhere, however large", () => {
    const pool = new Pool([gpu("n1", 0)]);
    const before = pool.devicesVersion;
    pool.addDevice(gpu("n2", 0, 4));
    expect(pool.devicesVersion).not.toBe(before);
    expect(pool.totalSlots).toBe(6);
    expect(pool.couldEverFit(4)).toBe(true);
    expect(pool.fits(4)).toBe(true);
    expect(pool.assign("big", 4)).toMatchObject({ node: "n2", slots: [0, 1, 2, 3] });
    expect(pool.fits(3)).toBe(false);
    pool.addDevice(gpu("n1", 1, 3));
    expect(pool.couldEverFit(3, "n1")).toBe(true);
    expect(pool.assign("mid", 3, "n1")).toMatchObject({ node: "n1", index: 1 });
  });

  it("removing the node with the largest devices shrinks what could ever fit", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n2", 0, 4), gpu("n3", 0, 4)]);
    pool.removeNode("n2");
    expect(pool.couldEverFit(4)).toBe(true); // n3 still has one
    const before = pool.devicesVersion;
    pool.removeNode("n3");
    expect(pool.devicesVersion).not.toBe(before);
    expect(pool.couldEverFit(4)).toBe(false);
    expect(pool.couldEverFit(2)).toBe(true);
    expect(pool.fits(3)).toBe(false);
  });

  it("keeps the free-slot index right: no removed device is ever handed out again", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n2", 0), gpu("n2", 1), gpu("n3", 0)]);
    pool.assign("a", 1); // a half-busy device, in the bucket best fit looks at first
    const where = pool.assignmentOf("a")?.node as string;
    pool.removeNode(where);
    const seen = new Set<string>();
    for (let i = 0; pool.fits(1); i++) seen.add((pool.assign(`l${i}`, 1) as { node: string }).node);
    expect(seen.has(where)).toBe(false);
    expect(pool.busySlots).toBe(pool.totalSlots);
    expect(pool.snapshot().every((d) => d.holders.every((h) => h !== null))).toBe(true);
  });

  it("does nothing and keeps its version for a node it does not have", () => {
    const pool = new Pool([gpu("n1", 0)]);
    const before = pool.devicesVersion;
    expect(pool.removeNode("n9")).toEqual([]);
    expect(pool.devicesVersion).toBe(before);
  });
});

describe("dedicated devices (a GPU host's agent's: only for calls bound to that node)", () => {
  const dedicated = (node: string, index: number, slots = 2): DeviceSpec => ({
    ...gpu(node, index, slots),
    dedicated: true,
  });

  it("an unbound call never lands on a dedicated device, even when it is the only free one", () => {
    const pool = new Pool([gpu("n1", 0), dedicated("agent", 0)]);
    expect(pool.assign("a", 2)).toMatchObject({ node: "n1", index: 0 });
    expect(pool.fits(1)).toBe(false);
    expect(pool.assign("b", 1)).toBeNull();
    expect(pool.freeSlots).toBe(2); // free, but not for unbound calls
    expect(pool.sharedFreeSlots).toBe(0);
    // A call bound to the agent's node takes it.
    expect(pool.fits(2, "agent")).toBe(true);
    expect(pool.assign("c", 2, "agent")).toMatchObject({ node: "agent", index: 0, slots: [0, 1] });
  });

  it("a bound call uses its node's dedicated and non-dedicated devices alike, best fit", () => {
    const pool = new Pool([gpu("n", 0), dedicated("n", 1)]);
    pool.occupy("x", "n", 1, [0]);
    expect(pool.assign("a", 1, "n")).toMatchObject({ node: "n", index: 1, slots: [1] });
    expect(pool.assign("b", 1, "n")).toMatchObject({ node: "n", index: 0, slots: [0] });
    expect(pool.assign("c", 1)).toMatchObject({ node: "n", index: 0, slots: [1] });
    expect(pool.busySlots).toBe(4);
  });

  it("could-ever-fit for unbound calls looks at the largest non-dedicated device only", () => {
    const pool = new Pool([gpu("n1", 0, 2), dedicated("agent", 0, 4)]);
    expect(pool.couldEverFit(2)).toBe(true);
    expect(pool.couldEverFit(3)).toBe(false);
    expect(pool.fits(3)).toBe(false);
    expect(pool.couldEverFit(4, "agent")).toBe(true);
    pool.removeNode("n1");
    expect(pool.couldEverFit(1)).toBe(false); // dedicated devices only: unbound calls can never fit
    expect(pool.fits(1)).toBe(false);
    expect(pool.couldEverFit(1, "agent")).toBe(true);
  });

  it("counts the whole pool in its totals, and the shared devices apart", () => {
    const pool = new Pool([gpu("n1", 0), dedicated("agent", 0, 4)]);
    expect(pool.totalSlots).toBe(6);
    expect(pool.sharedSlots).toBe(2);
    pool.assign("a", 1);
    pool.assign("b", 3, "agent");
    expect(pool.busySlots).toBe(4);
    expect(pool.sharedBusySlots).toBe(1);
    expect(pool.sharedFreeSlots).toBe(1);
    pool.release("b");
    expect(pool.sharedBusySlots).toBe(1);
    pool.occupy("c", "agent", 0, [2]);
    expect(pool.sharedBusySlots).toBe(1);
    pool.removeNode("n1");
    expect(pool.totalSlots).toBe(4);
    expect(pool.busySlots).toBe(1);
    expect(pool.sharedSlots).toBe(0);
    expect(pool.sharedBusySlots).toBe(0);
  });

  it("keeps its index right through releases and removals: unbound calls fill every shared slot and no other", () => {
    const pool = new Pool([dedicated("a", 0), gpu("b", 0), dedicated("b", 1, 4), gpu("c", 0, 1)]);
    pool.assign("x", 1, "a");
    pool.assign("y", 3, "b");
    pool.release("x");
    pool.release("y");
    for (let i = 0; pool.fits(1); i++) expect(pool.assign(`u${i}`, 1)?.node).not.toBe("a");
    const byDevice = holders(pool);
    expect(byDevice["a#0"]).toEqual([null, null]);
    expect(byDevice["b#1"]).toEqual([null, null, null, null]);
    expect(pool.busySlots).toBe(3);
    expect(pool.sharedFreeSlots).toBe(0);
  });
});
