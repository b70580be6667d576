import type {
  GrantRecord,
  RefusalCount,
  UsageFilter,
  UsageGroupBy,
  UsageGroupRow,
  UsageTx,
  WalletsTx,
} from "./billing-records.js";
import {
  BILLING_ACCOUNTS,
  GRANTS,
  USAGE_RECORDS,
  USAGE_WALLET,
  WALLET_TRANSACTIONS,
  sharesJson,
} from "./billing-tables.js";
import type { Dialect, Row, SqlValue, TableNames } from "./table.js";
import { usageKey, usagePage, usageParts, usageRecords } from "./usage-sql.js";
import { WALLET_WRITES, transactionInserts } from "./wallet-cache.js";
import type { WalletCache } from "./wallet-cache.js";

/** What the billing statements need of an adapter's transaction. Statement text uses `?`; PostgreSQL's runner numbers them. */
export interface SqlRunner {
  readonly dialect: Dialect;
  all(text: string, params: readonly SqlValue[]): Promise<Row[]>;
  /** A write; how many rows it changed. */
  run(text: string, params: readonly SqlValue[]): Promise<number>;
  /** See WalletsTx.lock. */
  lockUser(userId: string): Promise<void>;
  /** Where one connection is the only writer (SQLite): what it last read or wrote, dropped on rollback. */
  readonly cache?: WalletCache;
  /**
   * SQLite: wallet writes wait in `cache.unwritten` until the commit group ends (see WalletCache).
   * `defer` marks the transaction as one that wrote (a throw after it rolls the group back);
   * `flush` writes them at once, before a read the cache cannot answer.
   */
  readonly deferred?: { readonly defer: () => void; readonly flush: () => void };
}

/** A lease's hold shares, as the leases table stores them. */
const HOLD_SHARES = sharesJson("hold_shares");

/** Bounded like the SQLite store's other caches: past this many users, start again. */
const CACHE_USERS = 50_000;
function keep<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= CACHE_USERS && !cache.has(key)) cache.clear();
  cache.set(key, value);
  return value;
}

const numbered = new Map<string, string>();
/** `?` → `$1, $2, …` (the statements here have no `?` inside literals). */
export function dollarParams(text: string): string {
  let out = numbered.get(text);
  if (out === undefined) {
    let n = 0;
    out = text.replace(/\?/g, () => `$${++n}`);
    if (numbered.size < 1000) numbered.set(text, out);
  }
  return out;
}

const insert = (t: TableNames, tail = ""): string =>
  `INSERT INTO ${t.name} (${t.insertNames.join(", ")}) VALUES (${t.insertNames.map(() => "?").join(", ")})${tail}`;
const select = (t: TableNames, rest: string): string => `SELECT ${t.selectList} FROM ${t.name} ${rest}`;

const SQL = {
  account: select(BILLING_ACCOUNTS, "WHERE user_id = ?"),
  grants: select(GRANTS, "WHERE user_id = ? ORDER BY created_at, id"),
  grantByKey: select(GRANTS, "WHERE user_id = ? AND idempotency_key = ?"),
  insertGrant: insert(GRANTS, " ON CONFLICT (id) DO NOTHING"),
  transactions: select(WALLET_TRANSACTIONS, "WHERE user_id = ? ORDER BY at DESC, id DESC LIMIT ?"),
  // The holds of a user's live leases (leases_user_status: two ranges).
  liveHolds:
    "SELECT hold_shares FROM leases WHERE identity_kind = 'user' AND identity_id = ? AND status IN ('queued', 'active') " +
    "AND hold_shares IS NOT NULL",
  insertUsage: insert(USAGE_RECORDS, " ON CONFLICT (id) DO NOTHING"),
  // The partial index usage_user_wallet, newest first.
  walletEntries:
    "SELECT id, wallet FROM usage_records WHERE identity_kind = 'user' AND identity_id = ? AND wallet IS NOT NULL " +
    "ORDER BY ended_at DESC, id DESC LIMIT ?",
  addRefusals:
    "INSERT INTO refusal_counts (day, identity, app_id, tier, code, count) VALUES (?, ?, ?, ?, ?, ?) " +
    "ON CONFLICT (day, identity, app_id, code) DO UPDATE SET count = refusal_counts.count + excluded.count",
};

