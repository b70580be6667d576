import type { Policy } from "../policy.js";
import type { Pool } from "../scheduling/pool.js";
import type { Hold, PriorityRequest, QueuePlace, SchedulerOptions } from "../scheduling/priority-scheduler.js";
import { PriorityScheduler, schedulerOptionsFor } from "../scheduling/priority-scheduler.js";
import type { Concurrency, Grant } from "../scheduling/scheduler.js";
import { FifoScheduler } from "../scheduling/scheduler.js";
import type { SimulationPolicyName } from "./scheduler-trace.js";

/** The queue a run drives: gpupool's scheduler or the FIFO one, behind one shape. */
export interface Queue {
  readonly size: number;
  enqueue(request: PriorityRequest): void;
  remove(leaseId: string): boolean;
  dispatch(
    pool: Pool,
    concurrency: Concurrency,
    onGrant: (grant: Grant, request: PriorityRequest) => void,
    now: number,
  ): void;
  /** A lease ended at `now` (the priority scheduler learns what share of its reservation it held). */
  released(leaseId: string, now: number): void;
  hold(): Hold | null;
  /** What enqueue + dispatch would do with a request arriving now (see PriorityScheduler.trial); changes nothing. */
  trial(
    request: PriorityRequest,
    pool: Pool,
    concurrency: Concurrency,
    now: number,
  ): { kind: "now" } | { kind: "wait"; place: QueuePlace | null };
}

/** The queue for a replay; the priority scheduler's options derive from the policy unless overridden. */
export function queueFor(
  name: SimulationPolicyName,
  policy: Pick<Policy, "queueTimeoutMs" | "tiers">,
  overrides: Partial<SchedulerOptions>,
): Queue {
  if (name === "fifo") {
    const fifo = new FifoScheduler();
    return {
      get size() {
        return fifo.size;
      },
      enqueue: (r) => fifo.enqueue(r),
      remove: (id) => fifo.remove(id),
      dispatch: (pool, c, onGrant) => void fifo.dispatch(pool, c, (g, r) => onGrant(g, r)),
      released: () => undefined,
      hold: () => null,
      trial: (r, pool, c) => (fifo.wouldGrantNow(r, pool, c) ? { kind: "now" } : { kind: "wait", place: null }),
    };
  }
  const scheduler = new PriorityScheduler(schedulerOptionsFor(policy, overrides));
  return {
    get size() {
      return scheduler.size;
    },
    enqueue: (r) => scheduler.enqueue(r),
    remove: (id) => scheduler.remove(id),
    dispatch: (pool, c, onGrant, now) => void scheduler.dispatch(pool, c, onGrant, now),
    released: (id, now) => scheduler.onReleased(id, now),
    hold: () => scheduler.hold(),
    trial: (r, pool, c, now) => scheduler.trial(r, pool, c, now),
  };
}
