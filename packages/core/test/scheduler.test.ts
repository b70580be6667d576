import { describe, expect, it } from "vitest";
import { FifoScheduler, Pool } from "../src/index.js";
import type { Concurrency, DeviceSpec, Grant, QueuedRequest } from "../src/index.js";

function gpu(node: string, index: number): DeviceSpec {
  return { node, index, uuid: `GPU-${node}-${index}`, name: "L4", memoryMb: 24_576, slots: 2 };
}

let seq = 0;
function req(leaseId: string, slots: number, appId: string | null = null): QueuedRequest {
  seq++;
  return {
    leaseId,
    appId,
    identity: `user:${leaseId}`,
    slots,
    priority: 2,
    durationMs: 60_000,
    seq,
    queuedAt: 1000 + seq,
  };
}

class Counter implements Concurrency {
  readonly counts = new Map<string, number>();
  constructor(private readonly limits: Record<string, number | null> = {}) {}
  active(appId: string): number {
    return this.counts.get(appId) ?? 0;
  }
  limit(appId: string): number | null {
    return this.limits[appId] ?? null;
  }
  inc(appId: string | null): void {
    if (appId !== null) this.counts.set(appId, this.active(appId) + 1);
  }
  dec(appId: string | null): void {
    if (appId !== null) this.counts.set(appId, this.active(appId) - 1);
  }
}

function run(s: FifoScheduler, pool: Pool, c: Counter): string[] {
  const seen: string[] = [];
  const grants = s.dispatch(pool, c, (g: Grant, r: QueuedRequest) => {
    expect(g.leaseId).toBe(r.leaseId);
    expect(pool.assignmentOf(g.leaseId)).toEqual(g.assignment);
    c.inc(r.appId);
    seen.push(g.leaseId);
  });
  expect(grants.map((g) => g.leaseId)).toEqual(seen);
  return seen;
}

describe("FifoScheduler", () => {
  it("grants in arrival order", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1)]);
    const s = new FifoScheduler();
    for (const id of ["a", "b", "c", "d", "e"]) s.enqueue(req(id, 1));
    expect(run(s, pool, new Counter())).toEqual(["a", "b", "c", "d"]);
    expect(s.size).toBe(1);
    expect(s.position("e")).toBe(1);
    expect(s.reason("e")).toBe("node");
    pool.release("c");
    expect(run(s, pool, new Counter())).toEqual(["e"]);
    expect(s.size).toBe(0);
  });

  it("refuses to enqueue the same lease twice", () => {
    const s = new FifoScheduler();
    s.enqueue(req("a", 1));
    expect(() => s.enqueue(req("a", 1))).toThrow(/already queued/);
  });

  it("an xlarge head blocks the larges behind it (no backfill)", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n2", 0)]);
    pool.assign("busy1", 1); // n1#0
    pool.assign("busy2", 1); // n1#0 (best fit), now full
    pool.assign("busy3", 1); // n2#0, half-busy
    const s = new FifoScheduler();
    s.enqueue(req("x", 2));
    s.enqueue(req("l", 1));
    expect(pool.fits(1)).toBe(true);
    expect(run(s, pool, new Counter())).toEqual([]);
    expect(s.reason("x")).toBe("node");
    expect(s.position("x")).toBe(1);
    expect(s.position("l")).toBe(2);
    pool.release("busy3");
    expect(run(s, pool, new Counter())).toEqual(["x"]);
    expect(s.reason("l")).toBe("node");
    pool.release("busy1");
    expect(run(s, pool, new Counter())).toEqual(["l"]);
  });

  it("skips a concurrency-limited app's requests, with reason concurrency, without blocking other apps", () => {
    const pool = new Pool([gpu("n1", 0), gpu("n1", 1)]);
    const c = new Counter({ limited: 1 });
    const s = new FifoScheduler();
    s.enqueue(req("l1", 1, "limited"));
    s.enqueue(req("l2", 1, "limited"));
    s.enqueue(req("l3", 1, "limited"));
    s.enqueue(req("o1", 1, "other"));
    s.enqueue(req("u1", 1, null));
    expect(run(s, pool, c)).toEqual(["l1", "o1", "u1"]);
    expect(s.reason("l2")).toBe("concurrency");
    expect(s.reason("l3")).toBe("concurrency");
    expect([...s.waiting()].map((w) => [w.request.leaseId, w.position, w.reason])).toEqual([
      ["l2", 1, "concurrency"],
      ["l3", 2, "concurrency"],
    ]);
    // the app's lease ends: its next request goes first, and only one
    pool.release("l1");
    c.dec("limited");
    expect(run(s, pool, c)).toEqual(["l2"]);
    expect(s.position("l3")).toBe(1);
  });

  it("a limit of 0 keeps that app waiting forever while others proceed", () => {
    const pool = new Pool([gpu("n1", 0)]);
    const c = new Counter({ off: 0 });
    const s = new FifoScheduler();
    s.enqueue(req("a", 1, "off"));
    s.enqueue(req("b", 2, "on"));
    expect(run(s, pool, c)).toEqual(["b"]);
    expect(s.reason("a")).toBe("concurrency");
  });

  it("a concurrency-skipped request does not take a slot", () => {
    const pool = new Pool([gpu("n1", 0)]);
    const c = new Counter({ limited: 1 });
    c.inc("limited");
    const s = new FifoScheduler();
    s.enqueue(req("l", 2, "limited"));
    s.enqueue(req("o", 2, "other"));
    expect(run(s, pool, c)).toEqual(["o"]);
    expect(pool.assignmentOf("l")).toBeNull();
  });

  it("reports positions, removes, and forgets removed leases", () => {
    const s = new FifoScheduler();
    for (const id of ["a", "b", "c"]) s.enqueue(req(id, 1));
    expect(["a", "b", "c"].map((id) => s.position(id))).toEqual([1, 2, 3]);
    expect(s.position("zz")).toBeNull();
    expect(s.reason("zz")).toBeNull();
    expect(s.remove("b")).toBe(true);
    expect(s.remove("b")).toBe(false);
    expect(s.has("b")).toBe(false);
    expect(s.reason("b")).toBeNull();
    expect(s.position("c")).toBe(2);
    expect([...s.waiting()].map((w) => w.position)).toEqual([1, 2]);
  });

  it("removing a blocked head lets the next request through", () => {
    const pool = new Pool([gpu("n1", 0)]);
    pool.assign("busy", 1);
    const s = new FifoScheduler();
    s.enqueue(req("x", 2));
    s.enqueue(req("l", 1));
    expect(run(s, pool, new Counter())).toEqual([]);
    s.remove("x");
    expect(run(s, pool, new Counter())).toEqual(["l"]);
  });

  it("an empty queue dispatches nothing", () => {
    expect(new FifoScheduler().dispatch(new Pool([gpu("n1", 0)]), new Counter(), () => undefined)).toEqual([]);
  });
});
