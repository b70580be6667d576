import type { Pool, SlotAssignment } from "./pool.js";
import { IndexedHeap } from "./scheduler-heap.js";
import { NodeSlots, SlotScope } from "./slot-scopes.js";
import type { DeviceTimeline, LeaseInfo } from "./slot-scopes.js";

export type { DeviceTimeline } from "./slot-scopes.js";
export { mayUse } from "./slot-scopes.js";

function deviceKey(node: string, index: number): string {
  return `${node}#${index}`;
}

/** Whether `a` will have `s` free slots before `b` (then the lower key first: a strict order). */
function readyBefore(a: DeviceTimeline, b: DeviceTimeline, s: number): boolean {
  const at = a.readyAt[s] as number;
  const bt = b.readyAt[s] as number;
  return at < bt || (at === bt && a.key < b.key);
}

/**
 * The scheduler's view of slot occupancy, mirrored from the Pool and extended with each lease's
 * deadline, so that it can answer "which device can take `s` slots soonest, and when" (holds and
 * ETAs) in O(log devices), and place a request on a device of its choosing (Pool.assign always
 * picks the best fit, which may be the very device held for the head of the queue).
 *
 * Requests bound to a node are answered by scanning that node's devices (O(devices of the node));
 * unbound ones use the pool-wide indexes, which hold only shared devices (dedicated ones are for
 * their node's requests alone), and cost what they did before requests could be bound.
 *
 * It is kept in step by the scheduler's own grants plus the engine's onGranted/onReleased calls;
 * as a safety net, whenever it disagrees with the Pool — another Pool object, a device added or a
 * node removed, or different slot counts — it rebuilds itself from Pool.snapshot() (O(devices),
 * only when out of step).
 */
export class SlotBoard {
  private readonly devices = new Map<string, DeviceTimeline>();
  /** free-slot count → shared devices with exactly that many free slots (the same best-fit index as Pool). */
  private readonly byFree = new Map<number, Set<DeviceTimeline>>();
  /** readiness[s]: shared devices with at least s slots, soonest to have s free first. */
  private readonly readiness: IndexedHeap<DeviceTimeline>[] = [];
  private readonly nodes = new Map<string, NodeSlots>();
  /** Nodes with a free slot: the only ones whose bound requests may be placed now. */
  private readonly open = new Set<string>();
  private readonly leases = new Map<string, LeaseInfo>();
  private readonly placed = new Map<string, DeviceTimeline>();
  /** The shared devices: what unbound requests may use. */
  private shared = new SlotScope();
  /** Slot counts of the whole pool, dedicated devices included (to compare with the Pool's). */
  private totalSlots = 0;
  private busySlots = 0;
  /** The pool, and its devicesVersion, this view was last rebuilt from. */
  private mirrored: Pool | null = null;
  private mirroredVersion = -1;
  private readonly scratch: number[] = [];
  /** Another board's tie order, applied at every rebuild (a forecast's copy: see followTieOrder). */
  private tiesAs: ReadonlyMap<string, number> | null = null;

  inStepWith(pool: Pool): boolean {
    return (
      pool === this.mirrored &&
      pool.devicesVersion === this.mirroredVersion &&
      pool.totalSlots === this.totalSlots &&
      pool.busySlots === this.busySlots
    );
  }

  /** Nodes with at least one free slot. */
  get nodesWithFreeSlots(): ReadonlySet<string> {
    return this.open;
  }

  /** The shared devices' slots (node null) or one node's; null for a node with no devices. */
  scope(node: string | null): SlotScope | null {
    return node === null ? this.shared : (this.nodes.get(node) ?? null);
  }

  /** Whether some device the request may use (of `node` when given, else shared) could ever take `slots`. */
  couldEverFit(slots: number, node: string | null): boolean {
    const scope = this.scope(node);
    return scope !== null && slots >= 1 && slots <= scope.maxSlots;
  }

