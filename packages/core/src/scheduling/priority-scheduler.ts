import type { Pool, SlotAssignment } from "./pool.js";
import type { Concurrency, Grant, QueuedRequest, WaitReason } from "./scheduler.js";
import { BoundWork } from "./scheduler-bound.js";
import type { PriorityRequest, QueueEntry } from "./scheduler-lanes.js";
import { LaneIndex, ranksBefore } from "./scheduler-lanes.js";
import { RankedSet } from "./scheduler-rank.js";
import { SlotBoard } from "./scheduler-slots.js";
import { atLimit, nextStep } from "./dispatch-step.js";
import type { HeldDevice, StepState } from "./dispatch-step.js";
import { HeldShares } from "./held-shares.js";
import { boundEtaMs } from "./scheduler-eta.js";
import type { EtaState } from "./scheduler-eta.js";
import { ExpectedWaits } from "./scheduler-expected.js";
import { PromiseMarks } from "./scheduler-promise.js";
import { DEFAULT_SCHEDULER_OPTIONS } from "./scheduler-types.js";
import type { Hold, QueuePlace, SchedulerOptions, Trial } from "./scheduler-types.js";

export type { PriorityRequest } from "./scheduler-lanes.js";
export type { Hold, QueuePlace, SchedulerOptions, Trial } from "./scheduler-types.js";
export { DEFAULT_SCHEDULER_OPTIONS, schedulerOptionsFor } from "./scheduler-types.js";

/**
 * The queue in front of the pool: priority classes with aging, quota-aware, backfilling,
 * with holds for an aged head, per-app concurrency limits, positions and ETAs. Pure: no clock,
 * no I/O — every time is passed in. Ordering and its math are in docs/scheduling.md.
 *
 * Contract with the engine (a drop-in for FifoScheduler, plus what it needs to know of time):
 * - `enqueue(request)` when a lease is admitted (or recovered) as queued; pass `quotaLeftShare`.
 * - `dispatch(pool, concurrency, onGrant, now)` after every change: admission, release, expiry,
 *   cancel, queue timeout, app limit change, device change. It grants through `pool.occupy`
 *   (it picks the device itself, so that held slots stay held) and calls `onGrant` for each
 *   grant, in order, before it looks at the next request; the engine counts the grant in
 *   `concurrency` there. A granted lease's deadline is taken to be `now + durationMs`.
 * - `onGranted(leaseId, appId, assignment, deadline)` for every lease that became active without
 *   this scheduler's dispatch (recovery after a restart), and whenever a deadline changes.
 * - `onReleased(leaseId, endedAt?)` whenever a lease's slots are freed (release, expiry, failure,
 *   node removal). Idempotent. With `endedAt` (a release or an expiry, not an eviction) the
 *   scheduler learns how much of its reservation the lease held, for expected ETAs.
 * - `appLimitChanged(appId)` when an app's max_concurrency changes.
 * - `remove(leaseId)` when a queued lease leaves the queue without a grant (cancel, timeout).
 * - `place(leaseId, now)` for the SSE `queued {position, reason, eta_s}` event: both ETAs, the
 *   bound and the expected one; O(log n) plus the forecast, once per change (see `place`).
 *
 * A request with `node` set is only ever placed on that node's devices; one without, only on
 * shared devices (not DeviceSpec.dedicated). A request no device it may use could ever take waits
 * (the engine decides whether to fail it) and blocks nobody (docs/scheduling.md §4).
 *
 * If the engine's reports and the pool disagree, it resyncs at the next dispatch (docs/scheduling.md §7).
 *
 * Cost: enqueue, remove, each grant, onGranted, onReleased and place are O(log n + log d) for n
 * queued requests and d devices, plus, per dispatch step, O(k) for each (size, node) group of
 * waiting requests bound to a node of k devices that has a free slot; `waiting()` is O(n).
 */
export class PriorityScheduler {
  readonly options: SchedulerOptions;
  private readonly entries = new Map<string, QueueEntry>();
  /** Every queued request in rank order, weighted by slot-milliseconds (positions and work ahead). */
  private readonly ranked = new RankedSet<QueueEntry>(ranksBefore);
  /** The queued calls' promises, kept in `ranked` (whose promise a newcomer or a grant would break). */
  private readonly marks: PromiseMarks;
  private readonly lanes = new LaneIndex((slots, node) => this.board.couldEverFit(slots, node));
  /** Node-bound requests in rank order, to leave other nodes' work out of their ETAs. */
  private readonly bound = new BoundWork();
  private readonly board = new SlotBoard();
  private readonly appLeases = new Map<string, Set<string>>();
  /** Apps whose limit may have been reached since the last dispatch without this scheduler seeing it. */
  private readonly recheck = new Set<string>();
  private currentHold: Hold | null = null;
  /** The device held for the head after the last dispatch (its idle slot-time counts against promises). */
  private heldDevice: HeldDevice | null = null;
  private ord = 0;
  private lastNow = Number.NEGATIVE_INFINITY; // the latest time told (enqueue makes promises at it)
  /** What each dispatch step, the ETAs and the expected waits (told of every change) look at. */
  private readonly steps: StepState;
  private readonly eta: EtaState;
  private readonly waits: ExpectedWaits;

