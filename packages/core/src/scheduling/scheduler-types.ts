import { ANONYMOUS_TIER } from "../policy.js";
import type { Policy } from "../policy.js";
import type { WaitReason } from "./scheduler.js";

export interface SchedulerOptions {
  /** Every step waited raises a request by one priority class (a fixed grid of time, see docs/scheduling.md). */
  readonly agingStepMs: number;
  /** A head of the queue that has waited this long gets slots held for it (0: at once). */
  readonly holdAfterMs: number;
  /** Quota-left shares are compared in this many equal steps (20: 5 % steps). */
  readonly shareSteps: number;
  /**
   * Expected ETAs come from a forecast (the scheduler itself played forward on a copy) while the
   * queued requests, active leases and devices number at most this many together; beyond, from
   * the bound's formula with expected holds (see docs/scheduling.md §5).
   */
  readonly forecastLimit: number;
  /**
   * Keep the bound told at admission (eta_max) as a promise: a later call ranks ahead of a queued
   * one only when that leaves its promise intact (see docs/scheduling.md §5). False: rank by key alone.
   */
  readonly keepPromises: boolean;
  /**
   * Per priority class below `promiseTopClass`, the room a promise leaves for calls of higher
   * classes that arrive later to go ahead (a pro call may pass a queued anonymous one by this much
   * per class between them, without breaking its promise).
   */
  readonly promiseRoomMs: number;
  /** The highest priority class (a promise to a call of this class leaves no room). */
  readonly promiseTopClass: number;
  /**
   * A trial of a call of class `soonestUpToClass` or below also says how soon it may well start
   * (`QueuePlace.soonestMs`): the forecast with every call holding this quantile of the shares its
   * app was seen to hold; admission refuses such a call only when even that is too late (see
   * docs/scheduling.md §5). Null: never computed (every call is refused on its expected wait).
   */
  readonly soonestQuantile: number | null;
  readonly soonestUpToClass: number;
}

export const DEFAULT_SCHEDULER_OPTIONS: SchedulerOptions = {
  agingStepMs: 15_000,
  holdAfterMs: 15_000,
  shareSteps: 20,
  forecastLimit: 160,
  keepPromises: true,
  promiseRoomMs: 12_000,
  promiseTopClass: 3,
  soonestQuantile: 0.25,
  soonestUpToClass: 1,
};

/**
 * Aging step and hold threshold as a quarter of the queue timeout each, a promise's room per class
 * a fifth of it (12 s of a minute: on the November trace the one room, of a sixth to a quarter,
 * that keeps failures at or below FIFO's with utilization at least FIFO's at every load measured
 * and the tiers in order at the most loads, see docs/scheduling.md §8); the top class is the
 * policy's highest tier priority, and the classes told a soonest likely start (refused only when
 * even that is too late) go up to the anonymous tier's (when it names tiers).
 */
export function schedulerOptionsFor(
  policy: Pick<Policy, "queueTimeoutMs"> & Partial<Pick<Policy, "tiers">>,
  overrides: Partial<SchedulerOptions> = {},
): SchedulerOptions {
  const quarter = Math.max(1, Math.round(policy.queueTimeoutMs / 4));
  const room = Math.max(0, Math.round(policy.queueTimeoutMs / 5));
  const priorities = Object.values(policy.tiers ?? {}).map((t) => t.priority);
  const top = priorities.length > 0 ? Math.max(...priorities) : DEFAULT_SCHEDULER_OPTIONS.promiseTopClass;
  const anonymous = policy.tiers?.[ANONYMOUS_TIER]?.priority ?? DEFAULT_SCHEDULER_OPTIONS.soonestUpToClass;
  return {
    ...DEFAULT_SCHEDULER_OPTIONS,
    agingStepMs: quarter,
    holdAfterMs: quarter,
    promiseRoomMs: room,
    promiseTopClass: top,
    soonestUpToClass: anonymous,
    ...overrides,
  };
}

/** Slots held for an aged head of the queue that no device can take yet. */
export interface Hold {
  readonly leaseId: string;
  readonly node: string;
  readonly index: number;
  /** When the held device will have room for the head at the latest (its leases' deadlines). */
  readonly shadowAt: number;
}

/** What a request arriving now would get (see `PriorityScheduler.trial`). */
export type Trial =
  | { readonly kind: "now"; readonly node: string; readonly index: number; readonly slots: readonly number[] }
  | { readonly kind: "wait"; readonly place: QueuePlace };

/** Where a queued lease stands: its place in line, why it waits, and two estimates of the wait. */
export interface QueuePlace {
  readonly position: number;
  readonly reason: WaitReason;
  /** The bound: milliseconds until the grant if every call holds all it reserved (see `place`); null when unknown. */
  readonly etaMs: number | null;
  /**
   * The expected milliseconds until the grant, from what calls of each app actually hold (see
   * `place`); never above `etaMs`; null when unknown. Absent from places made before it existed.
   */
  readonly expectedMs?: number | null;
  /**
   * A trial's (admission's) soonest likely wait: as `expectedMs`, with calls ending as early as
   * they often do (SchedulerOptions.soonestQuantile); never above `expectedMs`. A call is refused
   * for `predicted_wait` only when even this is longer than it may wait. Absent: not computed.
   */
  readonly soonestMs?: number | null;
}
