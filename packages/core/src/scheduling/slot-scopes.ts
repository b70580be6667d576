/** One GPU as the scheduler sees it: who holds each slot and when each slot frees at the latest. */
export interface DeviceTimeline {
  readonly key: string;
  readonly node: string;
  readonly index: number;
  /**
   * Only for requests bound to its node (DeviceSpec.dedicated): then it is in none of the
   * pool-wide indexes, which serve unbound requests, nor in the shared scope.
   */
  readonly dedicated: boolean;
  /** The node's slots (its part of the residual work, for ETAs of requests bound to it). */
  readonly host: NodeSlots;
  readonly holders: (string | null)[];
  free: number;
  /** readyAt[s]: the time this device will have s free slots if every lease runs to its deadline (-Infinity: now). */
  readonly readyAt: number[];
  /** Place of this device in the readiness heap of each slot count (internal to SlotBoard). */
  readonly heapIndex: number[];
}

export interface LeaseInfo {
  readonly appId: string | null;
  readonly slots: number;
  deadline: number;
  /** When it was granted (null: not known, e.g. a lease found in the pool on a resync). */
  grantedAt: number | null;
}

/** Whether a request bound to `node` (null: unbound) may go on `d`: its node's, or any shared one. */
export function mayUse(node: string | null, d: DeviceTimeline): boolean {
  return node === null ? !d.dedicated : node === d.node;
}

/**
 * The slots of some devices — the shared (non-dedicated) ones, or one node's — and the work the
 * leases on them may still do: what an ETA is computed from. A request only ever runs on the
 * devices of its scope (an unbound one on shared devices, a bound one on its node's), so its ETA
 * is computed from that scope alone.
 */
export class SlotScope {
  totalSlots = 0;
  /** Slots of the largest device. */
  maxSlots = 0;
  /** Devices (a multi-slot call's promise counts the slots each may leave idle, docs/scheduling.md §5). */
  deviceCount = 0;
  /** Σ slots × deadline and Σ slots over placed leases with a known deadline (for the residual work). */
  private slotDeadlineSum = 0;
  private slotsWithDeadline = 0;
  private leasesWithoutDeadline = 0;

  addDevice(slots: number): void {
    this.totalSlots += slots;
    this.deviceCount++;
  }

  /** Slot-milliseconds the active leases may still hold, if each runs to its deadline. */
  residualMs(now: number): number {
    return Math.max(0, this.slotDeadlineSum - now * this.slotsWithDeadline);
  }

  /** Whether some lease on the slots has no known deadline (then no ETA can be promised). */
  get unknownDeadlines(): boolean {
    return this.leasesWithoutDeadline > 0;
  }

  /** Adds (sign 1) or takes away (-1) a placed lease's remaining work; SlotBoard's bookkeeping. */
  countLease(info: LeaseInfo, sign: 1 | -1): void {
    if (!Number.isFinite(info.deadline)) {
      this.leasesWithoutDeadline += sign;
      return;
    }
    this.slotDeadlineSum += sign * info.slots * info.deadline;
    this.slotsWithDeadline += sign * info.slots;
  }
}

/** One node's scope and its devices, in the pool's order (a node has a handful: scanned, not indexed). */
export class NodeSlots extends SlotScope {
  readonly devices: DeviceTimeline[] = [];
  freeSlots = 0;

  constructor(readonly name: string) {
    super();
  }
}
