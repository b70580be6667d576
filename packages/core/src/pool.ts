/** A GPU (or MIG slice) the pool can hand out, split into equal slots. */
export interface DeviceSpec {
  readonly node: string;
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly memoryMb: number;
  /** Slots this device is split into (2: `large` takes one half, `xlarge` both). */
  readonly slots: number;
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
  /** Lease id holding each slot, or null when free. */
  readonly holders: (string | null)[];
  free: number;
}

function deviceKey(node: string, index: number): string {
  return `${node}#${index}`;
}

/**
 * Slot occupancy of the whole pool. Devices are bucketed by free-slot count so that finding the
 * best fit costs O(slots per device), not O(devices), however large the pool.
 */
export class Pool {
  private readonly devices = new Map<string, DeviceState>();
  /** free-slot count → devices with exactly that many free slots, in insertion order. */
  private readonly byFree = new Map<number, Set<string>>();
  private readonly leases = new Map<string, SlotAssignment>();
  private maxSlotsPerDevice = 0;
  private total = 0;
  private busy = 0;

  constructor(devices: readonly DeviceSpec[] = []) {
    for (const d of devices) this.addDevice(d);
  }

  addDevice(spec: DeviceSpec): void {
    const key = deviceKey(spec.node, spec.index);
    if (this.devices.has(key)) throw new Error(`device ${key} already in the pool`);
    if (!Number.isInteger(spec.slots) || spec.slots < 1) throw new Error(`device ${key} must have at least one slot`);
    this.devices.set(key, { spec, holders: new Array<string | null>(spec.slots).fill(null), free: spec.slots });
    this.bucket(spec.slots).add(key);
    this.maxSlotsPerDevice = Math.max(this.maxSlotsPerDevice, spec.slots);
    this.total += spec.slots;
  }

  /** Removes a node's devices; returns the ids of leases that held slots on them. */
  removeNode(node: string): string[] {
    const evicted = new Set<string>();
    for (const [key, state] of this.devices) {
      if (state.spec.node !== node) continue;
      for (const holder of state.holders) if (holder !== null) evicted.add(holder);
      this.byFree.get(state.free)?.delete(key);
      this.devices.delete(key);
      this.total -= state.spec.slots;
      this.busy -= state.spec.slots - state.free;
    }
    for (const id of evicted) this.leases.delete(id);
    this.maxSlotsPerDevice = 0;
    for (const state of this.devices.values()) this.maxSlotsPerDevice = Math.max(this.maxSlotsPerDevice, state.spec.slots);
    return [...evicted];
  }

  /** Whether some device could take `slots` right now. */
  fits(slots: number): boolean {
    for (let free = slots; free <= this.maxSlotsPerDevice; free++) {
      const set = this.byFree.get(free);
      if (set && set.size > 0) return true;
    }
    return false;
  }

  /** Whether any device could ever take `slots` (when all of it is free). */
  couldEverFit(slots: number): boolean {
    return slots >= 1 && slots <= this.maxSlotsPerDevice;
  }

  /**
   * Best fit: the device with the fewest free slots that still fits, so half-free GPUs fill up
   * first and whole GPUs stay whole for `xlarge` requests.
   */
  assign(leaseId: string, slots: number): SlotAssignment | null {
    if (this.leases.has(leaseId)) throw new Error(`lease ${leaseId} already holds slots`);
    for (let free = slots; free <= this.maxSlotsPerDevice; free++) {
      const set = this.byFree.get(free);
      if (!set || set.size === 0) continue;
      const key = set.values().next().value as string;
      const state = this.devices.get(key);
      if (!state) throw new Error(`pool index out of sync at ${key}`);
      const taken: number[] = [];
      for (let i = 0; i < state.holders.length && taken.length < slots; i++) {
        if (state.holders[i] === null) taken.push(i);
      }
      return this.take(leaseId, state, taken);
    }
    return null;
  }

  /** Restores a known assignment (recovery). False when the slots are gone or taken. */
  occupy(leaseId: string, node: string, index: number, slots: readonly number[]): SlotAssignment | null {
    const state = this.devices.get(deviceKey(node, index));
    if (!state || this.leases.has(leaseId)) return null;
    if (new Set(slots).size !== slots.length) return null;
    if (slots.some((s) => !Number.isInteger(s) || s < 0 || s >= state.holders.length || state.holders[s] !== null)) return null;
    return this.take(leaseId, state, [...slots]);
  }

  private take(leaseId: string, state: DeviceState, slots: number[]): SlotAssignment {
    const key = deviceKey(state.spec.node, state.spec.index);
    this.byFree.get(state.free)?.delete(key);
    for (const s of slots) state.holders[s] = leaseId;
    state.free -= slots.length;
    this.bucket(state.free).add(key);
    this.busy += slots.length;
    const a: SlotAssignment = { node: state.spec.node, index: state.spec.index, uuid: state.spec.uuid, name: state.spec.name, slots };
    this.leases.set(leaseId, a);
    return a;
  }

  /** Frees the lease's slots; false if it held none (already released — releasing is idempotent). */
  release(leaseId: string): boolean {
    const a = this.leases.get(leaseId);
    if (!a) return false;
    this.leases.delete(leaseId);
    const key = deviceKey(a.node, a.index);
    const state = this.devices.get(key);
    if (!state) return true;
    this.byFree.get(state.free)?.delete(key);
    for (const s of a.slots) if (state.holders[s] === leaseId) state.holders[s] = null;
    state.free += a.slots.length;
    this.bucket(state.free).add(key);
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

  /** Every device with who holds each slot (for the admin view and tests). */
  snapshot(): { spec: DeviceSpec; holders: (string | null)[] }[] {
    return [...this.devices.values()].map((s) => ({ spec: s.spec, holders: [...s.holders] }));
  }

  private bucket(free: number): Set<string> {
    let set = this.byFree.get(free);
    if (!set) {
      set = new Set();
      this.byFree.set(free, set);
    }
    return set;
  }
}
