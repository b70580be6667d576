import type { DeviceSpec, SlotAssignment } from "./pool.js";
import { Pool } from "./pool.js";
import type { Concurrency, Grant } from "./scheduler.js";
import type { PriorityRequest } from "./scheduler-lanes.js";
import { IndexedHeap } from "./scheduler-heap.js";
import type { HoldEstimates } from "./held-shares.js";
import type { SlotBoard } from "./scheduler-slots.js";

/** The scheduler a forecast drives: a fresh copy of the one forecast for (see PriorityScheduler.forecast). */
export interface ForecastQueue {
  /** Break ties among equally free devices as the scheduler forecast for does (SlotBoard.tieOrder). */
  followTieOrder(keys: readonly string[]): void;
  enqueue(request: PriorityRequest): void;
  onGranted(
    leaseId: string,
    appId: string | null,
    assignment: SlotAssignment,
    deadline: number,
    grantedAt?: number,
  ): void;
  onReleased(leaseId: string): void;
  remove(leaseId: string): boolean;
  dispatch(
    pool: Pool,
    concurrency: Concurrency,
    onGrant: (grant: Grant, request: PriorityRequest) => void,
    now: number,
  ): Grant[];
}

/** An active lease as the forecast starts from it. */
export interface ForecastLease {
  readonly leaseId: string;
  readonly appId: string | null;
  readonly node: string;
  readonly index: number;
  readonly slots: readonly number[];
  readonly deadline: number;
  readonly grantedAt: number | null;
  /** When it is expected to end (Infinity: never, as far as the forecast knows). */
  readonly endsAt: number;
}

export interface ForecastInput {
  readonly devices: readonly DeviceSpec[];
  /** The original's SlotBoard.tieOrder(). */
  readonly tieOrder: readonly string[];
  readonly leases: readonly ForecastLease[];
  /** The queued requests, in the order they were enqueued (so that ties break as they do now). */
  readonly queued: readonly PriorityRequest[];
  /** The engine's app counts and limits as they stand (read, never changed). */
  readonly concurrency: Concurrency;
  readonly now: number;
  /** Stop as soon as this request is granted (a trial's probe); null: go on until the queue empties. */
  readonly stopAt: string | null;
  /** When a request granted at `at` is expected to release its slots. */
  endOf(request: PriorityRequest, at: number): number;
}

interface End {
  readonly at: number;
  readonly leaseId: string;
  readonly appId: string | null;
  /** A queued request timing out (`giveUpAt`), not a lease ending; at the same instant, ends go first. */
  readonly giveUp: boolean;
  index: number;
}

/**
 * The schedule as it stands, played forward: every active lease ends when it is expected to,
 * every granted request holds its slots for its expected time, nothing else arrives, and a queued
 * request leaves the queue by a grant or at its `giveUpAt` (timed out, as the engine will; not the
 * request `stopAt`, whose own start is asked for however late). It runs a fresh copy of the scheduler (`fresh`) — the same
 * dispatch code, holds, backfill and app limits — on a copy of the pool, and returns when each
 * queued request would be granted (absent: never, under those assumptions). Pure.
 *
 * Cost: O((q + a) log(q + a)) for q queued requests and a active leases; the scheduler only runs
 * it while both are small (see SchedulerOptions.forecastLimit).
 */
export function forecastStarts(input: ForecastInput, fresh: () => ForecastQueue): Map<string, number> {
  const pool = new Pool(input.devices);
  const queue = fresh();
  const ends = new IndexedHeap<End>(
    // Leases ending at the same instant end in the order of their ids: a rule a test can follow.
    (a, b) => a.at < b.at || (a.at === b.at && (a.giveUp !== b.giveUp ? !a.giveUp : a.leaseId < b.leaseId)),
    (e) => e.index,
    (e, i) => {
      e.index = i;
    },
  );
  queue.followTieOrder(input.tieOrder);
  const delta = new Map<string, number>();
  const concurrency: Concurrency = {
    active: (app) => input.concurrency.active(app) + (delta.get(app) ?? 0),
    limit: (app) => input.concurrency.limit(app),
  };
  const count = (app: string | null, by: number): void => {
    if (app !== null) delta.set(app, (delta.get(app) ?? 0) + by);
  };
  for (const l of input.leases) {
    const assignment = pool.occupy(l.leaseId, l.node, l.index, l.slots);
    if (assignment === null) continue;
    queue.onGranted(l.leaseId, l.appId, assignment, l.deadline, ...(l.grantedAt === null ? [] : [l.grantedAt]));
    if (Number.isFinite(l.endsAt))
      ends.push({ at: l.endsAt, leaseId: l.leaseId, appId: l.appId, giveUp: false, index: -1 });
  }
  const queued = new Set<string>();
  for (const r of input.queued) {
    queue.enqueue(r);
    queued.add(r.leaseId);
    const at = r.giveUpAt ?? null;
    if (at !== null && Number.isFinite(at) && r.leaseId !== input.stopAt)
      ends.push({ at: Math.max(at, input.now), leaseId: r.leaseId, appId: r.appId, giveUp: true, index: -1 });
  }

  const starts = new Map<string, number>();
  let waiting = input.queued.length;
  const dispatch = (at: number): void => {
    queue.dispatch(
      pool,
      concurrency,
      (grant, request) => {
        starts.set(grant.leaseId, at);
        queued.delete(grant.leaseId);
        waiting--;
        count(request.appId, +1);
        const end = input.endOf(request, at);
        if (Number.isFinite(end))
          ends.push({ at: end, leaseId: grant.leaseId, appId: request.appId, giveUp: false, index: -1 });
      },
      at,
    );
  };
  dispatch(input.now);
  for (;;) {
    if (waiting === 0 || (input.stopAt !== null && starts.has(input.stopAt))) break;
    const e = ends.pop();
    if (e === undefined) break;
    // Each end or time-out is followed by a dispatch, as the engine dispatches after every change.
    if (e.giveUp) {
      if (!queued.delete(e.leaseId)) continue; // granted before it would have timed out
      queue.remove(e.leaseId);
      waiting--;
    } else {
      pool.release(e.leaseId);
      queue.onReleased(e.leaseId);
      count(e.appId, -1);
    }
    dispatch(e.at);
  }
  return starts;
}

/**
 * The forecast of a scheduler whose slot view is `board`: its leases end when `held` expects them
 * to, its grants hold their app's expected share. Null before the board has seen a pool.
 */
export function forecastFrom(
  board: SlotBoard,
  held: HoldEstimates,
  queued: readonly PriorityRequest[],
  concurrency: Concurrency,
  now: number,
  stopAt: string | null,
  fresh: () => ForecastQueue,
): Map<string, number> | null {
  const pool = board.pool;
  if (pool === null) return null;
  const leases: ForecastLease[] = [];
  for (const { leaseId, info, device } of board.placedLeases()) {
    const slots: number[] = [];
    device.holders.forEach((h, i) => {
      if (h === leaseId) slots.push(i);
    });
    leases.push({
      leaseId,
      appId: info.appId,
      node: device.node,
      index: device.index,
      slots,
      deadline: info.deadline,
      grantedAt: info.grantedAt,
      endsAt: held.expectedEnd(info.appId, info.grantedAt, info.deadline, now),
    });
  }
  return forecastStarts(
    {
      devices: pool.snapshot().map((d) => d.spec),
      tieOrder: board.tieOrder(),
      leases,
      queued,
      concurrency,
      now,
      stopAt,
      endOf: (request, at) => at + held.expectedHoldMs(request.appId, request.durationMs),
    },
    fresh,
  );
}
