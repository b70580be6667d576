import type { TierFigures } from "./scheduler-trace.js";

/** What a replay counts for one tier as it goes. */
export interface TierAcc {
  requests: number;
  granted: number;
  queueTimeouts: number;
  quotaDenials: number;
  noGpuAvailable: number;
  waits: number[];
  longest: number;
}

export const round = (x: number, digits = 3): number => Math.round(x * 10 ** digits) / 10 ** digits;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

/** Each tier's figures (by tier name, sorted), and the totals of timeouts and quota refusals. */
export function tierFigures(tiers: ReadonlyMap<string, TierAcc>): {
  tierOut: Record<string, TierFigures>;
  queueTimeouts: number;
  quotaDenials: number;
} {
  const tierOut: Record<string, TierFigures> = {};
  let queueTimeouts = 0;
  let quotaDenials = 0;
  for (const name of [...tiers.keys()].sort()) {
    const t = tiers.get(name) as TierAcc;
    const waits = [...t.waits].sort((a, b) => a - b);
    queueTimeouts += t.queueTimeouts;
    quotaDenials += t.quotaDenials;
    tierOut[name] = {
      requests: t.requests,
      granted: t.granted,
      queueTimeouts: t.queueTimeouts,
      quotaDenials: t.quotaDenials,
      noGpuAvailable: t.noGpuAvailable,
      waitP50S: round(percentile(waits, 50) / 1000),
      waitP95S: round(percentile(waits, 95) / 1000),
      waitP99S: round(percentile(waits, 99) / 1000),
      longestWaitS: round(t.longest / 1000),
    };
  }
  return { tierOut, queueTimeouts, quotaDenials };
}
