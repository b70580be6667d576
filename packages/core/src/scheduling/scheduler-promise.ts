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
 * that bound while the work ahead of it, plus what the active leases may still hold, plus the
 * slot-time that may stand idle meanwhile, fits on the slots before P: `R + W + A ≤ C · (P − now)`.
 * A slot stands idle while a call waits only when a multi-slot head waits for its held device to
 * clear (at most `slots − 1` of that device's slots, until the head's promise: its idle allowance,
 * in A of every call behind it), and, for a multi-slot call, when too few slots are free on a device
 * for it or anyone queued (at most `slots − 1` per device: its own allowance, on the right as
 * `(C − devices · (slots − 1)) · (P − now)`). Time passing takes as much off both sides; a lease
 * ending early or a call ahead leaving takes off the left only. Only a call that arrives later and
 * ranks ahead adds to W, and only a call granted past it adds to R without taking from W — so either
 * may happen only when the call's slack covers its work and the idle time it may cause.
 *
 * Kept cheap by a running minimum in the queue's order-statistics treap: each promised call's
 * mark is `C · (P − base)` less its own allowance (base: a fixed time origin), and the treap keeps,
 * per subtree, the least `mark − load before it` (load: the slot-time and idle allowance of calls
 * some device could take); a call's slack is that less `C · (now − base) + R`, the same for every
 * call. So "whose promise would this break" is one O(log n) descent, however long the queue.
 */
