import type { Policy } from "../policy.js";
import { DEFAULT_POLICY } from "../policy.js";
import type { SchedulerOptions } from "../scheduling/priority-scheduler.js";

/** How a replay is set up (see docs/scheduling.md §8). */
export interface SimulationOptions {
  /** GPUs in the pool, each split into `slotsPerGpu` slots. */
  readonly gpus: number;
  readonly slotsPerGpu: number;
  /** Inter-arrival times are divided by this (GPU times are not). */
  readonly speedup: number;
  /** Quota, tiers, sizes and queue timeout: the server's policy. */
  readonly policy: Policy;
  /** Percent of people put in the pro and free tiers; the rest are anonymous. */
  readonly proPercent: number;
  readonly freePercent: number;
  /** Requested duration: GPU time rounded up to a multiple of this, at least one step, at most the tier's maximum. */
  readonly durationStepMs: number;
  /** A call asking for at least this many images is xlarge (a whole GPU); null: every call is large. */
  readonly xlargeImages: number | null;
  /** Every app's max_concurrency; null: no limit. */
  readonly appMaxConcurrency: number | null;
  /** Overrides of the gpupool scheduler's options (defaults derive from the queue timeout). */
  readonly scheduler: Partial<SchedulerOptions>;
  /**
   * Refuse at once a call expected to wait longer than its tier's queue timeout (the server's
   * honest admission, `predicted_wait`); false: queue it, to time out (as before). FIFO gives no
   * expectation, so it is never refused this way.
   */
  readonly honest: boolean;
}

export const DEFAULT_SIMULATION_OPTIONS: SimulationOptions = {
  gpus: 1,
  slotsPerGpu: 2,
  speedup: 2,
  policy: DEFAULT_POLICY,
  proPercent: 5,
  freePercent: 20,
  durationStepMs: 15_000,
  xlargeImages: 8,
  appMaxConcurrency: null,
  scheduler: {},
  honest: true,
};
