import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Pool, PriorityScheduler, usableIdleSlots } from "../src/index.js";
import type { Concurrency, DeviceSpec, PriorityRequest } from "../src/index.js";

/**
 * Properties of the priority scheduler with requests bound to nodes, dedicated devices (only for
 * requests bound to their node), and nodes joining and leaving the pool, driven like the engine
 * drives it: dispatch after every change.
 */

const T0 = 1_700_000_000_000;
const LIMITS: Readonly<Record<string, number | null>> = { a: 1, b: 2 };
const APPS = [null, "a", "b", "c"] as const;
const NODES = ["n0", "n1", "n2"] as const;
/** A node that never has devices: requests bound to it must wait without getting in anyone's way. */
const GHOST = "ghost";
const BINDINGS = [null, null, null, ...NODES, GHOST] as const;

interface Running {
  readonly request: PriorityRequest;
  readonly grantedAt: number;
}

class Harness implements Concurrency {
  now = T0;
  readonly pool: Pool;
  readonly scheduler: PriorityScheduler;
  readonly queued = new Map<string, PriorityRequest>();
  readonly running = new Map<string, Running>();
  readonly log: string[] = [];
  private readonly appActive = new Map<string, number>();
  private seq = 0;
  /** Ids of requests for GHOST apart, so that a run with more of them gives the others the same ids. */
  private requests = 0;
  private ghosts = 0;
  private devices = 0;
  /** Dedicated devices are numbered apart, so that a run without them gives the others the same indexes. */
  private dedicatedDevices = 0;

  constructor(
    devices: readonly { readonly node: number; readonly slots: number; readonly dedicated?: boolean }[],
    readonly holdAfterMs: number,
    agingStepMs: number,
  ) {
    this.pool = new Pool();
    for (const d of devices) this.addDevice(d.node, d.slots, d.dedicated ?? false);
    this.scheduler = new PriorityScheduler({ agingStepMs, holdAfterMs });
  }

  active(appId: string): number {
    return this.appActive.get(appId) ?? 0;
  }
  limit(appId: string): number | null {
    return LIMITS[appId] ?? null;
  }

  enqueue(o: {
    priority: number;
    slots: number;
    durationMs: number;
    appId: string | null;
    node: string | null;
  }): string {
    const id = o.node === GHOST ? `g${this.ghosts++}` : `q${this.requests++}`;
    const request: PriorityRequest = {
      leaseId: id,
      appId: o.appId,
      identity: `user:${id}`,
      slots: o.slots,
      priority: o.priority,
      durationMs: o.durationMs,
      seq: this.seq++,
      queuedAt: this.now,
      node: o.node,
    };
    this.queued.set(id, request);
    this.scheduler.enqueue(request);
    return id;
  }

  end(leaseId: string): void {
    const r = this.running.get(leaseId);
    if (!r) return;
    expect(this.pool.release(leaseId)).toBe(true);
    this.scheduler.onReleased(leaseId);
    this.forget(r);
  }

  cancel(leaseId: string): void {
    if (!this.queued.delete(leaseId)) return;
    expect(this.scheduler.remove(leaseId)).toBe(true);
  }

  addDevice(node: number, slots: number, dedicated: boolean): void {
    const i = dedicated ? 1000 + this.dedicatedDevices++ : this.devices++;
    const spec: DeviceSpec = {
      node: NODES[node % NODES.length] as string,
      index: i,
      uuid: `GPU-${i}`,
      name: "L4",
      memoryMb: 24_576,
      slots,
      ...(dedicated ? { dedicated } : {}),
    };
    this.pool.addDevice(spec);
  }

  /** The node leaves: its leases end with it (reported to the scheduler, or left for it to notice). */
  removeNode(node: number, report: boolean): void {
    for (const id of this.pool.removeNode(NODES[node % NODES.length] as string)) {
      if (report) this.scheduler.onReleased(id);
      this.forget(this.running.get(id) as Running);
    }
  }

