/** A GPU (or MIG slice) the pool can hand out, split into equal slots. */
export interface DeviceSpec {
  readonly node: string;
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly memoryMb: number;
  /** Slots this device is split into (2: `large` takes one half, `xlarge` both). */
  readonly slots: number;
  /**
   * Only for requests bound to this device's node (default false). A GPU host's agent keeps idle
   * workers on its GPUs that only it knows of, and a request made to the control plane directly
   * serves an app that is not on that host: an unbound request never goes on a dedicated device.
   */
  readonly dedicated?: boolean;
}

export interface SlotAssignment {
  readonly node: string;
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly slots: readonly number[];
}

interface DeviceState {
  readonly spec: DeviceSpec;
  /** Not dedicated: unbound requests may go on it too (then it is in the byFree index). */
  readonly shared: boolean;
  /** Lease id holding each slot, or null when free. */
  readonly holders: (string | null)[];
  free: number;
}

function deviceKey(node: string, index: number): string {
  return `${node}#${index}`;
}

/**
 * Slot occupancy of the whole pool. Shared (non-dedicated) devices are bucketed by free-slot count
 * so that finding the best fit for an unbound request costs O(slots per device), not O(devices),
 * however large the pool; dedicated devices are not in that index, since no unbound request may
 * go on them.
 *
 * A request may be bound to one node (a lease asked for through that node's agent): such calls
 * scan that node's devices instead, dedicated or not, which is as cheap, since a node has a
 * handful of GPUs.
 */
export class Pool {
  private readonly devices = new Map<string, DeviceState>();
  /** free-slot count → shared devices with exactly that many free slots, in insertion order. */
  private readonly byFree = new Map<number, Set<DeviceState>>();
  /** node → its devices, in the order they were added (the tie-break of a node-bound best fit). */
  private readonly byNode = new Map<string, DeviceState[]>();
  /** slots per device → how many shared devices have that many (to know the largest after a removal). */
  private readonly devicesOfSize = new Map<number, number>();
  private readonly leases = new Map<string, SlotAssignment>();
  /** Slots of the largest shared device (what an unbound request can ever get). */
  private maxSharedSlots = 0;
  private total = 0;
  private busy = 0;
  private shared = 0;
  private sharedBusy = 0;
  private version = 0;

  constructor(devices: readonly DeviceSpec[] = []) {
    for (const d of devices) this.addDevice(d);
  }

  /**
   * Changes whenever the set of devices does (addDevice, removeNode). A mirror of the pool, such
   * as the scheduler's slot view, compares it to notice a node swapped for one of the same size,
   * which leaves every slot count as it was.
   */
  get devicesVersion(): number {
    return this.version;
  }

  /** Adds a device, at construction or at any time later (a node's agent registering). */
  addDevice(spec: DeviceSpec): void {
    const key = deviceKey(spec.node, spec.index);
    if (this.devices.has(key)) throw new Error(`device ${key} already in the pool`);
    if (!Number.isInteger(spec.slots) || spec.slots < 1) throw new Error(`device ${key} must have at least one slot`);
    const shared = spec.dedicated !== true;
    const state: DeviceState = {
      spec,
      shared,
      holders: new Array<string | null>(spec.slots).fill(null),
      free: spec.slots,
    };
    this.devices.set(key, state);
    const onNode = this.byNode.get(spec.node);
    if (onNode) onNode.push(state);
    else this.byNode.set(spec.node, [state]);
    if (shared) {
      this.bucket(spec.slots).add(state);
      this.devicesOfSize.set(spec.slots, (this.devicesOfSize.get(spec.slots) ?? 0) + 1);
      this.maxSharedSlots = Math.max(this.maxSharedSlots, spec.slots);
      this.shared += spec.slots;
    }
    this.total += spec.slots;
    this.version++;
  }

  /** Removes a node's devices; returns the ids of leases that held slots on them. */
  removeNode(node: string): string[] {
    const onNode = this.byNode.get(node);
    if (!onNode) return [];
    this.byNode.delete(node);
    const evicted = new Set<string>();
    for (const state of onNode) {
      for (const holder of state.holders) if (holder !== null) evicted.add(holder);
      this.devices.delete(deviceKey(state.spec.node, state.spec.index));
      if (state.shared) {
        this.byFree.get(state.free)?.delete(state);
        const sameSize = (this.devicesOfSize.get(state.spec.slots) ?? 0) - 1;
        if (sameSize > 0) this.devicesOfSize.set(state.spec.slots, sameSize);
        else this.devicesOfSize.delete(state.spec.slots);
        this.shared -= state.spec.slots;
        this.sharedBusy -= state.spec.slots - state.free;
      }
      this.total -= state.spec.slots;
      this.busy -= state.spec.slots - state.free;
    }
    for (const id of evicted) this.leases.delete(id);
    this.maxSharedSlots = Math.max(0, ...this.devicesOfSize.keys());
    this.version++;
    return [...evicted];
  }

  /** Whether the node has devices in the pool. */
  hasNode(node: string): boolean {
    return this.byNode.has(node);
  }

