import type { Policy } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { AppRecord, GrantedCall, LeaseRecord, Store } from "../../storage/store.js";
import type { PoolState } from "../leases/pool-state.js";

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** Granted calls read for percentiles: the newest this many of the range. */
const SAMPLE = 20_000;
/** The last hour's waits are read at most this often (the pool stream asks up to four times a second). */
const WAITS_TTL_MS = 2_000;

/** The `p`-th percentile (0–100) by nearest rank; null for no values. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] ?? null;
}

/** What a call should ask for: the p95 of actual use, rounded up to whole 5 s (at least 5 s). */
export function suggestedDurationS(heldMs: readonly number[]): number | null {
  const p95 = percentile(heldMs, 95);
  return p95 === null ? null : Math.max(5, Math.ceil(p95 / 5_000) * 5);
}

export interface QueueSummary {
  readonly leader: boolean;
  readonly depth: number;
  readonly oldestWaitMs: number | null;
  readonly tiers: readonly { tier: string; depth: number; oldestWaitMs: number | null }[];
  readonly lastHour: { granted: number; waitP50Ms: number | null; waitP95Ms: number | null };
}

export interface RefusalsSummary {
  readonly from: number;
  readonly to: number;
  readonly hours: readonly { hour: number; counts: Readonly<Record<string, number>> }[];
  readonly total: Readonly<Record<string, number>>;
}

export interface AppSummary {
  readonly app: AppRecord;
  readonly calls: number;
  readonly granted: number;
  readonly heldMs: number;
  readonly chargedMs: number;
  readonly refusals: Readonly<Record<string, number>>;
  readonly waitMs: { p50: number | null; p95: number | null };
  readonly requestedMs: { p50: number | null; p95: number | null };
  readonly heldMsPercentiles: { p50: number | null; p95: number | null };
  readonly suggestedDurationS: number | null;
}

/**
 * What the dashboard's operator and app-owner views read beyond the rest of the API: the queue
 * (from the scheduler's memory on the leader, from the database elsewhere), refusals over time,
 * and per-app statistics with the duration advisor.
 */
export class DashboardViews {
  private waits: { at: number; value: QueueSummary["lastHour"] } | null = null;

  constructor(
    private readonly store: Store,
    private readonly leading: () => boolean,
    private readonly state: PoolState,
    private readonly policy: Policy,
    private readonly clock: Clock,
    /** Writes the refusals counted in memory, so a read sees them. */
    private readonly flushRefusals: () => Promise<void>,
  ) {}

  async queue(): Promise<QueueSummary> {
    const now = this.clock.now();
    const leader = this.leading();
    const queued: LeaseRecord[] = leader
      ? [...this.state.live.values()].filter((l) => l.status === "queued")
      : await this.store.transaction((tx) => tx.leases.list({ status: "queued", limit: 100_000 }));
    const byTier = new Map<string, { depth: number; oldest: number | null }>(
      Object.keys(this.policy.tiers)
        .sort()
        .map((t) => [t, { depth: 0, oldest: null }]),
    );
    let oldest: number | null = null;
    for (const l of queued) {
      const t = byTier.get(l.tier) ?? { depth: 0, oldest: null };
      byTier.set(l.tier, {
        depth: t.depth + 1,
        oldest: t.oldest === null ? l.queuedAt : Math.min(t.oldest, l.queuedAt),
      });
      oldest = oldest === null ? l.queuedAt : Math.min(oldest, l.queuedAt);
    }
    const wait = (since: number | null) => (since === null ? null : Math.max(0, now - since));
    return {
      leader,
      depth: queued.length,
      oldestWaitMs: wait(oldest),
      tiers: [...byTier].map(([tier, t]) => ({ tier, depth: t.depth, oldestWaitMs: wait(t.oldest) })),
      lastHour: await this.lastHourWaits(now),
    };
  }

  private async lastHourWaits(now: number): Promise<QueueSummary["lastHour"]> {
    if (this.waits !== null && now - this.waits.at < WAITS_TTL_MS && now >= this.waits.at) return this.waits.value;
    const calls = await this.store.transaction((tx) => tx.dashboard.grantedCalls(null, now - HOUR_MS, now + 1, SAMPLE));
    const waits = calls.map((c) => c.grantedAt - c.queuedAt);
    const value = { granted: calls.length, waitP50Ms: percentile(waits, 50), waitP95Ms: percentile(waits, 95) };
    this.waits = { at: now, value };
    return value;
  }

  /** Refusals by code for each of the last `hours` hours (the current one included), oldest first. */
  async refusals(hours: number): Promise<RefusalsSummary> {
    const now = this.clock.now();
    const to = Math.floor(now / HOUR_MS) * HOUR_MS + HOUR_MS;
    const from = to - hours * HOUR_MS;
    await this.flushRefusals();
    const rows = await this.store.transaction((tx) => tx.dashboard.refusalHours(from, to));
    const buckets = new Map<number, Record<string, number>>();
    for (let h = from; h < to; h += HOUR_MS) buckets.set(h, {});
    const total: Record<string, number> = {};
    for (const r of rows) {
      const hour = Date.parse(`${r.hour}:00:00.000Z`);
      const counts = buckets.get(hour);
      if (counts === undefined) continue;
      counts[r.code] = (counts[r.code] ?? 0) + r.count;
      total[r.code] = (total[r.code] ?? 0) + r.count;
    }
    return { from, to, hours: [...buckets].map(([hour, counts]) => ({ hour, counts })), total };
  }

  /** Per app (the owner's, or every app for the operator) over the last `days` days. */
  async apps(owner: string | null, days: number): Promise<{ from: number; to: number; apps: AppSummary[] }> {
    const to = this.clock.now() + 1;
    const from = to - days * DAY_MS;
    const filter = { scope: { kind: "all" as const }, from, to };
    await this.flushRefusals();
    return this.store.transaction(async (tx) => {
      const apps = (await tx.apps.list())
        .filter((a) => owner === null || a.ownerId === owner)
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      if (apps.length === 0) return { from, to, apps: [] };
      const totals = new Map((await tx.usage.summary(filter, "app")).map((g) => [g.key, g]));
      const refused = await tx.usage.refusals(filter, "app");
      const out: AppSummary[] = [];
      for (const app of apps) {
        const g = totals.get(app.id);
        const refusals: Record<string, number> = { ...(g?.problems ?? {}) };
        for (const r of refused) if (r.key === app.id) refusals[r.code] = (refusals[r.code] ?? 0) + r.count;
        const calls: GrantedCall[] = await tx.dashboard.grantedCalls(app.id, from, to, SAMPLE);
        const held = calls.map((c) => c.heldMs);
        const requested = calls.map((c) => c.reservedMs / (this.policy.sizes[c.size]?.cost ?? 1));
        const waits = calls.map((c) => c.grantedAt - c.queuedAt);
        out.push({
          app,
          calls: g?.calls ?? 0,
          granted: g?.granted ?? 0,
          heldMs: g?.heldMs ?? 0,
          chargedMs: g?.chargedMs ?? 0,
          refusals,
          waitMs: { p50: percentile(waits, 50), p95: percentile(waits, 95) },
          requestedMs: { p50: percentile(requested, 50), p95: percentile(requested, 95) },
          heldMsPercentiles: { p50: percentile(held, 50), p95: percentile(held, 95) },
          suggestedDurationS: suggestedDurationS(held),
        });
      }
      return { from, to, apps: out };
    });
  }
}