  dispatch(): string[] {
    const granted: string[] = [];
    this.scheduler.dispatch(
      this.pool,
      this,
      (grant, request) => {
        expect(this.queued.delete(grant.leaseId)).toBe(true);
        this.running.set(grant.leaseId, { request, grantedAt: this.now });
        if (request.appId !== null) this.appActive.set(request.appId, this.active(request.appId) + 1);
        granted.push(grant.leaseId);
        this.log.push(
          `${this.now}:${grant.leaseId}@${grant.assignment.node}#${grant.assignment.index}/${grant.assignment.slots.join(",")}`,
        );
      },
      this.now,
    );
    const hold = this.scheduler.hold();
    if (hold !== null)
      this.log.push(`${this.now}:hold ${hold.leaseId}@${hold.node}#${hold.index} until ${hold.shadowAt}`);
    return granted;
  }

  /** Every invariant, checked against the pool itself and with an oracle of its own. */
  check(): void {
    const { pool, scheduler } = this;
    // Bound leases run on their node; unbound ones never on a dedicated device.
    const dedicated = new Set(
      pool
        .snapshot()
        .filter((d) => d.spec.dedicated === true)
        .map((d) => `${d.spec.node}#${d.spec.index}`),
    );
    for (const [id, r] of this.running) {
      const a = pool.assignmentOf(id);
      if (r.request.node != null) expect(a?.node).toBe(r.request.node);
      else
        expect(dedicated.has(`${a?.node}#${a?.index}`), `unbound ${id} on dedicated ${a?.node}#${a?.index}`).toBe(
          false,
        );
    }
    // Capacity, and no slot double-booked: each active lease holds exactly its slots, on one device.
    let slots = 0;
    for (const r of this.running.values()) slots += r.request.slots;
    expect(pool.busySlots).toBe(slots);
    expect(pool.busySlots).toBeLessThanOrEqual(pool.totalSlots);
    const held = new Map<string, string[]>();
    for (const { spec, holders } of pool.snapshot()) {
      for (const h of holders) if (h !== null) held.set(h, [...(held.get(h) ?? []), `${spec.node}#${spec.index}`]);
    }
    expect([...held.keys()].sort()).toEqual([...this.running.keys()].sort());
    for (const [id, where] of held) {
      expect(where.length).toBe(this.running.get(id)?.request.slots);
      expect(new Set(where).size).toBe(1);
    }
    for (const app of ["a", "b"]) expect(this.active(app)).toBeLessThanOrEqual(this.limit(app) ?? Infinity);
    // Work conservation, bound: no free slot could take a waiting request allowed on its device
    // (under its app's limit, and, on the held device, ending before the shadow time).
    const hold = scheduler.hold();
    for (const { spec, holders } of pool.snapshot()) {
      const free = holders.filter((h) => h === null).length;
      const isHeld = hold !== null && hold.node === spec.node && hold.index === spec.index;
      for (const r of this.queued.values()) {
        const usable =
          (r.appId === null || this.active(r.appId) < (this.limit(r.appId) ?? Infinity)) &&
          (r.node == null ? spec.dedicated !== true : r.node === spec.node) &&
          r.slots <= free &&
          (!isHeld || this.now + r.durationMs <= (hold as { shadowAt: number }).shadowAt);
        expect(usable, `${r.leaseId} could run on ${spec.node}#${spec.index}`).toBe(false);
      }
    }
    // The simulator's measure agrees.
    expect(usableIdleSlots(pool, this.queued.values(), this, hold, this.now)).toBe(0);
    // A hold is for a head that no device of its own fits now, but one could some day: an aged
    // one, or an unbound one with a promise to keep.
    if (hold !== null) {
      const head = this.queued.get(hold.leaseId) as PriorityRequest;
      expect(head).toBeDefined();
      if (this.now - head.queuedAt < this.holdAfterMs) expect(head.node ?? null).toBeNull();
      expect(pool.fits(head.slots, head.node)).toBe(false);
      expect(pool.couldEverFit(head.slots, head.node)).toBe(true);
      if (head.node != null) expect(hold.node).toBe(head.node);
      else expect(dedicated.has(`${hold.node}#${hold.index}`), "an unbound head held a dedicated device").toBe(false);
    }
    expect(scheduler.size).toBe(this.queued.size);
    const order = [...scheduler.waiting()];
    expect(order.map((w) => w.position)).toEqual(order.map((_, i) => i + 1));
    for (const w of order) expect(scheduler.position(w.request.leaseId)).toBe(w.position);
  }

  private forget(r: Running): void {
    this.running.delete(r.request.leaseId);
    if (r.request.appId !== null) this.appActive.set(r.request.appId, this.active(r.request.appId) - 1);
  }
}