  /** The nodes with devices in the pool, in the order they joined. */
  nodes(): string[] {
    return [...this.byNode.keys()];
  }

  /**
   * Whether some device a request bound to `node` may use (unbound: a shared one; bound: one of the
   * node's) could take `slots` right now.
   */
  fits(slots: number, node: string | null = null): boolean {
    return this.bestFit(slots, node) !== null;
  }

  /**
   * Whether any device the request may use (unbound: a shared one; bound: one of `node`'s) could
   * ever take `slots` (when all of it is free). False for an unbound request in a pool of
   * dedicated devices only.
   */
  couldEverFit(slots: number, node: string | null = null): boolean {
    if (slots < 1) return false;
    if (node === null) return slots <= this.maxSharedSlots;
    return this.byNode.get(node)?.some((d) => d.spec.slots >= slots) ?? false;
  }

  /**
   * Best fit: the device with the fewest free slots that still fits, so half-free GPUs fill up
   * first and whole GPUs stay whole for `xlarge` requests. With `node`, only that node's devices
   * (dedicated or not); without, only shared devices.
   */
  assign(leaseId: string, slots: number, node: string | null = null): SlotAssignment | null {
    if (this.leases.has(leaseId)) throw new Error(`lease ${leaseId} already holds slots`);
    const state = this.bestFit(slots, node);
    if (state === null) return null;
    const taken: number[] = [];
    for (let i = 0; i < state.holders.length && taken.length < slots; i++) {
      if (state.holders[i] === null) taken.push(i);
    }
    return this.take(leaseId, state, taken);
  }

  /** Restores a known assignment (recovery). False when the slots are gone or taken. */
  occupy(leaseId: string, node: string, index: number, slots: readonly number[]): SlotAssignment | null {
    const state = this.devices.get(deviceKey(node, index));
    if (!state || this.leases.has(leaseId)) return null;
    if (new Set(slots).size !== slots.length) return null;
    if (slots.some((s) => !Number.isInteger(s) || s < 0 || s >= state.holders.length || state.holders[s] !== null))
      return null;
    return this.take(leaseId, state, [...slots]);
  }

  private take(leaseId: string, state: DeviceState, slots: number[]): SlotAssignment {
    for (const s of slots) state.holders[s] = leaseId;
    if (state.shared) {
      this.byFree.get(state.free)?.delete(state);
      this.bucket(state.free - slots.length).add(state);
      this.sharedBusy += slots.length;
    }
    state.free -= slots.length;
    this.busy += slots.length;
    const a: SlotAssignment = {
      node: state.spec.node,
      index: state.spec.index,
      uuid: state.spec.uuid,
      name: state.spec.name,
      slots,
    };
    this.leases.set(leaseId, a);
    return a;
  }

  /** Frees the lease's slots; false if it held none (already released — releasing is idempotent). */
  release(leaseId: string): boolean {
    const a = this.leases.get(leaseId);
    if (!a) return false;
    this.leases.delete(leaseId);
    const state = this.devices.get(deviceKey(a.node, a.index));
    if (!state) return true;
    for (const s of a.slots) if (state.holders[s] === leaseId) state.holders[s] = null;
    if (state.shared) {
      this.byFree.get(state.free)?.delete(state);
      this.bucket(state.free + a.slots.length).add(state);
      this.sharedBusy -= a.slots.length;
    }
    state.free += a.slots.length;
    this.busy -= a.slots.length;
    return true;
  }

  assignmentOf(leaseId: string): SlotAssignment | null {
    return this.leases.get(leaseId) ?? null;
  }

  get totalSlots(): number {
    return this.total;
  }

  get busySlots(): number {
    return this.busy;
  }

  get freeSlots(): number {
    return this.total - this.busy;
  }

  /** Slots of the shared (non-dedicated) devices: those an unbound request may use. */
  get sharedSlots(): number {
    return this.shared;
  }

  /** Busy slots of the shared devices. */
  get sharedBusySlots(): number {
    return this.sharedBusy;
  }

  /** Free slots of the shared devices (an unbound request can only ever use these). */
  get sharedFreeSlots(): number {
    return this.shared - this.sharedBusy;
  }

  /** Every device with who holds each slot (for the admin view and tests). */
  snapshot(): { spec: DeviceSpec; holders: (string | null)[] }[] {
    return [...this.devices.values()].map((s) => ({ spec: s.spec, holders: [...s.holders] }));
  }

  /** The device best fit for `slots` (of `node`, when given; else shared), or null when none has room. */
  private bestFit(slots: number, node: string | null): DeviceState | null {
    if (node === null) {
      for (let free = slots; free <= this.maxSharedSlots; free++) {
        const set = this.byFree.get(free);
        if (set && set.size > 0) return set.values().next().value as DeviceState;
      }
      return null;
    }
    let best: DeviceState | null = null;
    for (const d of this.byNode.get(node) ?? []) if (d.free >= slots && (best === null || d.free < best.free)) best = d;
    return best;
  }

  private bucket(free: number): Set<DeviceState> {
    let set = this.byFree.get(free);
    if (!set) {
      set = new Set();
      this.byFree.set(free, set);
    }
    return set;
  }
}
