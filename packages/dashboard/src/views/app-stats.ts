import type { ProblemCode, UsageRecord } from "@gpupool/contract";

/** One app's figures over a range of usage records (until the server answers them itself). */
export interface AppStat {
  readonly app: string;
  readonly calls: number;
  readonly heldS: number;
  readonly refusals: Partial<Record<ProblemCode, number>>;
  readonly waitP50: number | null;
  readonly waitP95: number | null;
  readonly requestedP50: number | null;
  readonly requestedP95: number | null;
  readonly heldP50: number | null;
  readonly heldP95: number | null;
  /** The p95 of what calls held, rounded up to 5 s: a duration that serves 95 % of calls. */
  readonly suggested: number | null;
}

export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? null;
}

export function appStats(records: readonly UsageRecord[], costOf: (size: string) => number): AppStat[] {
  const byApp = new Map<string, UsageRecord[]>();
  for (const r of records) {
    const key = r.app ?? "";
    byApp.set(key, [...(byApp.get(key) ?? []), r]);
  }
  return [...byApp.entries()]
    .map(([app, rs]) => {
      const granted = rs.filter((r) => r.granted_at !== null);
      const waits = granted
        .map((r) => (Date.parse(r.granted_at!) - Date.parse(r.queued_at)) / 1000)
        .sort((a, b) => a - b);
      const requested = granted.map((r) => r.reserved_s / costOf(r.size)).sort((a, b) => a - b);
      const held = granted.map((r) => r.held_ms / 1000).sort((a, b) => a - b);
      const refusals: Partial<Record<ProblemCode, number>> = {};
      for (const r of rs) if (r.problem !== null) refusals[r.problem] = (refusals[r.problem] ?? 0) + 1;
      const p95 = quantile(held, 0.95);
      return {
        app,
        calls: rs.length,
        heldS: held.reduce((a, b) => a + b, 0),
        refusals,
        waitP50: quantile(waits, 0.5),
        waitP95: quantile(waits, 0.95),
        requestedP50: quantile(requested, 0.5),
        requestedP95: quantile(requested, 0.95),
        heldP50: quantile(held, 0.5),
        heldP95: p95,
        suggested: p95 === null ? null : Math.max(5, Math.ceil(p95 / 5) * 5),
      };
    })
    .sort((a, b) => b.calls - a.calls);
}
