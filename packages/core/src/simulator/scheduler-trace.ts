/** One call of a trace: who, which app, when, and how long it kept the GPU busy. */
export interface TraceRecord {
  /** Arrival, epoch milliseconds. */
  readonly arrivalMs: number;
  readonly person: string;
  readonly app: string;
  /** GPU time the call needs. */
  readonly execMs: number;
  /** Images asked for in one call (the size rule), when known. */
  readonly imagesPerPrompt: number | null;
}

export type SimulationPolicyName = "gpupool" | "fifo";

export interface TierFigures {
  /** Calls made by people of this tier. */
  readonly requests: number;
  readonly granted: number;
  readonly queueTimeouts: number;
  /** Refused by quota admission (quota_exceeded, duration_too_long, runs_exceeded). */
  readonly quotaDenials: number;
  /** Refused with no_gpu_available: the queue was full, no GPU of the pool could ever take the size, or predicted_wait. */
  readonly noGpuAvailable: number;
  /** Refused at once (no_gpu_available, reason predicted_wait): expected to wait longer than the queue timeout. */
  readonly predictedWaitRefusals: number;
  /** Admitted calls that did not get a slot at once. */
  readonly waited: number;
  /** Queue timeouts ÷ calls that waited: the share of waits that ended in nothing. */
  readonly endedInNothing: number;
  /** |expected ETA at admission − actual wait| of the queued calls granted, p50 and p95 (null: none predicted). */
  readonly etaErrorP50S: number | null;
  readonly etaErrorP95S: number | null;
  /** Queued calls granted that had an expected ETA (the ETA error's sample). */
  readonly etaPredicted: number;
  /** Of those, granted later than the bound (eta_max) said at admission. */
  readonly etaBoundExceeded: number;
  /** Queued calls that timed out although their expected wait at admission was within their timeout (left out of the ETA error). */
  readonly timedOutExpectedInTime: number;
  /** Waits of every admitted call, in seconds: grant − arrival, or the queue timeout for calls that timed out. */
  readonly waitP50S: number;
  readonly waitP95S: number;
  readonly waitP99S: number;
  /** Longest wait of a call that was granted. */
  readonly longestWaitS: number;
}

export interface SimulationResult {
  readonly policy: SimulationPolicyName;
  readonly gpus: number;
  readonly slots: number;
  readonly speedup: number;
  readonly requests: number;
  readonly admitted: number;
  readonly granted: number;
  /** Granted calls whose GPU time exceeded the requested duration: stopped at the deadline. */
  readonly expired: number;
  readonly queueTimeouts: number;
  readonly quotaDenials: number;
  /** Refused at once with no_gpu_available (predicted_wait), summed over tiers. */
  readonly predictedWaitRefusals: number;
  readonly waited: number;
  readonly endedInNothing: number;
  readonly etaErrorP50S: number | null;
  readonly etaErrorP95S: number | null;
  readonly etaPredicted: number;
  readonly etaBoundExceeded: number;
  /** Queued calls that timed out although their expected wait at admission was within their timeout (left out of the ETA error). */
  readonly timedOutExpectedInTime: number;
  /** Virtual seconds from the first arrival to the last lease's end. */
  readonly spanS: number;
  /** Busy slot-seconds over slots × span. */
  readonly utilization: number;
  /**
   * Slot-seconds during which a slot was free while some waiting call could have been placed on
   * it right then without exceeding its app's limit or delaying a held head (see usableIdleSlots).
   */
  readonly idleWhileWaitingSlotS: number;
  /** Slot-seconds free on the device held for an aged head while the hold was in force (idle by design). */
  readonly heldIdleSlotS: number;
  /** Slot-seconds free while anything was queued, for any reason (held, no fit, app limits). */
  readonly idleWithQueueSlotS: number;
  /** Busy slot-seconds over slot-seconds, counted only while something was queued: how well contention is served. */
  readonly utilizationWhileQueued: number;
  /** Admitted slot-seconds of demand in the busiest virtual hour over the pool's slot-seconds in an hour. */
  readonly peakHourDemand: number;
  /** Jain's index over each person's slot-seconds held: 1 when all got the same. */
  readonly jainFairness: number;
  readonly longestWaitS: number;
  readonly tiers: Readonly<Record<string, TierFigures>>;
}

/** FNV-1a, 32 bits: a stable hash of a person's id for the tier rule. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The tier rule: FNV-1a(person) mod 100 below proPercent → pro, below pro+free → free, else anonymous. */
export function tierForPerson(person: string, proPercent: number, freePercent: number): string {
  const bucket = fnv1a(person) % 100;
  if (bucket < proPercent) return "pro";
  if (bucket < proPercent + freePercent) return "free";
  return "anonymous";
}

/** The duration rule: GPU time rounded up to a whole step, at least one step, at most `maxMs`. */
export function requestedDurationMs(execMs: number, stepMs: number, maxMs: number): number {
  const rounded = Math.max(stepMs, Math.ceil(execMs / stepMs) * stepMs);
  return Math.min(rounded, maxMs);
}