  /** Rebuilds the device view from the pool; returns the leases that were gone from it. */
  syncFrom(pool: Pool): { leaseId: string; appId: string | null }[] {
    this.devices.clear();
    this.byFree.clear();
    this.readiness.length = 0;
    this.nodes.clear();
    this.open.clear();
    this.placed.clear();
    this.shared = new SlotScope();
    this.totalSlots = 0;
    this.busySlots = 0;
    this.mirrored = pool;
    this.mirroredVersion = pool.devicesVersion;
    const seen = new Set<string>();
    const snapshot = pool.snapshot();
    for (const { spec } of snapshot)
      if (spec.dedicated !== true) this.shared.maxSlots = Math.max(this.shared.maxSlots, spec.slots);
    for (let s = 1; s <= this.shared.maxSlots; s++) this.readiness[s] = this.readinessHeap(s);
    for (const { spec, holders } of snapshot) {
      let host = this.nodes.get(spec.node);
      if (!host) {
        host = new NodeSlots(spec.node);
        this.nodes.set(spec.node, host);
      }
      const d: DeviceTimeline = {
        key: deviceKey(spec.node, spec.index),
        node: spec.node,
        index: spec.index,
        dedicated: spec.dedicated === true,
        host,
        holders: [...holders],
        free: 0,
        readyAt: new Array<number>(spec.slots + 1).fill(Number.NEGATIVE_INFINITY),
        heapIndex: new Array<number>(spec.slots + 1).fill(-1),
      };
      this.devices.set(d.key, d);
      host.devices.push(d);
      host.addDevice(spec.slots);
      host.maxSlots = Math.max(host.maxSlots, spec.slots);
      this.totalSlots += spec.slots;
      if (!d.dedicated) this.shared.addDevice(spec.slots);
      const slotsOf = new Map<string, number>();
      for (const h of holders) {
        if (h === null) d.free++;
        else slotsOf.set(h, (slotsOf.get(h) ?? 0) + 1);
      }
      this.busySlots += spec.slots - d.free;
      host.freeSlots += d.free;
      if (d.free > 0) this.open.add(spec.node);
      for (const [leaseId, slots] of slotsOf) {
        seen.add(leaseId);
        this.placed.set(leaseId, d);
        const info = this.leases.get(leaseId);
        if (info) {
          if (info.slots !== slots) this.leases.set(leaseId, { ...info, slots });
        } else {
          // A lease the scheduler was never told about: its deadline is unknown.
          this.leases.set(leaseId, { appId: null, slots, deadline: Number.POSITIVE_INFINITY, grantedAt: null });
        }
        this.countLease(this.leases.get(leaseId) as LeaseInfo, d, +1);
      }
      if (!d.dedicated) {
        this.bucket(d.free).add(d);
        for (let s = 1; s <= spec.slots; s++) (this.readiness[s] as IndexedHeap<DeviceTimeline>).push(d);
      }
      this.refresh(d);
    }
    if (this.tiesAs !== null) this.orderTies(this.tiesAs);
    const gone: { leaseId: string; appId: string | null }[] = [];
    for (const [leaseId, info] of this.leases) {
      if (!seen.has(leaseId)) gone.push({ leaseId, appId: info.appId });
    }
    for (const g of gone) this.leases.delete(g.leaseId);
    return gone;
  }

  /**
   * Whether some device other than `except` that the request may use (of `node` when given, else
   * shared) has `slots` free now.
   */
  fits(slots: number, except: DeviceTimeline | null, node: string | null): boolean {
    if (node !== null) {
      for (const d of this.nodes.get(node)?.devices ?? []) if (d !== except && d.free >= slots) return true;
      return false;
    }
    // `except` is only in the index when shared.
    const skip = except !== null && !except.dedicated ? except.free : -1;
    for (let f = slots; f <= this.shared.maxSlots; f++) {
      const set = this.byFree.get(f);
      if (!set) continue;
      if (set.size > (skip === f ? 1 : 0)) return true;
    }
    return false;
  }

