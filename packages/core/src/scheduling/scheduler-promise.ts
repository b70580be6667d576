import type { Lane, PriorityRequest, QueueEntry, RankKey } from "./scheduler-lanes.js";
import { newEntry, ranksBefore } from "./scheduler-lanes.js";
import type { RankedSet } from "./scheduler-rank.js";
import type { SlotBoard } from "./scheduler-slots.js";
import type { SlotScope } from "./slot-scopes.js";
import type { EtaState } from "./scheduler-eta.js";
import { boundEtaMs } from "./scheduler-eta.js";
import type { SchedulerOptions } from "./scheduler-types.js";

/**
 * Promises (docs/scheduling.md §5): a queued call told "you start by P" (its bound, eta_max) keeps
 * that bound only while the work ahead of it, plus what the active leases may still hold, fits on
 * the slots before P: `R + W ≤ C · (P − now)`. Time passing with every slot busy takes as much off
 * both sides; a lease ending early or a call ahead leaving takes off the left only. Only a call
 * that arrives later and ranks ahead adds to W — so a newcomer may rank ahead of a queued call only
 * when that call's slack `C · (P − now) − R − W` covers the newcomer's work.
 *
 * The last queued call (in rank order) the newcomer `probe` would break the promise of by ranking
 * where its key puts it, or null when it breaks none. The newcomer then ranks just behind that
 * call: every call behind it there has slack enough. Only work some device could take counts
 * (a call bound to a node with no devices never runs). O(n) over the queue.
 */
export function promiseBrokenBy(
  ranked: RankedSet<QueueEntry>,
  probe: QueueEntry,
  scope: SlotScope,
  now: number,
): QueueEntry | null {
  if (!probe.lane.group.placeable) return null;
  const work = probe.rankWeight;
  const slots = scope.totalSlots;
  const residual = scope.residualMs(now);
  let ahead = 0;
  let last: QueueEntry | null = null;
  for (const e of ranked.values()) {
    if (e.promiseAt !== null && ranksBefore(probe, e) && slots * (e.promiseAt - now) - residual - ahead < work)
      last = e;
    if (e.lane.group.placeable) ahead += e.rankWeight;
  }
  return last;
}

/** Slot-milliseconds of the queued calls ranked before `entry` that some device could take. O(n). */
export function placeableWorkBefore(ranked: RankedSet<QueueEntry>, entry: QueueEntry): number {
  let ahead = 0;
  for (const e of ranked.values()) {
    if (e === entry || !ranksBefore(e, entry)) break;
    if (e.lane.group.placeable) ahead += e.rankWeight;
  }
  return ahead;
}

/**
 * The shared devices' scope, when promises can be kept from it: there are slots, every deadline
 * is known, and the queue and pool are small enough to scan (`forecastLimit`, as for forecasts);
 * else null (no promise beyond the bound is made, and newcomers rank by their own key).
 */
export function promiseScope(board: SlotBoard, queued: number, options: SchedulerOptions): SlotScope | null {
  if (!options.keepPromises || queued + board.size > options.forecastLimit) return null;
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
 * The key a request queued now ranks by: its own, or — when going where its own puts it would
 * break a queued call's promise (`scope` non-null: promises are kept) — that call's key, so that
 * it ranks just behind it (`ord`, its enqueue order, breaks the tie).
 */
export function rankKeyFor(
  ranked: RankedSet<QueueEntry>,
  request: PriorityRequest,
  ord: number,
  lane: Lane,
  options: SchedulerOptions,
  scope: SlotScope | null,
  now: number,
): RankKey {
  const own = ownRankKey(request, options);
  if (scope === null) return own;
  const broken = promiseBrokenBy(ranked, newEntry(request, own, ord, lane), scope, now);
  return broken === null ? own : broken.key;
}

/**
 * When a call queued now (`entry`, in the queue, `workAheadMs` of placeable work ahead of it) is promised to start
 * at the latest: its bound, plus room for calls of higher classes arriving later to go ahead
 * (`promiseRoomMs` per class below the top), plus, for a multi-slot call with work ahead of it,
 * the time until some device could clear for it (the work ahead may leave a device partly busy,
 * so the bound's even spread over all slots is too early for it). Null when there is no bound.
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
  // With nothing ahead, a multi-slot call is the head: a device is held for it, clear by its bound.
  const soonest = request.slots > 1 && workAheadMs > 0 ? eta.board.soonest(request.slots, null) : null;
  const clear = soonest === null || !Number.isFinite(soonest.at) ? 0 : Math.max(0, soonest.at - now);
  return now + boundMs + room + clear;
}
