import type { Pool, SlotAssignment } from "./pool.js";
import { IndexedHeap } from "./scheduler-heap.js";

/** One GPU as the scheduler sees it: who holds each slot and when each slot frees at the latest. */
export interface DeviceTimeline {
  readonly key: string;
  readonly node: string;
  readonly index: number;
  readonly holders: (string | null)[];
  free: number;
  /** readyAt[s]: the time this device will have s free slots if every lease runs to its deadline (-Infinity: now). */
  readonly readyAt: number[];
  /** Place of this device in the readiness heap of each slot count (internal to SlotBoard). */
  readonly heapIndex: number[];
}

interface LeaseInfo {
  readonly appId: string | null;
  readonly slots: number;
  deadline: number;
}

function deviceKey(node: string, index: number): string {
  return `${node}#${index}`;
}

/**
 * The scheduler's view of slot occupancy, mirrored from the Pool and extended with each lease's
 * deadline, so that it can answer "which device can take `s` slots soonest, and when" (holds and
 * ETAs) in O(log devices), and place a request on a device of its choosing (Pool.assign always
 * picks the best fit, which may be the very device held for the head of the queue).
 *
 * It is kept in step by the scheduler's own grants plus the engine's onGranted/onReleased calls;
 * as a safety net, whenever its slot counts disagree with the Pool's it rebuilds itself from
 * Pool.snapshot() (O(devices), only when out of step).
 */
export class SlotBoard {
  private readonly devices = new Map<string, DeviceTimeline>();
  /** free-slot count → devices with exactly that many free slots (the same best-fit index as Pool). */
  private readonly byFree = new Map<number, Set<DeviceTimeline>>();
  /** readiness[s]: devices with at least s slots, soonest to have s free first. */
  private readonly readiness: IndexedHeap<DeviceTimeline>[] = [];
  private readonly leases = new Map<string, LeaseInfo>();
  private readonly placed = new Map<string, DeviceTimeline>();
  private maxSlots = 0;
  private totalSlots = 0;
  private busySlots = 0;
  /** Σ slots × deadline and Σ slots over placed leases with a known deadline (for the residual work). */
  private slotDeadlineSum = 0;
  private slotsWithDeadline = 0;
  private leasesWithoutDeadline = 0;
  private readonly scratch: number[] = [];

  get total(): number {
    return this.totalSlots;
  }

  get busy(): number {
    return this.busySlots;
  }

  get maxSlotsPerDevice(): number {
    return this.maxSlots;
  }

  inStepWith(pool: Pool): boolean {
    return pool.totalSlots === this.totalSlots && pool.busySlots === this.busySlots;
  }

  /** Rebuilds the device view from the pool; returns the leases that were gone from it. */
  syncFrom(pool: Pool): { leaseId: string; appId: string | null }[] {
    this.devices.clear();
    this.byFree.clear();
    this.readiness.length = 0;
    this.placed.clear();
    this.maxSlots = 0;
    this.totalSlots = 0;
    this.busySlots = 0;
    this.slotDeadlineSum = 0;
    this.slotsWithDeadline = 0;
    this.leasesWithoutDeadline = 0;
    const seen = new Set<string>();
    const snapshot = pool.snapshot();
    for (const { spec } of snapshot) this.maxSlots = Math.max(this.maxSlots, spec.slots);
    for (let s = 1; s <= this.maxSlots; s++) this.readiness[s] = this.readinessHeap(s);
    for (const { spec, holders } of snapshot) {
      const d: DeviceTimeline = {
        key: deviceKey(spec.node, spec.index),
        node: spec.node,
        index: spec.index,
        holders: [...holders],
        free: 0,
        readyAt: new Array<number>(spec.slots + 1).fill(Number.NEGATIVE_INFINITY),
        heapIndex: new Array<number>(spec.slots + 1).fill(-1),
      };
      this.devices.set(d.key, d);
      this.totalSlots += spec.slots;
      const slotsOf = new Map<string, number>();
      for (const h of holders) {
        if (h === null) d.free++;
        else slotsOf.set(h, (slotsOf.get(h) ?? 0) + 1);
      }
      this.busySlots += spec.slots - d.free;
      for (const [leaseId, slots] of slotsOf) {
        seen.add(leaseId);
        this.placed.set(leaseId, d);
        const info = this.leases.get(leaseId);
        if (info) {
          if (info.slots !== slots) this.leases.set(leaseId, { ...info, slots });
        } else {
          // A lease the scheduler was never told about: its deadline is unknown.
          this.leases.set(leaseId, { appId: null, slots, deadline: Number.POSITIVE_INFINITY });
        }
        this.addResidual(this.leases.get(leaseId) as LeaseInfo, +1);
      }
      this.bucket(d.free).add(d);
      for (let s = 1; s <= spec.slots; s++) (this.readiness[s] as IndexedHeap<DeviceTimeline>).push(d);
      this.refresh(d);
    }
    const gone: { leaseId: string; appId: string | null }[] = [];
    for (const [leaseId, info] of this.leases) {
      if (!seen.has(leaseId)) gone.push({ leaseId, appId: info.appId });
    }
    for (const g of gone) this.leases.delete(g.leaseId);
    return gone;
  }

  /** Whether some device other than `except` has `slots` free now. */
  fits(slots: number, except: DeviceTimeline | null): boolean {
    for (let f = slots; f <= this.maxSlots; f++) {
      const set = this.byFree.get(f);
      if (!set) continue;
      if (set.size > (except !== null && except.free === f ? 1 : 0)) return true;
    }
    return false;
  }

