import type * as wire from "@gpupool/contract";
import { msToSeconds } from "@gpupool/core";
import type { UsageFilter, UsageGroupBy, UsageGroupRow } from "../storage/store.js";
import { iso } from "./iso.js";

const CSV_FIELDS = [
  "id",
  "identity_kind",
  "identity_id",
  "tier",
  "app",
  "node",
  "size",
  "status",
  "queued_at",
  "granted_at",
  "ended_at",
  "held_ms",
  "reserved_s",
  "charged_s",
  "quota_s",
  "overage_s",
  "charged_micros",
  "refunded_s",
  "problem",
  "currency",
  "app_name",
  "paid_by",
  "cost",
] as const;

export function usageCsvHeader(): string {
  return `${CSV_FIELDS.join(",")}\r\n`;
}

/** RFC 4180: quoted when needed; a leading =, +, - or @ is prefixed with ' so a spreadsheet does not run it. */
function cell(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined) return "";
  let s = String(v);
  if (/^[=+\-@\t\r]/.test(s) && typeof v === "string") s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function usageCsvRow(r: wire.UsageRecord): string {
  const flat: Record<(typeof CSV_FIELDS)[number], string | number | null> = {
    id: r.id,
    app: r.app,
    node: r.node,
    size: r.size,
    status: r.status,
    queued_at: r.queued_at,
    granted_at: r.granted_at,
    ended_at: r.ended_at,
    held_ms: r.held_ms,
    reserved_s: r.reserved_s,
    charged_s: r.charged_s,
    quota_s: r.quota_s,
    overage_s: r.overage_s,
    charged_micros: r.charged_micros,
    refunded_s: r.refunded_s,
    problem: r.problem,
    currency: r.currency,
    app_name: r.app_name,
    paid_by: r.cost.paid_by,
    cost: r.cost.display.amount,
    identity_kind: r.identity.kind,
    identity_id: r.identity.id,
    tier: r.identity.tier,
  };
  return `${CSV_FIELDS.map((f) => cell(flat[f])).join(",")}\r\n`;
}

function emptyTotals(): wire.UsageTotals {
  return { calls: 0, granted: 0, held_s: 0, charged_s: 0, quota_s: 0, overage_s: 0, charged_micros: 0, refusals: {} };
}

function add(into: wire.UsageTotals, g: wire.UsageTotals): wire.UsageTotals {
  const refusals = { ...into.refusals };
  for (const [code, n] of Object.entries(g.refusals))
    refusals[code as keyof typeof refusals] = (refusals[code as keyof typeof refusals] ?? 0) + (n ?? 0);
  return {
    calls: into.calls + g.calls,
    granted: into.granted + g.granted,
    held_s: msToSeconds(Math.round(into.held_s * 1000) + Math.round(g.held_s * 1000)),
    charged_s: msToSeconds(Math.round(into.charged_s * 1000) + Math.round(g.charged_s * 1000)),
    quota_s: msToSeconds(Math.round(into.quota_s * 1000) + Math.round(g.quota_s * 1000)),
    overage_s: msToSeconds(Math.round(into.overage_s * 1000) + Math.round(g.overage_s * 1000)),
    charged_micros: into.charged_micros + g.charged_micros,
    refusals,
  };
}

export function usageSummaryJson(
  filter: UsageFilter,
  groupBy: UsageGroupBy,
  totals: { groups: UsageGroupRow[]; refusals: { key: string; code: string; count: number }[] },
  currency: string,
  appNames: ReadonlyMap<string, string>,
): wire.UsageSummary {
  const groups = new Map<string, wire.UsageTotals>();
  for (const g of totals.groups)
    groups.set(g.key, {
      calls: g.calls,
      granted: g.granted,
      held_s: msToSeconds(g.heldMs),
      charged_s: msToSeconds(g.chargedMs),
      quota_s: msToSeconds(g.quotaMs),
      overage_s: msToSeconds(g.overageMs),
      charged_micros: g.chargedMicros,
      refusals: { ...g.problems },
    });
  for (const r of totals.refusals) {
    const g = groups.get(r.key) ?? emptyTotals();
    groups.set(r.key, add(g, { ...emptyTotals(), refusals: { [r.code]: r.count } }));
  }
  const keys = [...groups.keys()].sort();
  const name = (key: string): string | null => (groupBy === "app" ? (appNames.get(key) ?? null) : null);
  const list = keys.map((key) => ({ key, name: name(key), ...(groups.get(key) ?? emptyTotals()) }));
  return {
    from: iso(filter.from),
    to: iso(filter.to),
    group_by: groupBy,
    currency,
    groups: list,
    total: list.reduce<wire.UsageTotals>((sum, { key: _key, name: _name, ...g }) => add(sum, g), emptyTotals()),
  };
}