  /** `held`: what calls hold, learnt at `onReleased`; hand it to the scheduler of a rebuild to keep what was learnt. */
  constructor(
    options: Partial<SchedulerOptions> = {},
    readonly held: HeldShares = new HeldShares(),
  ) {
    this.options = { ...DEFAULT_SCHEDULER_OPTIONS, ...options };
    if (!(this.options.agingStepMs > 0)) throw new Error("agingStepMs must be positive");
    if (!(this.options.holdAfterMs >= 0)) throw new Error("holdAfterMs must not be negative");
    if (!(Number.isInteger(this.options.shareSteps) && this.options.shareSteps >= 1))
      throw new Error("shareSteps must be a positive integer");
    this.steps = {
      lanes: this.lanes,
      board: this.board,
      holdAfterMs: this.options.holdAfterMs,
      mayPass: (entry, now, hold) => this.marks.mayPass(entry, now, hold),
    };
    this.eta = { board: this.board, bound: this.bound, appLeases: this.appLeases };
    this.marks = new PromiseMarks(this.ranked, this.eta, this.options);
    const fresh = (): PriorityScheduler => new PriorityScheduler(this.options, held);
    this.waits = new ExpectedWaits(this.eta, held, this.options, this.entries, fresh);
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Queues a request. Unless it carries a `rankKey` (a copy of a scheduler), it ranks by its own
   * key — or just behind the last queued call whose promise it would break by going ahead of it —
   * and, when unbound, is promised to start by the bound its place gives now (PromiseMarks.entryFor).
   */
  enqueue(request: PriorityRequest): void {
    if (this.entries.has(request.leaseId)) throw new Error(`lease ${request.leaseId} is already queued`);
    const node = request.node ?? null;
    const now = Math.max(this.lastNow, request.queuedAt);
    const lane = this.lanes.laneFor(request.appId, request.slots, node);
    const entry = this.marks.entryFor(request, lane, this.ord++, now, this.heldDevice);
    this.entries.set(request.leaseId, entry);
    this.ranked.insert(entry);
    this.lanes.add(entry);
    if (node !== null) this.bound.add(entry, node);
    if (request.appId !== null) this.recheck.add(request.appId);
    this.waits.changed();
  }

  remove(leaseId: string): boolean {
    const entry = this.entries.get(leaseId);
    if (!entry) return false;
    this.waits.changed();
    this.entries.delete(leaseId);
    this.ranked.remove(entry);
    this.lanes.remove(entry);
    const node = entry.lane.group.node;
    if (node !== null) this.bound.remove(entry, node);
    return true;
  }

  has(leaseId: string): boolean {
    return this.entries.has(leaseId);
  }

  /** 1-based place in the priority order (the order requests are considered in), or null. O(log n). */
  position(leaseId: string): number | null {
    const entry = this.entries.get(leaseId);
    if (!entry) return null;
    return (this.ranked.rank(entry)?.before ?? 0) + 1;
  }

  reason(leaseId: string): WaitReason | null {
    const entry = this.entries.get(leaseId);
    if (!entry) return null;
    return this.reasonOf(entry.request);
  }

  /**
   * Position, reason and two ETAs (docs/scheduling.md §5). `etaMs`, the bound: the slot-time of the
   * active leases to their deadlines and of the requests ahead for their whole durations, spread
   * over the slots the request may use (a node's for a bound request; the shared ones otherwise);
   * a multi-slot request also waits for one device to clear, one held back by its app's limit for
   * one of the app's leases to end. For an unbound request, never earlier than what it was
   * promised when queued (see scheduler-promise.ts). Null when there are no slots or deadlines are
   * unknown. `expectedMs`: from what calls actually hold — while the queue and pool are small
   * (`forecastLimit`) the scheduler played forward on a copy (`forecast.ts`), beyond, the bound's
   * formula with expected holds (one forecast per change, see ExpectedWaits); never above `etaMs`.
   */
  place(leaseId: string, now: number): QueuePlace | null {
    const entry = this.entries.get(leaseId);
    return entry === undefined ? null : this.placeOf(entry, now, false);
  }

  /** See `place`; `probe`: a trial's entry (its forecast stops once it is granted, and is not kept). */
  private placeOf(entry: QueueEntry, now: number, probe: boolean): QueuePlace | null {
    this.seen(now);
    const rank = this.ranked.rank(entry);
    if (rank === null) return null;
    const reason = this.reasonOf(entry.request);
    const boundMs = boundEtaMs(this.eta, entry, rank.weightBefore, reason, now);
    const expectedMs = boundMs === null ? null : this.waits.of(entry, rank.weightBefore, boundMs, now, probe);
    // What was promised, and a forecast later than the formula (a multi-slot call, an app at its limit), raise the bound.
    const promised = entry.promiseAt === null || boundMs === null ? boundMs : Math.max(boundMs, entry.promiseAt - now);
    const etaMs = promised === null || expectedMs === null ? promised : Math.max(promised, expectedMs);
    const place = { position: rank.before + 1, reason, etaMs, expectedMs };
    const soonestMs = probe ? this.waits.soonestOf(entry, rank.weightBefore, boundMs, expectedMs, now) : null;
    return soonestMs === null ? place : { ...place, soonestMs };
  }

  /** Queued requests in priority order with their place and why they wait. O(n). */
  *waiting(): Generator<{ request: PriorityRequest; position: number; reason: WaitReason }> {
    let position = 1;
    for (const e of this.ranked.values())
      yield { request: e.request, position: position++, reason: this.reasonOf(e.request) };
  }

  /** For a copy that plays this scheduler's schedule forward: break device ties as `keys` order them. */
  followTieOrder = (keys: readonly string[]): void => this.board.followTieOrder(keys);

  /** The hold in force after the last dispatch, if any. */
  hold = (): Hold | null => this.currentHold;

  /**
   * A lease became active without this scheduler's dispatch (recovery), or its deadline changed.
   * `grantedAt`, when known, makes its expected end better informed (see HeldShares.expectedEnd).
   */
  onGranted(
    leaseId: string,
    appId: string | null,
    assignment: SlotAssignment,
    deadline: number,
    grantedAt?: number,
  ): void {
    this.waits.changed();
    this.board.occupy(leaseId, appId, assignment, deadline, grantedAt ?? null);
    if (appId !== null) {
      this.appSet(appId).add(leaseId);
      this.recheck.add(appId);
    }
  }

  /**
   * A lease's slots were freed. Idempotent. `endedAt`: when it was released or expired — then the
   * share of its duration it held is learnt (leave it out for an eviction, which says nothing of
   * what the call needed).
   */
  onReleased(leaseId: string, endedAt?: number): void {
    const gone = this.board.release(leaseId);
    if (!gone) return;
    this.waits.changed();
    if (endedAt !== undefined && gone.grantedAt !== null && Number.isFinite(gone.deadline))
      this.held.learn(gone.appId, endedAt - gone.grantedAt, gone.deadline - gone.grantedAt);
    this.forgetActive(leaseId, gone.appId);
  }

  /** The app's concurrency limit changed: re-examine its waiting requests at the next dispatch. */
  appLimitChanged(appId: string): void {
    this.waits.changed();
    this.lanes.unpark(appId);
    this.recheck.add(appId);
  }

  /**
   * A request that arrives while nothing waits: placed at once if it may run now — on the very
   * slots `enqueue` then `dispatch` would give it — without going through the queue's structures
   * (the common case on a pool with free slots). Null when it must wait, when anything else
   * waits, or when the scheduler's view of the pool is out of date: then enqueue it and dispatch.
   */
  grantNow(request: PriorityRequest, pool: Pool, concurrency: Concurrency, now: number): Grant | null {
    this.seen(now);
    if (this.entries.size > 0 || atLimit(concurrency, request.appId) || !this.board.inStepWith(pool)) return null;
    const node = request.node ?? null;
    // With nothing waiting there is no hold: the best fit anywhere the request may go, as dispatch.
    const chosen = this.board.fits(request.slots, null, node) ? this.board.choose(request.slots, null, node) : null;
    if (chosen === null) return null;
    const assignment = pool.occupy(request.leaseId, chosen.device.node, chosen.device.index, chosen.slots);
    if (assignment === null) return null;
    this.waits.changed();
    this.board.occupy(request.leaseId, request.appId, assignment, now + request.durationMs, now);
    if (request.appId !== null) this.appSet(request.appId).add(request.leaseId);
    this.currentHold = null;
    this.heldDevice = null;
    return { leaseId: request.leaseId, assignment };
  }

  /**
   * Grants whatever can be granted now: the head of the queue if some device fits it, else
   * smaller requests behind it that fit (backfill) — except on the device held for an aged head,
   * which only takes requests that end before the head could start there. Work-conserving: when
   * it returns, no free slot could take any waiting request allowed on its device without
   * exceeding an app's limit or delaying the held head.
   */
  dispatch(
    pool: Pool,
    concurrency: Concurrency,
    onGrant: (grant: Grant, request: PriorityRequest) => void,
    now: number,
  ): Grant[] {
    this.seen(now);
    this.normalize(pool, concurrency);
    this.waits.concurrency = concurrency;
    const grants: Grant[] = [];
    let resynced = false;
    this.currentHold = null;
    this.heldDevice = null;
    for (;;) {
      const step = nextStep(this.steps, concurrency, now);
      if (step.kind === "none") {
        this.currentHold = step.hold;
        this.heldDevice = step.held;
        break;
      }
      const request = step.entry.request;
      const assignment = pool.occupy(
        request.leaseId,
        step.chosen.device.node,
        step.chosen.device.index,
        step.chosen.slots,
      );
      if (assignment === null) {
        // The pool changed behind the scheduler's back: rebuild the view once and start over.
        if (resynced) throw new Error(`pool refused slots the scheduler saw free for ${request.leaseId}`);
        resynced = true;
        this.resync(pool);
        continue;
      }
      this.remove(request.leaseId);
      this.board.occupy(request.leaseId, request.appId, assignment, now + request.durationMs, now);
      if (request.appId !== null) this.appSet(request.appId).add(request.leaseId);
      const grant: Grant = { leaseId: request.leaseId, assignment };
      grants.push(grant);
      onGrant(grant, request);
      if (atLimit(concurrency, request.appId)) this.lanes.park(request.appId as string);
    }
    return grants;
  }

  /**
   * What `enqueue(request)` and then `dispatch` would do with a request arriving now, without
   * doing it: the slots it would get at once, or its place in line. Exact when nothing waiting
   * could be placed before it arrived (the engine dispatches after every change). Only the
   * scheduler's own bookkeeping may change, as dispatch would change it (its view of the pool
   * resynced, apps at their limit parked).
   */
  trial(request: PriorityRequest, pool: Pool, concurrency: Concurrency, now: number): Trial {
    this.seen(now);
    const node = request.node ?? null;
    if (this.entries.size === 0 && !atLimit(concurrency, request.appId) && this.board.inStepWith(pool)) {
      // Nothing waits: where grantNow would put it (the common case, kept cheap).
      const chosen = this.board.fits(request.slots, null, node) ? this.board.choose(request.slots, null, node) : null;
      if (chosen !== null)
        return { kind: "now", node: chosen.device.node, index: chosen.device.index, slots: chosen.slots };
    }
    this.normalize(pool, concurrency);
    this.waits.concurrency = concurrency;
    const ord = this.ord;
    this.enqueue(request);
    try {
      if (request.appId !== null && atLimit(concurrency, request.appId)) this.lanes.park(request.appId);
      this.recheck.delete(request.appId ?? "");
      const step = nextStep(this.steps, concurrency, now);
      if (step.kind === "place" && step.entry.request.leaseId === request.leaseId) {
        return {
          kind: "now",
          node: step.chosen.device.node,
          index: step.chosen.device.index,
          slots: step.chosen.slots,
        };
      }
      return {
        kind: "wait",
        place: this.placeOf(this.entries.get(request.leaseId) as QueueEntry, now, true) as QueuePlace,
      };
    } finally {
      this.remove(request.leaseId);
      this.ord = ord;
    }
  }

  /** Brings the scheduler's bookkeeping up to date with the pool and the apps' limits (the start of every dispatch). */
  private normalize(pool: Pool, concurrency: Concurrency): void {
    if (!this.board.inStepWith(pool)) this.resync(pool);
    // Parked apps whose limit no longer holds (normally unparked by onReleased already; deleting
    // from a Set while iterating it is safe), then apps that may have reached theirs unseen.
    for (const app of this.lanes.parkedApps()) if (!atLimit(concurrency, app)) this.lanes.unpark(app);
    for (const app of this.recheck) if (atLimit(concurrency, app)) this.lanes.park(app);
    this.recheck.clear();
  }

  private seen(now: number): void {
    this.lastNow = Math.max(this.lastNow, now);
  }

  private reasonOf(request: QueuedRequest): WaitReason {
    return this.lanes.isParked(request.appId) ? "concurrency" : "node";
  }

  private resync(pool: Pool): void {
    this.waits.changed();
    for (const gone of this.board.syncFrom(pool)) this.forgetActive(gone.leaseId, gone.appId);
    this.lanes.refit(); // devices came or went: calls no device could take may fit now, or the reverse
    this.marks.refit(this.entries.values());
  }

  private forgetActive(leaseId: string, appId: string | null): void {
    if (appId === null) return;
    const set = this.appLeases.get(appId);
    if (set) {
      set.delete(leaseId);
      if (set.size === 0) this.appLeases.delete(appId);
    }
    // One of the app's leases ended: its requests may go again (re-parked if still at the limit).
    this.lanes.unpark(appId);
  }

  private appSet(appId: string): Set<string> {
    let set = this.appLeases.get(appId);
    if (!set) {
      set = new Set();
      this.appLeases.set(appId, set);
    }
    return set;
  }
}
