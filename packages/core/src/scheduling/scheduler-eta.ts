import type { WaitReason } from "./scheduler.js";
import type { BoundWork } from "./scheduler-bound.js";
import type { HoldEstimates } from "./held-shares.js";
import type { QueueEntry } from "./scheduler-lanes.js";
import type { SlotBoard } from "./scheduler-slots.js";
import { mayUse } from "./slot-scopes.js";

/** What the ETAs of a queued request are computed from: the scheduler's slot view and work ahead. */
export interface EtaState {
  readonly board: SlotBoard;
  readonly bound: BoundWork;
  /** Each app's active leases. */
  readonly appLeases: ReadonlyMap<string, ReadonlySet<string>>;
}

/**
 * The bound (see PriorityScheduler.place): the slot-time of the leases running to their deadlines
 * and of the requests ahead for their whole durations, spread over the slots the request may use;
 * then, for a multi-slot request, at least until one device can clear, and for one held back by
 * its app's limit, at least until one of the app's leases reaches its deadline. Null when unknown.
 */
export function boundEtaMs(
  s: EtaState,
  entry: QueueEntry,
  workAheadMs: number,
  reason: WaitReason,
  now: number,
): number | null {
  const request = entry.request;
  const node = request.node ?? null;
  const scope = s.board.scope(node);
  if (scope === null || scope.totalSlots === 0 || scope.unknownDeadlines) return null;
  const ahead = node === null ? workAheadMs : workAheadMs - s.bound.otherNodesBefore(entry, node);
  let eta = (scope.residualMs(now) + ahead) / scope.totalSlots;
  if (request.slots > 1) {
    const soonest = s.board.soonest(request.slots, node);
    if (soonest === null || soonest.at === Number.POSITIVE_INFINITY) return null;
    eta = Math.max(eta, soonest.at - now);
  }
  if (reason === "concurrency" && request.appId !== null) {
    let earliest = Number.POSITIVE_INFINITY;
    for (const id of s.appLeases.get(request.appId) ?? [])
      earliest = Math.min(earliest, s.board.deadlineOf(id) ?? Number.POSITIVE_INFINITY);
    if (!Number.isFinite(earliest)) return null;
    eta = Math.max(eta, earliest - now);
  }
  return Math.max(0, Math.ceil(eta));
}

/**
 * The expected wait of a long queue or a large pool, where the forecast would cost too much: the
 * bound's formula with what calls are expected to hold instead of what they reserved — each
 * active lease until its expected end, the work ahead times the pool's expected share. Never
 * above the bound. Cost O(a) for the a active leases (the engine asks once per change: cache it).
 */
export function fluidExpectedMs(
  s: EtaState,
  held: HoldEstimates,
  entry: QueueEntry,
  workAheadMs: number,
  boundMs: number,
  now: number,
): number {
  const node = entry.request.node ?? null;
  const scope = s.board.scope(node);
  if (scope === null || scope.totalSlots === 0) return boundMs;
  let residual = 0;
  for (const { info, device } of s.board.placedLeases()) {
    if (!mayUse(node, device)) continue;
    residual += info.slots * (held.expectedEnd(info.appId, info.grantedAt, info.deadline, now) - now);
  }
  const ahead = node === null ? workAheadMs : workAheadMs - s.bound.otherNodesBefore(entry, node);
  const expected = Math.ceil((residual + ahead * held.share(null)) / scope.totalSlots);
  return Math.min(boundMs, Math.max(0, expected));
}
