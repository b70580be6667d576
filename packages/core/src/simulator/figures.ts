import type { TierFigures } from "./scheduler-trace.js";

/** What a replay counts for one tier as it goes. */
export interface TierAcc {
  requests: number;
  granted: number;
  queueTimeouts: number;
  quotaDenials: number;
  noGpuAvailable: number;
  /** Refused at once because the expected wait was longer than the queue timeout (no_gpu_available, predicted_wait). */
  predictedWait: number;
  /** Admitted calls that did not get a slot at once (they waited in the queue). */
  waited: number;
  /** |expected − actual| wait of each queued call that was granted (ms). */
  etaErrors: number[];
  /** Queued calls granted later than the bound said at admission. */
  boundExceeded: number;
  /** Queued calls that timed out although their expected wait at admission was within their timeout (the ETA error leaves them out). */
  timedOutExpectedInTime: number;
  waits: number[];
  longest: number;
}

export function newTierAcc(): TierAcc {
  return {
    requests: 0,
    granted: 0,
    queueTimeouts: 0,
    quotaDenials: 0,
    noGpuAvailable: 0,
    predictedWait: 0,
    waited: 0,
    etaErrors: [],
    boundExceeded: 0,
    timedOutExpectedInTime: 0,
    waits: [],
    longest: 0,
  };
}

export const round = (x: number, digits = 3): number => Math.round(x * 10 ** digits) / 10 ** digits;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

/** What every tier's accumulators add up to (the pool-wide figures of the same kind). */
export interface Totals {
  readonly queueTimeouts: number;
  readonly quotaDenials: number;
  readonly predictedWaitRefusals: number;
  readonly waited: number;
  /** Queue timeouts ÷ calls that waited: the share of waits that ended in nothing. */
  readonly endedInNothing: number;
  readonly etaErrorP50S: number | null;
  readonly etaErrorP95S: number | null;
  readonly etaPredicted: number;
  readonly etaBoundExceeded: number;
  /** Queued calls that timed out although expected to start within their timeout at admission. */
  readonly timedOutExpectedInTime: number;
}

function etaFigures(t: Pick<TierAcc, "etaErrors" | "queueTimeouts" | "waited">): {
  endedInNothing: number;
  etaErrorP50S: number | null;
  etaErrorP95S: number | null;
} {
  const errors = [...t.etaErrors].sort((a, b) => a - b);
  return {
    endedInNothing: t.waited === 0 ? 0 : round(t.queueTimeouts / t.waited, 4),
    etaErrorP50S: errors.length === 0 ? null : round(percentile(errors, 50) / 1000),
    etaErrorP95S: errors.length === 0 ? null : round(percentile(errors, 95) / 1000),
  };
}

/** Each tier's figures (by tier name, sorted), and their totals. */
export function tierFigures(tiers: ReadonlyMap<string, TierAcc>): {
  tierOut: Record<string, TierFigures>;
  totals: Totals;
} {
  const tierOut: Record<string, TierFigures> = {};
  const all = newTierAcc();
  for (const name of [...tiers.keys()].sort()) {
    const t = tiers.get(name) as TierAcc;
    const waits = [...t.waits].sort((a, b) => a - b);
    all.queueTimeouts += t.queueTimeouts;
    all.quotaDenials += t.quotaDenials;
    all.predictedWait += t.predictedWait;
    all.waited += t.waited;
    all.boundExceeded += t.boundExceeded;
    all.timedOutExpectedInTime += t.timedOutExpectedInTime;
    all.etaErrors.push(...t.etaErrors);
    tierOut[name] = {
      requests: t.requests,
      granted: t.granted,
      queueTimeouts: t.queueTimeouts,
      quotaDenials: t.quotaDenials,
      noGpuAvailable: t.noGpuAvailable,
      predictedWaitRefusals: t.predictedWait,
      waited: t.waited,
      ...etaFigures(t),
      etaPredicted: t.etaErrors.length,
      etaBoundExceeded: t.boundExceeded,
      timedOutExpectedInTime: t.timedOutExpectedInTime,
      waitP50S: round(percentile(waits, 50) / 1000),
      waitP95S: round(percentile(waits, 95) / 1000),
      waitP99S: round(percentile(waits, 99) / 1000),
      longestWaitS: round(t.longest / 1000),
    };
  }
  return {
    tierOut,
    totals: {
      queueTimeouts: all.queueTimeouts,
      quotaDenials: all.quotaDenials,
      predictedWaitRefusals: all.predictedWait,
      waited: all.waited,
      ...etaFigures(all),
      etaPredicted: all.etaErrors.length,
      etaBoundExceeded: all.boundExceeded,
      timedOutExpectedInTime: all.timedOutExpectedInTime,
    },
  };
}
