import type { Lane, PriorityRequest, QueueEntry, RankKey } from "./scheduler-lanes.js";
import { newEntry } from "./scheduler-lanes.js";
import type { RankedSet } from "./scheduler-rank.js";
import type { SlotBoard } from "./scheduler-slots.js";
import type { HeldDevice } from "./dispatch-step.js";
import type { SlotScope } from "./slot-scopes.js";
import type { EtaState } from "./scheduler-eta.js";
import { boundEtaMs } from "./scheduler-eta.js";
import type { SchedulerOptions } from "./scheduler-types.js";

/**
 * Promises (docs/scheduling.md §5): a queued call told "you start by P" (its bound, eta_max) keeps
 * that bound only while the work ahead of it, plus what the active leases may still hold, fits on
 * the slots before P: `R + W ≤ C · (P − now)`. Time passing with every slot busy takes as much off
 * both sides; a lease ending early or a call ahead leaving takes off the left only. Only a call
 * that arrives later and ranks ahead adds to W, and only a call granted past it adds to R without
 * taking from W — so either may happen only when the call's slack `C · (P − now) − R − W` covers
 * its work.
 *
 * Kept cheap by a running minimum in the queue's order-statistics treap: each promised call's
 * mark is `C · (P − base)` (base: a fixed time origin), and the treap keeps, per subtree, the least
 * `mark − work before it` (of calls some device could take); a call's slack is that less `C · (now − base) + R`, the same for
 * every call. So "whose promise would this break" is one O(log n) descent, however long the queue.
 */
export class PromiseMarks {
  /** The shared slot count C the marks were made with (0: none yet). */
  private slots = 0;
  private base: number | null = null;

  constructor(
    private readonly ranked: RankedSet<QueueEntry>,
    private readonly eta: EtaState,
    private readonly options: SchedulerOptions,
  ) {}

  /**
   * The entry a request queued now takes (`hold`: the device held for the head after the last
   * dispatch). Unless it carries a `rankKey` (a copy of a scheduler), its own key — or, when ranking
   * there would break a queued call's promise, that call's key: it then ranks just behind it
   * (enqueue order breaks the tie). An unbound one is promised to start by the bound its place gives
   * now: the work ahead of it there and the slot-time the held device may stand idle.
   */
  entryFor(request: PriorityRequest, lane: Lane, ord: number, now: number, hold: HeldDevice | null): QueueEntry {
    const board = this.eta.board;
    const scope = request.rankKey === undefined ? promiseScope(board, this.options) : null;
    let entry = newEntry(request, request.rankKey ?? ownRankKey(request, this.options), ord, lane);
    if (scope !== null) {
      const broken = this.brokenBy(entry, scope, now, hold);
      if (broken !== null) entry = newEntry(request, broken.key, ord, lane);
    }
    if (request.rankKey !== undefined) entry.promiseAt = request.promisedAt ?? null;
    else if (scope !== null && (request.node ?? null) === null) {
      const ahead = this.ranked.loadBefore(entry) + holdGapMs(board, hold, now);
      const longest = request.slots > 1 ? this.ranked.maxLengthBefore(entry) : 0;
      entry.promiseAt = promiseFor(this.eta, entry, ahead, longest, this.options, now);
    }
    const shared = board.scope(null);
    if (entry.promiseAt !== null && shared !== null) this.sync(shared);
    entry.rankMark = this.markOf(entry);
    return entry;
  }

  /** The mark of an entry: `C · (P − base)`, or +Infinity when it has no promise (or no slots are known yet). */
  markOf(entry: QueueEntry): number {
    if (entry.promiseAt === null || this.slots === 0) return Number.POSITIVE_INFINITY;
    this.base ??= entry.promiseAt;
    return this.slots * (entry.promiseAt - this.base);
  }

  /**
   * After the devices changed: a call no device could take (bound to a node with none) is work
   * nobody waits behind, so its load and length are 0 (its slot-time and duration once some device
   * could take it). O(n), and O(log n) more per call that changed.
   */
  refit(entries: Iterable<QueueEntry>): void {
    for (const e of entries) {
      const placeable = e.lane.group.placeable;
      if (e.rankLoad !== (placeable ? e.rankWeight : 0))
        this.ranked.setLoad(e, placeable ? e.rankWeight : 0, placeable ? e.request.durationMs : 0);
    }
  }

  /** Brings the marks in step with the scope's slot count: O(n) when it changed (devices came or went), else O(1). */
  sync(scope: SlotScope): void {
    if (scope.totalSlots === this.slots) return;
    this.slots = scope.totalSlots;
    this.ranked.remark((e) => this.markOf(e));
  }

  /**
   * `C · (now − base) + R + gap`: what a call's `mark − W` is compared with (its slack is the
   * difference); `gap`: the slot-time the device held for the head may stand idle (holdGapMs).
   */
  used(scope: SlotScope, now: number, gap: number): number {
    this.base ??= now;
    return this.slots * (now - this.base) + scope.residualMs(now) + gap;
  }

