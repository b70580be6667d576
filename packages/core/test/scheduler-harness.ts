import { expect } from "vitest";
import { Pool, PriorityScheduler } from "../src/index.js";
import type { Concurrency, DeviceSpec, Grant, PriorityRequest } from "../src/index.js";

/** The engine's side of the priority scheduler, for unit tests: a pool, app counts, requests. */

export const STEP = 10_000;
export const T = 1_000_000 * STEP; // on the aging grid, so fresh requests at T share one step

export function gpu(node: string, index: number, slots = 2): DeviceSpec {
  return { node, index, uuid: `GPU-${node}-${index}`, name: "L4", memoryMb: 24_576, slots };
}

let seq = 0;
export function req(leaseId: string, o: Partial<PriorityRequest> = {}): PriorityRequest {
  seq++;
  return {
    leaseId,
    appId: null,
    identity: `user:${leaseId}`,
    slots: 1,
    priority: 1,
    durationMs: 60_000,
    seq,
    queuedAt: T,
    ...o,
  };
}

export class Counter implements Concurrency {
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

/** A scheduler, its pool and the engine's bookkeeping, as the engine wires them. */
export class Bench {
  readonly pool: Pool;
  readonly s: PriorityScheduler;
  readonly c: Counter;
  readonly apps = new Map<string, string | null>();
  constructor(devices: DeviceSpec[], limits: Record<string, number | null> = {}, holdAfterMs = 5_000) {
    this.pool = new Pool(devices);
    this.s = new PriorityScheduler({ agingStepMs: STEP, holdAfterMs });
    this.c = new Counter(limits);
  }
  enqueue(...rs: PriorityRequest[]): void {
    for (const r of rs) {
      this.apps.set(r.leaseId, r.appId);
      this.s.enqueue(r);
    }
  }
  run(now = T): string[] {
    const seen: string[] = [];
    const grants = this.s.dispatch(
      this.pool,
      this.c,
      (g: Grant, r: PriorityRequest) => {
        expect(g.leaseId).toBe(r.leaseId);
        expect(this.pool.assignmentOf(g.leaseId)).toEqual(g.assignment);
        this.c.inc(r.appId);
        seen.push(g.leaseId);
      },
      now,
    );
    expect(grants.map((g) => g.leaseId)).toEqual(seen);
    return seen;
  }
  release(leaseId: string): void {
    expect(this.pool.release(leaseId)).toBe(true);
    this.s.onReleased(leaseId);
    this.c.dec(this.apps.get(leaseId) ?? null);
  }
  /** Takes a node out of the pool, as the engine does; `report`: tell the scheduler of each evicted lease. */
  removeNode(node: string, report = true): string[] {
    const evicted = this.pool.removeNode(node);
    for (const id of evicted) {
      if (report) this.s.onReleased(id);
      this.c.dec(this.apps.get(id) ?? null);
    }
    return evicted;
  }
  /** Occupies slots outside the scheduler (as recovery does) and reports the lease. */
  busy(
    leaseId: string,
    node: string,
    index: number,
    slots: number[],
    deadline: number,
    appId: string | null = null,
  ): void {
    const a = this.pool.occupy(leaseId, node, index, slots);
    if (!a) throw new Error("slots taken");
    this.apps.set(leaseId, appId);
    this.c.inc(appId);
    this.s.onGranted(leaseId, appId, a, deadline);
  }
  order(): string[] {
    return [...this.s.waiting()].map((w) => w.request.leaseId);
  }
}