type Op =
  | {
      readonly t: "enqueue";
      readonly priority: number;
      readonly slots: number;
      readonly durationS: number;
      readonly app: number;
      readonly bind: number;
    }
  | { readonly t: "ghost"; readonly priority: number; readonly slots: number; readonly app: number }
  | { readonly t: "end"; readonly pick: number }
  | { readonly t: "cancel"; readonly pick: number }
  | { readonly t: "advance"; readonly ms: number }
  | { readonly t: "add"; readonly node: number; readonly slots: number; readonly dedicated: boolean }
  | { readonly t: "remove"; readonly node: number; readonly report: boolean };

const slotsArb = fc.constantFrom(1, 1, 2, 3);
const deviceSlotsArb = fc.constantFrom(1, 2, 2, 2, 4);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant("enqueue" as const),
      priority: fc.integer({ min: 1, max: 3 }),
      slots: slotsArb,
      durationS: fc.integer({ min: 1, max: 120 }),
      app: fc.integer({ min: 0, max: 3 }),
      bind: fc.integer({ min: 0, max: BINDINGS.length - 1 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("ghost" as const),
      priority: fc.integer({ min: 1, max: 3 }),
      slots: slotsArb,
      app: fc.integer({ min: 0, max: 3 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("end" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 40_000 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("add" as const),
      node: fc.nat(),
      slots: deviceSlotsArb,
      dedicated: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("remove" as const), node: fc.nat(), report: fc.boolean() }) },
);
/** Dedicated devices (a GPU host's agent's) in about a third of the pools' devices, none in others. */
const devicesArb = fc.array(
  fc.record({
    node: fc.nat({ max: NODES.length - 1 }),
    slots: deviceSlotsArb,
    dedicated: fc.constantFrom(false, false, true),
  }),
  { maxLength: 6, size: "max" },
);
/** Long schedules (fast-check's default size keeps arrays to a handful), so that holds, evictions and backfills happen. */
const opsArb = (maxLength: number) => fc.array(opArb, { maxLength, size: "max" });

/**
 * Applies one operation and dispatches. `ghosts`: whether "ghost" operations enqueue a request
 * bound to a node that never has devices (else they only dispatch again).
 */
function apply(h: Harness, op: Op, ghosts = true): void {
  switch (op.t) {
    case "enqueue":
      h.enqueue({
        priority: op.priority,
        slots: op.slots,
        durationMs: op.durationS * 1000,
        appId: APPS[op.app] ?? null,
        node: BINDINGS[op.bind] ?? null,
      });
      break;
    case "ghost":
      if (ghosts)
        h.enqueue({
          priority: op.priority,
          slots: op.slots,
          durationMs: 1_000,
          appId: APPS[op.app] ?? null,
          node: GHOST,
        });
      break;
    case "end": {
      const ids = [...h.running.keys()];
      if (ids.length > 0) h.end(ids[op.pick % ids.length] as string);
      break;
    }
    case "cancel": {
      // Only requests both runs of the ghost property have, so that they cancel the same one.
      const ids = [...h.queued.values()].filter((r) => r.node !== GHOST).map((r) => r.leaseId);
      if (ids.length > 0) h.cancel(ids[op.pick % ids.length] as string);
      break;
    }
    case "advance":
      h.now += op.ms;
      break;
    case "add":
      h.addDevice(op.node, op.slots, op.dedicated);
      break;
    case "remove":
      h.removeNode(op.node, op.report);
      break;
  }
  h.dispatch();
}

describe("PriorityScheduler properties with node-bound requests", () => {
  it("places bound requests only on their node, never double-books, keeps capacity and app limits, and conserves work", () => {
    fc.assert(
      fc.property(
        devicesArb,
        fc.constantFrom(0, 5_000, 15_000),
        fc.constantFrom(1_000, 15_000),
        opsArb(120),
        (devices, holdAfterMs, agingStepMs, ops) => {
          const h = new Harness(devices, holdAfterMs, agingStepMs);
          for (const op of ops) {
            apply(h, op);
            h.check();
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("requests for a node with no devices change nothing for anyone else: the same grants and holds", () => {
    fc.assert(
      fc.property(devicesArb, fc.constantFrom(0, 5_000), opsArb(100), (devices, holdAfterMs, ops) => {
        const run = (ghosts: boolean) => {
          const h = new Harness(devices, holdAfterMs, 5_000);
          for (const op of ops) apply(h, op, ghosts);
          return h.log;
        };
        expect(run(true)).toEqual(run(false));
      }),
      { numRuns: 150 },
    );
  });

  it("dedicated devices are invisible to unbound requests: an unbound-only schedule gets the same grants, holds and ETAs without them", () => {
    fc.assert(
      fc.property(devicesArb, fc.constantFrom(0, 5_000), opsArb(100), (devices, holdAfterMs, ops) => {
        const run = (withDedicated: boolean) => {
          const h = new Harness(
            devices.filter((d) => withDedicated || !d.dedicated),
            holdAfterMs,
            5_000,
          );
          for (const op of ops) {
            if (op.t === "add" || op.t === "remove") {
              // The scheduler rebuilds its view when the devices change, which may reorder ties
              // between equally free devices: have it rebuild in both runs, whether or not a
              // device of this run changes (adding or removing only dedicated ones).
              h.pool.addDevice({ node: "gone", index: 0, uuid: "GPU-gone", name: "L4", memoryMb: 24_576, slots: 1 });
              h.pool.removeNode("gone");
            }
            if (op.t === "enqueue") apply(h, { ...op, bind: 0 }, false);
            else if (op.t === "add" && op.dedicated && !withDedicated) h.dispatch();
            else apply(h, op, false);
            for (const id of h.queued.keys()) h.log.push(`${id}:${h.scheduler.place(id, h.now)?.etaMs}`);
          }
          return h.log;
        };
        expect(run(true)).toEqual(run(false));
      }),
      { numRuns: 150 },
    );
  });

  it("is deterministic: the same operations, nodes joining and leaving included, give the same grants", () => {
    fc.assert(
      fc.property(devicesArb, opsArb(80), (devices, ops) => {
        const run = () => {
          const h = new Harness(devices, 5_000, 5_000);
          for (const op of ops) apply(h, op);
          return h.log;
        };
        expect(run()).toEqual(run());
      }),
      { numRuns: 100 },
    );
  });

  it("the ETA of a one-slot request, bound or not, is an upper bound when nothing new arrives, dedicated devices or not", () => {
    const bindArb = fc.constantFrom<string | null>(null, "n0", "n1");
    fc.assert(
      fc.property(
        fc.array(fc.record({ node: fc.nat({ max: 1 }), slots: fc.constantFrom(1, 2), dedicated: fc.boolean() }), {
          minLength: 1,
          maxLength: 4,
          size: "max",
        }),
        fc.array(
          fc.record({
            node: bindArb,
            durationMs: fc.integer({ min: 1_000, max: 60_000 }),
            runShare: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          { maxLength: 6, size: "max" },
        ),
        fc.array(
          fc.record({
            node: bindArb,
            priority: fc.integer({ min: 1, max: 3 }),
            durationMs: fc.integer({ min: 1_000, max: 60_000 }),
            runShare: fc.double({ min: 0, max: 1, noNaN: true }),
          }),
          { minLength: 1, maxLength: 25, size: "max" },
        ),
        (devices, running, waiting) => {
          const h = new Harness(devices, 0, 15_000);
          // Only requests some device could take (an unbound one needs a shared device).
          const has = (node: string | null) => h.pool.couldEverFit(1, node);
          const share = new Map<string, number>();
          for (const r of running)
            if (has(r.node))
              share.set(
                h.enqueue({ priority: 9, slots: 1, durationMs: r.durationMs, appId: null, node: r.node }),
                r.runShare,
              );
          const ends: { at: number; id: string }[] = [];
          const track = (ids: string[]) => {
            for (const id of ids)
              ends.push({
                at: h.now + Math.floor((h.running.get(id) as Running).request.durationMs * (share.get(id) ?? 1)),
                id,
              });
          };
          track(h.dispatch());
          for (const w of waiting)
            if (has(w.node))
              share.set(
                h.enqueue({ priority: w.priority, slots: 1, durationMs: w.durationMs, appId: null, node: w.node }),
                w.runShare,
              );
          track(h.dispatch());
          const start = h.now;
          const etas = new Map<string, number>();
          for (const id of h.queued.keys()) {
            const eta = h.scheduler.place(id, start)?.etaMs;
            expect(eta).not.toBeNull();
            etas.set(id, eta as number);
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
      { numRuns: 300 },
    );
  });
});