  /**
   * The last queued call (in rank order) the newcomer `probe` would break the promise of by ranking
   * where its key puts it, or null when it breaks none. The newcomer then ranks just behind that
   * call: every call behind it there has slack enough. O(log n).
   */
  private brokenBy(probe: QueueEntry, scope: SlotScope, now: number, hold: HeldDevice | null): QueueEntry | null {
    if (!probe.lane.group.placeable) return null;
    this.sync(scope);
    const cost = probe.rankWeight + gapGrowthMs(hold, probe.request.slots, now + probe.request.durationMs);
    return this.ranked.lastMarkBelowAfter(probe, cost + this.used(scope, now, holdGapMs(this.eta.board, hold, now)));
  }

  /**
   * Whether `entry` (queued) may backfill the held device `hold` now although it ends after the
   * device could free for the head (by the head's promise): its slot-time, and the idle time it
   * adds on the held device, must fit in the slack of every promised call — those ahead of it lose
   * that slot-time, those behind it wait for the head that much longer. O(1) beyond the gap.
   */
  mayPass(entry: QueueEntry, now: number, hold: HeldDevice | null): boolean {
    const scope = promiseScope(this.eta.board, this.options);
    if (scope === null) return true;
    this.sync(scope);
    const min = this.ranked.minMark;
    if (min === Number.POSITIVE_INFINITY) return true;
    const cost = entry.rankWeight + gapGrowthMs(hold, entry.request.slots, now + entry.request.durationMs);
    return min >= cost + this.used(scope, now, holdGapMs(this.eta.board, hold, now));
  }
}

/**
 * How much a call of `slots` slots ending at `end` could add to the held device's idle slot-time if
 * placed there: the rest of the device's slots stand idle past the shadow time until it ends.
 */
export function gapGrowthMs(hold: HeldDevice | null, slots: number, end: number): number {
  if (hold === null || hold.device.dedicated || !Number.isFinite(hold.at)) return 0;
  return Math.max(0, hold.device.holders.length - slots) * Math.max(0, end - hold.at);
}

/**
 * The slot-time the shared device held for the head may stand idle before the head can start
 * there: each of its slots from when it frees (its lease's deadline, or now) to the shadow time.
 * Calls behind the head cannot count on it: it is counted as busy, like a lease, in their promises
 * and slack. 0 without a hold.
 */
export function holdGapMs(board: SlotBoard, hold: HeldDevice | null, now: number): number {
  if (hold === null || hold.device.dedicated || !Number.isFinite(hold.at)) return 0;
  let gap = 0;
  for (const id of hold.device.holders) {
    const ready = id === null ? now : Math.max(now, board.deadlineOf(id) ?? Number.POSITIVE_INFINITY);
    if (ready < hold.at) gap += hold.at - ready;
  }
  return gap;
}

/**
 * The shared devices' scope, when promises can be kept from it: there are slots and every deadline
 * is known; else null (no promise beyond the bound is made, and newcomers rank by their own key).
 */
export function promiseScope(board: SlotBoard, options: SchedulerOptions): SlotScope | null {
  if (!options.keepPromises) return null;
  const scope = board.scope(null);
  return scope !== null && scope.totalSlots > 0 && !scope.unknownDeadlines ? scope : null;
}

/** The request's own rank key: its class aged by arrival, its duration, its quota-left step, its arrival. */
export function ownRankKey(request: PriorityRequest, options: SchedulerOptions): RankKey {
  const share = Math.min(1, Math.max(0, request.quotaLeftShare ?? 1));
  return {
    rankClass: request.priority - Math.floor(request.queuedAt / options.agingStepMs),
    shareStep: Math.floor(share * options.shareSteps),
    durationMs: request.durationMs,
    queuedAt: request.queuedAt,
    seq: request.seq,
  };
}

/**
 * When a call queued now (`entry`, about to take its place; `workAheadMs` of work ahead of it there,
 * with the held device's idle slot-time) is promised to start at the latest: its bound, plus room
 * for calls of higher classes arriving later to go ahead (`promiseRoomMs` per class below the top),
 * plus, for a multi-slot call with work ahead of it, the time a device may take to clear for it:
 * the later of when one can (every lease running to its deadline) and the longest call ahead of it
 * (`longestAheadMs`: the work ahead may all have started by the bound, leaving a device busy for
 * that long). Null when there is no bound.
 */
export function promiseFor(
  eta: EtaState,
  entry: QueueEntry,
  workAheadMs: number,
  longestAheadMs: number,
  options: SchedulerOptions,
  now: number,
): number | null {
  const request = entry.request;
  // Whether its app is at its limit is known for sure only at the next dispatch: the promise is
  // made without it (the bound `place` gives then covers the wait for one of the app's leases).
  const boundMs = boundEtaMs(eta, entry, workAheadMs, "node", now);
  if (boundMs === null) return null;
  const room = Math.max(0, options.promiseTopClass - request.priority) * options.promiseRoomMs;
  // With nothing ahead, a multi-slot call is the head: a device is held for it, clear by its bound.
  if (request.slots === 1 || workAheadMs === 0) return now + boundMs + room;
  const soonest = eta.board.soonest(request.slots, null);
  const clear = soonest === null || !Number.isFinite(soonest.at) ? 0 : Math.max(0, soonest.at - now);
  return now + boundMs + room + Math.max(clear, longestAheadMs);
}
