import type { Concurrency } from "./scheduler.js";
import type { LaneGroup, LaneIndex, QueueEntry } from "./scheduler-lanes.js";
import { bestOf, ranksBefore, shortestOf } from "./scheduler-lanes.js";
import type { DeviceTimeline, SlotBoard } from "./scheduler-slots.js";
import { mayUse } from "./scheduler-slots.js";
import type { Hold } from "./scheduler-types.js";

/** What one dispatch step looks at: the scheduler's lanes and its view of the slots. */
export interface StepState {
  readonly lanes: LaneIndex;
  readonly board: SlotBoard;
  /** A head of the queue that has waited this long gets slots held for it. */
  readonly holdAfterMs: number;
  /** Whether this queued entry may backfill the held device past when it frees and keep every promise (scheduler-promise.ts). */
  readonly mayPass: (entry: QueueEntry, now: number, hold: HeldDevice) => boolean;
}

/**
 * A device held for the head: calls that end by `at` (when it will have room for the head if every
 * lease runs to its deadline) backfill there; for a head with a promise, calls that end by `until`
 * (its promise) too, when that breaks no promise.
 */
export interface HeldDevice {
  readonly entry: QueueEntry;
  readonly device: DeviceTimeline;
  readonly at: number;
  readonly until: number;
}

export type Step =
  | { readonly kind: "place"; readonly entry: QueueEntry; readonly chosen: { device: DeviceTimeline; slots: number[] } }
  | { readonly kind: "none"; readonly hold: Hold | null; readonly held: HeldDevice | null };

/**
 * One step of dispatch: the request it places next and the slots it gives it, or, when nothing
 * can be placed, the hold it leaves for an aged head. Parks apps at their limit on the way.
 */
export function nextStep(s: StepState, concurrency: Concurrency, now: number): Step {
  for (;;) {
    const head = s.lanes.head();
    if (head === null) return { kind: "none", hold: null, held: null };
    if (atLimit(concurrency, head.lane.app)) {
      s.lanes.park(head.lane.app as string);
      continue;
    }
    const headNode = head.lane.group.node;
    let hold: HeldDevice | null = null;
    if (!s.board.fits(head.request.slots, null, headNode)) {
      // An aged head gets a device held until it can start there; a head with a promise gets one
      // held too, where calls that end by its promise may still backfill if they break no other promise.
      const aged = now - head.request.queuedAt >= s.holdAfterMs;
      if (aged || head.promiseAt !== null) {
        const soonest = s.board.soonest(head.request.slots, headNode);
        if (soonest !== null && !givesUpFirst(head, soonest.at)) {
          const until = aged || head.promiseAt === null ? soonest.at : Math.max(soonest.at, head.promiseAt);
          hold = { entry: head, device: soonest.device, at: soonest.at, until };
        }
      }
    }
    const entry = candidate(s, hold, now);
    if (entry === null) {
      return {
        kind: "none",
        hold: hold && {
          leaseId: hold.entry.request.leaseId,
          node: hold.device.node,
          index: hold.device.index,
          shadowAt: hold.at,
        },
        held: hold,
      };
    }
    if (atLimit(concurrency, entry.lane.app)) {
      s.lanes.park(entry.lane.app as string);
      continue;
    }
    const request = entry.request;
    const node = entry.lane.group.node;
    // A request that ends before the shadow time goes on the held device when it has room (and
    // may go there at all), leaving the other devices' slots to requests that may not use held ones.
    let chosen: { device: DeviceTimeline; slots: number[] } | null = null;
    if (hold !== null && mayUse(node, hold.device) && backfills(s, hold, entry, now)) {
      chosen = s.board.chooseOn(hold.device, request.slots);
    }
    chosen ??= s.board.choose(request.slots, hold?.device ?? null, node);
    if (chosen === null) throw new Error(`scheduler slot view out of order: no device for ${request.leaseId}`);
    return { kind: "place", entry, chosen };
  }
}

/**
 * Whether a head gives up before the device held for it could clear if every lease ran to its
 * deadline (`at`), and its promise (if any) is later than that: holding the device would keep slots
 * idle for a call that will most likely time out first, and break no promise by not doing so. It
 * stays the head; should leases end early enough, the device is held for it again.
 */
function givesUpFirst(head: QueueEntry, at: number): boolean {
  const giveUpAt = head.request.giveUpAt ?? null;
  if (giveUpAt === null || giveUpAt >= at) return false;
  return head.promiseAt === null || head.promiseAt > giveUpAt;
}

/**
 * The best-ranked request that may be placed now (on a free device it may use, or within the
 * hold's shadow). Bound groups are only looked at for nodes with a free slot: in a busy pool
 * that is the node a lease just left, however many nodes have requests waiting.
 */
function candidate(s: StepState, hold: HeldDevice | null, now: number): QueueEntry | null {
  let best: QueueEntry | null = null;
  const consider = (group: LaneGroup): void => {
    const picked = pick(s, group, hold, now);
    if (picked !== undefined && (best === null || ranksBefore(picked, best))) best = picked;
  };
  for (const group of s.lanes.unbound) consider(group);
  const bound = s.lanes.bound;
  const open = s.board.nodesWithFreeSlots;
  // Walk the smaller of the two sets, looking each node up in the other.
  if (open.size < bound.size) {
    for (const node of open) for (const group of bound.get(node) ?? []) consider(group);
  } else {
    for (const [node, groups] of bound) if (open.has(node)) for (const group of groups) consider(group);
  }
  return best;
}

/** The best request of `group` that may be placed now, if any. */
function pick(s: StepState, group: LaneGroup, hold: HeldDevice | null, now: number): QueueEntry | undefined {
  if (s.board.fits(group.slots, hold?.device ?? null, group.node)) return bestOf(group);
  if (hold !== null && hold.device.free >= group.slots && mayUse(group.node, hold.device)) {
    // EASY backfill on the held device: only a request that ends before the head's shadow
    // time. The shortest one of this group is the one most likely to; if it does not, none does.
    const shortest = shortestOf(group);
    if (backfills(s, hold, shortest, now)) return shortest;
  }
  return undefined;
}

/**
 * Whether `entry` may go on the held device now: it ends by the time the device will have room for
 * the head (slot-time the hold would leave idle); or it ends by the head's promise and every
 * promise's slack covers its slot-time and the idle time it adds there (see scheduler-promise.ts).
 */
function backfills(s: StepState, hold: HeldDevice, entry: QueueEntry, now: number): boolean {
  const end = now + entry.request.durationMs;
  return end <= hold.at || (end <= hold.until && s.mayPass(entry, now, hold));
}

export function atLimit(concurrency: Concurrency, appId: string | null): boolean {
  if (appId === null) return false;
  const limit = concurrency.limit(appId);
  return limit !== null && concurrency.active(appId) >= limit;
}