/** The same filter over the refusal counts (by day; identities as `kind:id`). */
function refusalWhere(f: UsageFilter): { sql: string; params: SqlValue[] } {
  const day = (t: number): string => new Date(t).toISOString().slice(0, 10);
  const where = ["day >= ?", "day <= ?"];
  const params: SqlValue[] = [day(f.from), day(f.to - 1)];
  if (f.scope.kind === "user") {
    const apps = f.scope.appIds;
    where.push(`(identity = ?${apps.length > 0 ? ` OR app_id IN (${apps.map(() => "?").join(", ")})` : ""})`);
    params.push(`user:${f.scope.userId}`, ...apps);
  }
  if (f.appId !== undefined) {
    where.push("app_id = ?");
    params.push(f.appId);
  }
  if (f.identity !== undefined) {
    where.push("identity = ?");
    params.push(`${f.identity.kind}:${f.identity.id}`);
  }
  return { sql: where.join(" AND "), params };
}

const REFUSAL_KEY: Readonly<Record<UsageGroupBy, string>> = {
  day: "day",
  app: "app_id",
  identity: "identity",
  tier: "tier",
};

/** Billing's part of a transaction, the same statements on both adapters. */
export function billingTx(db: SqlRunner): { wallets: WalletsTx; usage: UsageTx } {
  const d = db.dialect;
  const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
  const cache = db.cache;
  const deferred = db.deferred;
  /** Keeps the cached grants of a user (when cached) in step with a write. */
  const cachedGrant = (g: GrantRecord): void => {
    const list = cache?.grants.get(g.userId);
    if (cache === undefined || list === undefined) return;
    const at = list.findIndex((x) => x.id === g.id);
    cache.grants.set(g.userId, at < 0 ? [...list, g] : list.map((x, i) => (i === at ? g : x)));
  };
  return {
    wallets: {
      lock: (userId) => db.lockUser(userId),
      account: async (userId) => {
        const hit = cache?.accounts.get(userId);
        if (hit !== undefined) return hit;
        deferred?.flush();
        const row = (await db.all(SQL.account, [userId]))[0];
        const account = row === undefined ? null : BILLING_ACCOUNTS.decode(row);
        return cache ? keep(cache.accounts, userId, account) : account;
      },
      putAccount: async (a) => {
        if (deferred && cache) {
          deferred.defer();
          cache.unwritten.accounts.set(a.userId, a);
        } else await db.run(WALLET_WRITES.putAccount, BILLING_ACCOUNTS.insertParams(a, d));
        if (cache) keep(cache.accounts, a.userId, a);
      },
      grants: async (userId) => {
        const hit = cache?.grants.get(userId);
        if (hit !== undefined) return [...hit];
        deferred?.flush();
        const grants = (await db.all(SQL.grants, [userId])).map((r) => GRANTS.decode(r));
        if (!cache) return grants;
        // What the grants hold is what the user's live leases hold (see updateGrant).
        const held = new Map<string, number>();
        for (const r of await db.all(SQL.liveHolds, [userId]))
          for (const s of HOLD_SHARES.decode(r["hold_shares"]) ?? [])
            held.set(s.grantId, (held.get(s.grantId) ?? 0) + s.micros);
        return [
          ...keep(
            cache.grants,
            userId,
            grants.map((g) => ({ ...g, heldMicros: held.get(g.id) ?? 0 })),
          ),
        ];
      },
      grantByKey: async (userId, key) => {
        deferred?.flush();
        const row = (await db.all(SQL.grantByKey, [userId, key]))[0];
        return row === undefined ? null : GRANTS.decode(row);
      },
      insertGrant: async (g) => {
        const inserted = (await db.run(SQL.insertGrant, GRANTS.insertParams(g, d))) > 0;
        if (inserted) cachedGrant(g);
        return inserted;
      },
      updateGrant: async (g) => {
        if (deferred && cache) {
          // SQLite: a change of what a grant holds alone (a call's hold placed) is not written —
          // the lease row written beside it records the hold, and a load counts the live leases'
          // holds (above); the row's `held_micros` is brought up to date with its next write of
          // `remaining_micros` (a settlement, an expiry). Writing it cost a row update per call.
          const before = cache.grants.get(g.userId)?.find((x) => x.id === g.id);
          const heldOnly =
            before !== undefined && before.remainingMicros === g.remainingMicros && !cache.unwritten.grants.has(g.id);
          if (!heldOnly) {
            deferred.defer();
            cache.unwritten.grants.set(g.id, g);
          }
        } else await db.run(WALLET_WRITES.updateGrant, [g.remainingMicros, g.heldMicros, g.id]);
        cachedGrant(g);
      },
      addTransactions: async (rows) => {
        if (deferred && cache) {
          if (rows.length === 0) return;
          deferred.defer();
          cache.unwritten.transactions.push(...rows);
        } else for (const st of transactionInserts(rows, d)) await db.run(st.text, st.params);
      },
      transactions: async (userId, limit) => {
        deferred?.flush();
        return (await db.all(SQL.transactions, [userId, limit])).map((r) => WALLET_TRANSACTIONS.decode(r));
      },
    },
    usage: {
      insert: async (r) => void (await db.run(SQL.insertUsage, USAGE_RECORDS.insertParams(r, d))),
      list: async (f, after, limit, order = "asc") => {
        // Keyset pages either way, past the last record's (ended_at, id), as a range of the
        // (…, ended_at, id) indexes: `ended_at >= ?` (or `<=`) is where the range starts (an OR alone
        // made PostgreSQL read every record before the page: 100k at 200k).
        const [cmp, dir] = order === "desc" ? (["<", " DESC"] as const) : ([">", ""] as const);
        const page =
          after === null
            ? null
            : {
                sql: `ended_at ${cmp}= ? AND (ended_at ${cmp} ? OR id ${cmp} ?)`,
                params: [after.endedAt, after.endedAt, after.id],
              };
        const q = usagePage(usageParts(f), page, USAGE_RECORDS.selectList, dir, limit, d);
        return (await db.all(q.sql, q.params)).map((r) => USAGE_RECORDS.decode(r));
      },
      summary: async (f, groupBy) => {
        const key = usageKey(groupBy, d);
        const records = usageRecords(usageParts(f));
        const totals = await db.all(
          `SELECT ${key} AS k, COUNT(*) AS calls, SUM(CASE WHEN granted_at IS NULL THEN 0 ELSE 1 END) AS granted, ` +
            "SUM(held_ms) AS held, SUM(charged_ms) AS charged, SUM(quota_ms) AS quota, SUM(overage_ms) AS overage, " +
            `SUM(charged_micros) AS micros FROM (${records.sql}) AS u GROUP BY ${key} ORDER BY 1`,
          records.params,
        );
        const problems = await db.all(
          `SELECT ${key} AS k, problem_code AS code, COUNT(*) AS n FROM (${records.sql}) AS u ` +
            `WHERE problem_code IS NOT NULL GROUP BY ${key}, problem_code`,
          records.params,
        );
        const byKey = new Map<string, Record<string, number>>();
        for (const p of problems) {
          const k = String(p["k"]);
          byKey.set(k, { ...(byKey.get(k) ?? {}), [String(p["code"])]: num(p["n"]) });
        }
        return totals.map((t): UsageGroupRow => ({
          key: String(t["k"]),
          calls: num(t["calls"]),
          granted: num(t["granted"]),
          heldMs: num(t["held"]),
          chargedMs: num(t["charged"]),
          quotaMs: num(t["quota"]),
          overageMs: num(t["overage"]),
          chargedMicros: num(t["micros"]),
          problems: byKey.get(String(t["k"])) ?? {},
        }));
      },
      refusals: async (f, groupBy) => {
        const w = refusalWhere(f);
        const key = REFUSAL_KEY[groupBy];
        const rows = await db.all(
          `SELECT ${key} AS k, code, SUM(count) AS n FROM refusal_counts WHERE ${w.sql} GROUP BY ${key}, code`,
          w.params,
        );
        return rows.map((r) => ({ key: String(r["k"]), code: String(r["code"]), count: num(r["n"]) }));
      },
      walletEntries: async (userId, limit) => {
        const rows = await db.all(SQL.walletEntries, [userId, limit]);
        return rows.flatMap((r) =>
          (USAGE_WALLET.decode(r["wallet"]) ?? []).map((e) => ({
            ...e,
            userId,
            leaseId: String(r["id"]),
          })),
        );
      },
      addRefusals: async (counts: readonly RefusalCount[]) => {
        for (const c of counts) await db.run(SQL.addRefusals, [c.day, c.identity, c.appId, c.tier, c.code, c.count]);
      },
    },
  };
}