export class PromiseMarks {
  /** The shared slot count C and device count the marks were made with (0: none yet). */
  private slots = 0;
  private devices = 0;
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
    if (request.rankKey !== undefined) {
      entry.promiseAt = request.promisedAt ?? null;
      entry.promiseFrom = request.promisedFrom ?? request.queuedAt;
    } else if (scope !== null && (request.node ?? null) === null) {
      // Promised where it ranks; when that would break a queued call's promise (its work and the
      // idle slot-time it may cause counted), it ranks just behind that call and is promised there.
      entry.promiseFrom = now;
      entry.promiseAt = this.promiseHere(entry, now, hold);
      for (;;) {
        const cost = loadOf(entry) + gapGrowthMs(hold, request.slots, now + request.durationMs);
        const broken = this.brokenBy(entry, scope, now, hold, cost);
        if (broken === null) break;
        const behind = newEntry(request, broken.key, ord, lane);
        behind.promiseFrom = now;
        behind.promiseAt = this.promiseHere(behind, now, hold);
        const grew = idleAllowanceMs(behind) > idleAllowanceMs(entry);
        entry = behind;
        // Every call behind it there has slack for the cost it was checked with; a later promise
        // costs them more idle time: check again from there.
        if (!grew) break;
      }
    } else if (scope !== null) {
      const cost = loadOf(entry) + gapGrowthMs(hold, request.slots, now + request.durationMs);
      const broken = this.brokenBy(entry, scope, now, hold, cost);
      if (broken !== null) entry = newEntry(request, broken.key, ord, lane);
    }
    const load = loadOf(entry);
    if (load !== entry.rankLoad) entry.rankLoad = load;
    const shared = board.scope(null);
    if (entry.promiseAt !== null && shared !== null) this.sync(shared);
    entry.rankMark = this.markOf(entry);
    return entry;
  }

  /** The promise an unbound call queued now at `entry`'s place gets (see promiseFor). */
  private promiseHere(entry: QueueEntry, now: number, hold: HeldDevice | null): number | null {
    const ahead = this.ranked.loadBefore(entry) + holdGapMs(this.eta.board, hold, now);
    return promiseFor(this.eta, entry, ahead, this.options, now);
  }

  /**
   * The mark of an entry: `C · (P − base)` less the idle slot-time it may see on other devices
   * while it waits (a multi-slot call: `slots − 1` per device, see promiseFor), or +Infinity when it has no promise (or no
   * slots are known yet).
   */
  markOf(entry: QueueEntry): number {
    if (entry.promiseAt === null || this.slots === 0) return Number.POSITIVE_INFINITY;
    this.base ??= entry.promiseAt;
    return this.slots * (entry.promiseAt - this.base) - this.devices * idleAllowanceMs(entry);
  }

  /**
   * After the devices changed: a call no device could take (bound to a node with none) is work
   * nobody waits behind, so its load is 0 (its slot-time and idle allowance once some device
   * could take it). O(n), and O(log n) more per call that changed.
   */
  refit(entries: Iterable<QueueEntry>): void {
    for (const e of entries) {
      const load = loadOf(e);
      if (e.rankLoad !== load) this.ranked.setLoad(e, load);
    }
  }

  /** Brings the marks in step with the scope's slot count: O(n) when it changed (devices came or went), else O(1). */
  sync(scope: SlotScope): void {
    if (scope.totalSlots === this.slots && scope.deviceCount === this.devices) return;
    this.slots = scope.totalSlots;
    this.devices = scope.deviceCount;
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
  private brokenBy(
    probe: QueueEntry,
    scope: SlotScope,
    now: number,
    hold: HeldDevice | null,
    cost: number,
  ): QueueEntry | null {
    if (!probe.lane.group.placeable) return null;
    this.sync(scope);
    return this.ranked.lastMarkBelowAfter(probe, cost + this.used(scope, now, holdGapMs(this.eta.board, hold, now)));
  }

  /**
   * Whether `entry` (queued) may backfill the held device `hold` now although it ends after the
   * device could free for the head (by the head's promise): its slot-time must fit in the slack of
   * every promised call ahead of it, which lose that slot-time. The calls behind it lose nothing
   * when the head is a promised multi-slot call (its idle allowance counts the held device's idle
   * time until its promise); else the idle time it adds there is charged to every promised call.
   * O(log n).
   */
  mayPass(entry: QueueEntry, now: number, hold: HeldDevice | null): boolean {
    const scope = promiseScope(this.eta.board, this.options);
    if (scope === null) return true;
    this.sync(scope);
    // With the head's idle allowance covering the held device, the calls behind the entry lose
    // nothing (its work leaves the work ahead of them as it joins the leases); those ahead lose it.
    const min = hold !== null && coveredByHead(hold) ? this.ranked.minMarkBefore(entry) : this.ranked.minMark;
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
  if (hold === null || hold.device.dedicated || !Number.isFinite(hold.at) || coveredByHead(hold)) return 0;
  return Math.max(0, hold.device.holders.length - slots) * Math.max(0, end - hold.at);
}

/**
 * Whether the idle slot-time of the held device is already in every promise: the head's own idle
 * allowance (idleAllowanceMs) counts it, in its own slack and in that of every call behind it.
 */
function coveredByHead(hold: HeldDevice): boolean {
  return hold.entry.promiseAt !== null && hold.entry.request.slots > 1;
}

/**
 * The slot-time the shared device held for the head may stand idle before the head can start
 * there: each of its slots from when it frees (its lease's deadline, or now) to the shadow time.
 * Calls behind the head cannot count on it: it is counted as busy, like a lease, in their promises
 * and slack. 0 without a hold.
 */
export function holdGapMs(board: SlotBoard, hold: HeldDevice | null, now: number): number {
  if (hold === null || hold.device.dedicated || !Number.isFinite(hold.at) || coveredByHead(hold)) return 0;
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
 * The slot-time a multi-slot call promised to start by `promiseAt` may leave idle on the device held
 * for it while it is the head and waits for that device to clear: fewer slots than it needs are
 * free there, so at most `slots − 1` of them, until its promise. Counted as work ahead by every
 * promised call behind it (docs/scheduling.md §5). 0 for a one-slot call or one without a promise.
 */
export function idleAllowanceMs(entry: QueueEntry): number {
  if (entry.promiseAt === null || entry.request.slots <= 1) return 0;
  return (entry.request.slots - 1) * Math.max(0, entry.promiseAt - entry.promiseFrom);
}

/** The load an entry adds to the work ahead of every call behind it: its slot-time and the idle time it may cause. */
export function loadOf(entry: QueueEntry): number {
  return entry.lane.group.placeable ? entry.rankWeight + idleAllowanceMs(entry) : 0;
}

/**
 * When a call queued now (`entry`, about to take its place; `workAheadMs` of work ahead of it there,
 * with the idle time the calls ahead may cause) is promised to start at the latest: its bound, plus
 * room for calls of higher classes arriving later to go ahead (`promiseRoomMs` per class below the
 * top). A multi-slot call's bound spreads that work over the slots less the `slots − 1` of each
 * device that may stand idle while it waits (too few to take it, and of no use to the calls left
 * behind it). Null when there is no bound (or the devices are too small for that).
 */
export function promiseFor(
  eta: EtaState,
  entry: QueueEntry,
  workAheadMs: number,
  options: SchedulerOptions,
  now: number,
): number | null {
  const request = entry.request;
  // Whether its app is at its limit is known for sure only at the next dispatch: the promise is
  // made without it (the bound `place` gives then covers the wait for one of the app's leases).
  const boundMs = boundEtaMs(eta, entry, workAheadMs, "node", now);
  if (boundMs === null) return null;
  const room = Math.max(0, options.promiseTopClass - request.priority) * options.promiseRoomMs;
  // With nothing ahead, a multi-slot call is the head: a device is held for it, clear by its bound
  // (no newcomer may go ahead of it: its slack is spent).
  if (request.slots === 1 || workAheadMs === 0) return now + boundMs + room;
  const scope = eta.board.scope(null) as SlotScope;
  const rate = scope.totalSlots - scope.deviceCount * (request.slots - 1);
  if (rate <= 0) return null;
  const spread = Math.ceil((scope.residualMs(now) + workAheadMs) / rate);
  return now + Math.max(boundMs, spread) + room;
}