  /**
   * Best fit, as Pool.assign: the device with the fewest free slots that still fits, skipping
   * `except`, and only among `node`'s devices when given (else among shared ones). Returns the
   * lowest free slot indexes on it.
   */
  choose(
    slots: number,
    except: DeviceTimeline | null,
    node: string | null,
  ): { device: DeviceTimeline; slots: number[] } | null {
    let device: DeviceTimeline | null = null;
    if (node !== null) {
      for (const d of this.nodes.get(node)?.devices ?? []) {
        if (d !== except && d.free >= slots && (device === null || d.free < device.free)) device = d;
      }
    } else {
      for (let f = slots; f <= this.shared.maxSlots && device === null; f++) {
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
    return device === null ? null : this.chooseOn(device, slots);
  }

  /** The lowest free slot indexes of `device` for `slots`, or null when it has not that many free. */
  chooseOn(device: DeviceTimeline, slots: number): { device: DeviceTimeline; slots: number[] } | null {
    if (device.free < slots) return null;
    const taken: number[] = [];
    for (let i = 0; i < device.holders.length && taken.length < slots; i++)
      if (device.holders[i] === null) taken.push(i);
    return { device, slots: taken };
  }

  /**
   * The device (of `node` when given, else shared) that will have `slots` free soonest, assuming
   * leases run to their deadlines, and when. Ties go to the lower device key, as in the readiness heaps.
   */
  soonest(slots: number, node: string | null): { device: DeviceTimeline; at: number } | null {
    let device: DeviceTimeline | undefined;
    if (node === null) {
      device = this.readiness[slots]?.peek();
    } else {
      for (const d of this.nodes.get(node)?.devices ?? []) {
        if (d.holders.length >= slots && (device === undefined || readyBefore(d, device, slots))) device = d;
      }
    }
    if (device === undefined) return null;
    return { device, at: device.readyAt[slots] as number };
  }

  /** Records a lease on known slots (a grant the scheduler made, or one the engine reports). */
  occupy(
    leaseId: string,
    appId: string | null,
    assignment: SlotAssignment,
    deadline: number,
    grantedAt: number | null,
  ): boolean {
    const d = this.devices.get(deviceKey(assignment.node, assignment.index));
    if (this.placed.has(leaseId)) {
      // Already known (e.g. reported again after a grant): only the deadline (and grant time) may be news.
      const info = this.leases.get(leaseId);
      if (info && grantedAt !== null) info.grantedAt = grantedAt;
      if (info && info.deadline !== deadline) {
        const at = this.placed.get(leaseId) as DeviceTimeline;
        this.countLease(info, at, -1);
        info.deadline = deadline;
        this.countLease(info, at, +1);
        this.refresh(at);
      }
      return true;
    }
    if (!d || assignment.slots.some((s) => d.holders[s] !== null)) {
      // Unknown device or slots we believed taken: remember the lease, resync on next dispatch.
      this.leases.set(leaseId, { appId, slots: assignment.slots.length, deadline, grantedAt });
      return false;
    }
    const info: LeaseInfo = { appId, slots: assignment.slots.length, deadline, grantedAt };
    this.leases.set(leaseId, info);
    this.placed.set(leaseId, d);
    for (const s of assignment.slots) d.holders[s] = leaseId;
    this.addFree(d, -assignment.slots.length);
    this.countLease(info, d, +1);
    this.refresh(d);
    return true;
  }

  /** Devices and leases this view holds (what a forecast would copy). */
  get size(): number {
    return this.devices.size + this.leases.size;
  }

  /**
   * Shared devices in the order `choose` breaks ties among equally free ones: the order each
   * entered its free-slot count. It depends on the history of grants and releases, so a copy
   * made to play the schedule forward (a forecast) takes it over with `followTieOrder`.
   */
  tieOrder(): string[] {
    const keys: string[] = [];
    for (const set of this.byFree.values()) for (const d of set) keys.push(d.key);
    return keys;
  }

  /** Break ties as `keys` (another board's tieOrder) does, from the next rebuild from a pool on. */
  followTieOrder(keys: readonly string[]): void {
    this.tiesAs = new Map(keys.map((k, i) => [k, i]));
  }

  private orderTies(rank: ReadonlyMap<string, number>): void {
    const at = (d: DeviceTimeline): number => rank.get(d.key) ?? Number.POSITIVE_INFINITY;
    for (const [free, set] of this.byFree) this.byFree.set(free, new Set([...set].sort((a, b) => at(a) - at(b))));
  }

  /** The pool this view mirrors (null until the first dispatch). */
  get pool(): Pool | null {
    return this.mirrored;
  }

  /** Every lease placed on a device, with what is known of it. */
  *placedLeases(): Generator<{ leaseId: string; info: LeaseInfo; device: DeviceTimeline }> {
    for (const [leaseId, device] of this.placed) {
      const info = this.leases.get(leaseId);
      if (info) yield { leaseId, info, device };
    }
  }

  /** Forgets a lease and frees its slots; returns what was known of it. */
  release(leaseId: string): LeaseInfo | null {
    const info = this.leases.get(leaseId);
    if (!info) return null;
    this.leases.delete(leaseId);
    const d = this.placed.get(leaseId);
    if (d) {
      this.placed.delete(leaseId);
      this.countLease(info, d, -1);
      let freed = 0;
      for (let i = 0; i < d.holders.length; i++) {
        if (d.holders[i] === leaseId) {
          d.holders[i] = null;
          freed++;
        }
      }
      this.addFree(d, freed);
      this.refresh(d);
    }
    return info;
  }

  deadlineOf(leaseId: string): number | null {
    return this.leases.get(leaseId)?.deadline ?? null;
  }

  /** Frees (delta > 0) or takes (delta < 0) slots of a device, in every count and index. */
  private addFree(d: DeviceTimeline, delta: number): void {
    if (!d.dedicated) {
      this.byFree.get(d.free)?.delete(d);
      this.bucket(d.free + delta).add(d);
    }
    d.free += delta;
    this.busySlots -= delta;
    const host = d.host;
    const was = host.freeSlots;
    host.freeSlots += delta;
    if (host.freeSlots === 0) this.open.delete(host.name);
    else if (was === 0) this.open.add(host.name);
  }

  /** Counts a placed lease's remaining work in its node's scope, and the shared one when on a shared device. */
  private countLease(info: LeaseInfo, d: DeviceTimeline, sign: 1 | -1): void {
    if (!d.dedicated) this.shared.countLease(info, sign);
    d.host.countLease(info, sign);
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
      (a, b) => readyBefore(a, b, s),
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
