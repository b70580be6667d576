import type { UsageFilter, UsageGroupBy } from "./billing-records.js";
import type { Dialect, SqlValue } from "./table.js";

/** A condition and its parameters. */
export interface Where {
  readonly sql: string;
  readonly params: readonly SqlValue[];
}

const and = (w: Where, sql: string, ...params: SqlValue[]): Where => ({
  sql: `${w.sql} AND ${sql}`,
  params: [...w.params, ...params],
});

/** More apps than this and a user's apps' records are one part (`app_id IN …`), sorted, not merged. */
const APP_PARTS = 20;

/**
 * The records a usage query may see, as disjoint parts whose union is the query's records, each a
 * range of one index in (ended_at, id) order, so that a page merges the parts' first rows rather
 * than sorting all of them. A user's records are two parts since migration 14 (`usage_user_plain`:
 * no wallet transactions; `usage_user_wallet`: some), so that every record has one per-user index
 * entry. A user's own scope adds each of their apps' records that are not their own.
 */
export function usageParts(f: UsageFilter): Where[] {
  let base: Where = { sql: "ended_at >= ? AND ended_at < ?", params: [f.from, f.to] };
  if (f.appId !== undefined) base = and(base, "app_id = ?", f.appId);
  if (f.identity !== undefined)
    base = and(base, "identity_kind = ? AND identity_id = ?", f.identity.kind, f.identity.id);
  if (f.status !== undefined) base = and(base, "status = ?", f.status);
  const userParts = (w: Where): Where[] => [and(w, "wallet IS NULL"), and(w, "wallet IS NOT NULL")];
  if (f.scope.kind === "all") return f.identity?.kind === "user" ? userParts(base) : [base];
  const userId = f.scope.userId;
  const own = userParts(and(base, "identity_kind = 'user' AND identity_id = ?", userId));
  const apps = f.scope.appIds;
  const others = "NOT (identity_kind = 'user' AND identity_id = ?)";
  if (apps.length > APP_PARTS)
    return [...own, and(base, `app_id IN (${apps.map(() => "?").join(", ")}) AND ${others}`, ...apps, userId)];
  return [...own, ...apps.map((app) => and(base, `app_id = ? AND ${others}`, app, userId))];
}

/**
 * A page of records: `cols` of the parts' records past `page` (a condition every part gets), in
 * (ended_at, id) order (`dir` "" or " DESC"), at most `limit`. SQLite merges a compound SELECT's
 * ordered parts; PostgreSQL's planner would rather sort all of a big user's records than merge two
 * index scans, unless each part carries its own ORDER BY and LIMIT.
 */
export function usagePage(
  parts: readonly Where[],
  page: Where | null,
  cols: string,
  dir: "" | " DESC",
  limit: number,
  dialect: Dialect,
): Where {
  const orderBy = ` ORDER BY ended_at${dir}, id${dir} LIMIT ?`;
  const each = parts.map((p) => (page === null ? p : and(p, page.sql, ...page.params)));
  const select = (w: Where): string => `SELECT ${cols} FROM usage_records WHERE ${w.sql}`;
  if (each.length === 1) return { sql: `${select(each[0]!)}${orderBy}`, params: [...each[0]!.params, limit] };
  if (dialect === "sqlite")
    return {
      sql: `${each.map(select).join(" UNION ALL ")}${orderBy}`,
      params: [...each.flatMap((w) => w.params), limit],
    };
  return {
    sql: `${each.map((w, i) => `SELECT ${cols} FROM (${select(w)}${orderBy}) AS p${i}`).join(" UNION ALL ")}${orderBy}`,
    params: [...each.flatMap((w) => [...w.params, limit]), limit],
  };
}

/** The columns a usage summary reads (its keys and sums). */
const SUMMED =
  "ended_at, app_id, identity_kind, identity_id, tier, granted_at, held_ms, charged_ms, quota_ms, overage_ms, " +
  "charged_micros, problem_code";

/** All the parts' records, as a subquery to aggregate (`FROM (…) AS u`). */
export function usageRecords(parts: readonly Where[]): Where {
  return {
    sql: parts.map((w) => `SELECT ${SUMMED} FROM usage_records WHERE ${w.sql}`).join(" UNION ALL "),
    params: parts.flatMap((w) => w.params),
  };
}

const DAY: Readonly<Record<Dialect, string>> = {
  sqlite: "strftime('%Y-%m-%d', ended_at / 1000, 'unixepoch')",
  postgres: "to_char(to_timestamp(ended_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
};

/** The group key of a usage summary. */
export function usageKey(groupBy: UsageGroupBy, dialect: Dialect): string {
  switch (groupBy) {
    case "day":
      return DAY[dialect];
    case "app":
      return "COALESCE(app_id, '')";
    case "identity":
      return "identity_kind || ':' || identity_id";
    case "tier":
      return "tier";
  }
}