  /**
   * Best fit, as Pool.assign: the device with the fewest free slots that still fits, skipping
   * `except`; or exactly `only` when given. Returns the lowest free slot indexes on it.
   */
  choose(slots: number, except: DeviceTimeline | null, only: DeviceTimeline | null = null): { device: DeviceTimeline; slots: number[] } | null {
    let device: DeviceTimeline | null = null;
    if (only !== null) {
      if (only.free >= slots) device = only;
    } else {
      for (let f = slots; f <= this.maxSlots && device === null; f++) {
        const set = this.byFree.get(f);
        if (!set) continue;
        for (const d of set) {
          if (d !== except) {
            device = d;
            break;
          }
        }
      }
    }
    if (device === null) return null;
    const taken: number[] = [];
    for (let i = 0; i < device.holders.length && taken.length < slots; i++) if (device.holders[i] === null) taken.push(i);
    return { device, slots: taken };
  }

  /** The device that will have `slots` free soonest (assuming leases run to their deadlines), and when. */
  soonest(slots: number): { device: DeviceTimeline; at: number } | null {
    const device = this.readiness[slots]?.peek();
    if (device === undefined) return null;
    return { device, at: device.readyAt[slots] as number };
  }

  /** Records a lease on known slots (a grant the scheduler made, or one the engine reports). */
  occupy(leaseId: string, appId: string | null, assignment: SlotAssignment, deadline: number): boolean {
    const d = this.devices.get(deviceKey(assignment.node, assignment.index));
    if (this.placed.has(leaseId)) {
      // Already known (e.g. reported again after a grant): only the deadline may be news.
      const info = this.leases.get(leaseId);
      if (info && info.deadline !== deadline) {
        this.addResidual(info, -1);
        info.deadline = deadline;
        this.addResidual(info, +1);
        const at = this.placed.get(leaseId);
        if (at) this.refresh(at);
      }
      return true;
    }
    if (!d || assignment.slots.some((s) => d.holders[s] !== null)) {
      // Unknown device or slots we believed taken: remember the lease, resync on next dispatch.
      this.leases.set(leaseId, { appId, slots: assignment.slots.length, deadline });
      return false;
    }
    const info: LeaseInfo = { appId, slots: assignment.slots.length, deadline };
    this.leases.set(leaseId, info);
    this.placed.set(leaseId, d);
    this.byFree.get(d.free)?.delete(d);
    for (const s of assignment.slots) d.holders[s] = leaseId;
    d.free -= assignment.slots.length;
    this.bucket(d.free).add(d);
    this.busySlots += assignment.slots.length;
    this.addResidual(info, +1);
    this.refresh(d);
    return true;
  }

  /** Forgets a lease and frees its slots; returns its app when it was known. */
  release(leaseId: string): { appId: string | null } | null {
    const info = this.leases.get(leaseId);
    if (!info) return null;
    this.leases.delete(leaseId);
    const d = this.placed.get(leaseId);
    if (d) {
      this.placed.delete(leaseId);
      this.addResidual(info, -1);
      this.byFree.get(d.free)?.delete(d);
      for (let i = 0; i < d.holders.length; i++) {
        if (d.holders[i] === leaseId) {
          d.holders[i] = null;
          d.free++;
          this.busySlots--;
        }
      }
      this.bucket(d.free).add(d);
      this.refresh(d);
    }
    return { appId: info.appId };
  }

  deadlineOf(leaseId: string): number | null {
    return this.leases.get(leaseId)?.deadline ?? null;
  }

  /** Slot-milliseconds the active leases may still hold, if each runs to its deadline. */
  residualMs(now: number): number {
    return Math.max(0, this.slotDeadlineSum - now * this.slotsWithDeadline);
  }

  /** Whether some lease on the slots has no known deadline (then no ETA can be promised). */
  get unknownDeadlines(): boolean {
    return this.leasesWithoutDeadline > 0;
  }

  private addResidual(info: LeaseInfo, sign: 1 | -1): void {
    if (!Number.isFinite(info.deadline)) {
      this.leasesWithoutDeadline += sign;
      return;
    }
    this.slotDeadlineSum += sign * info.slots * info.deadline;
    this.slotsWithDeadline += sign * info.slots;
  }

  /** Recomputes when the device will have 1, 2, … free slots, and its place in each readiness heap. */
  private refresh(d: DeviceTimeline): void {
    // Free times of the slots, sorted (insertion sort into a reused array: devices have a few slots).
    const times = this.scratch;
    const n = d.holders.length;
    for (let i = 0; i < n; i++) {
      const h = d.holders[i] as string | null;
      const t = h === null ? Number.NEGATIVE_INFINITY : (this.leases.get(h)?.deadline ?? Number.POSITIVE_INFINITY);
      let j = i;
      while (j > 0 && (times[j - 1] as number) > t) {
        times[j] = times[j - 1] as number;
        j--;
      }
      times[j] = t;
    }
    for (let s = 1; s <= n; s++) {
      const at = times[s - 1] as number;
      if (d.readyAt[s] === at) continue;
      d.readyAt[s] = at;
      const heap = this.readiness[s];
      if (heap?.has(d)) heap.update(d);
    }
  }

  private readinessHeap(s: number): IndexedHeap<DeviceTimeline> {
    return new IndexedHeap<DeviceTimeline>(
      (a, b) => (a.readyAt[s] as number) < (b.readyAt[s] as number) || ((a.readyAt[s] as number) === (b.readyAt[s] as number) && a.key < b.key),
      (d) => d.heapIndex[s] ?? -1,
      (d, i) => {
        d.heapIndex[s] = i;
      },
    );
  }

  private bucket(free: number): Set<DeviceTimeline> {
    let set = this.byFree.get(free);
    if (!set) {
      set = new Set();
      this.byFree.set(free, set);
    }
    return set;
  }
}
