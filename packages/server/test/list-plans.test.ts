import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { MIGRATIONS } from "../src/storage/migrations.js";
import { openStorage } from "../src/storage/open-store.js";
import { postgresTx } from "../src/storage/postgres/postgres-tx.js";
import { sqliteTx } from "../src/storage/sqlite/sqlite-tx.js";
import type { SqliteConnection, Statement } from "../src/storage/sqlite/sqlite-tx.js";
import type { Storage, Tx, UsageFilter } from "../src/storage/store.js";
import { walletCache } from "../src/storage/wallet-cache.js";

/**
 * The query plans of the hot and list statements, as each adapter runs them, on tables of 200k
 * leases, 200k usage records, 20k users and 2k apps (issue 17): no sequential scan of a big table,
 * no sort (an index gives the order), and a list bounded by its LIMIT. The statements are the
 * adapters' own: the test drives `postgresTx` / `sqliteTx` over a connection that EXPLAINs each
 * statement with its parameters instead of running it.
 */

const LEASES = 200_000;
const USAGE = 200_000;
const USERS = 20_000;
const APPS = 2_000;
/** The last leases are live: 50 queued, 100 active. */
const QUEUED_FROM = LEASES - 50;
const ACTIVE_FROM = LEASES - 150;

/**
 * Whose leases and usage records: no app for a fifth, a big app (a1) for another fifth (40k), the
 * rest spread over 199 small apps (~600 each); users' are half the big user's (u1, 33k), half
 * spread over 2,000 users (~17 each). The big app has no failed lease: the list of its failed ones
 * is empty (before, reading all its leases to find none: 533 ms at 1.2 M rows).
 */
const APP_OF = "CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN 'a1' ELSE 'a' || (g % 199 + 2) END";
/** A call's wallet transactions on its usage record (migration 13). */
const CALL_WALLET = '[["wt_1",1,"spend",1,"cg_1"]]';

/** Seeds the tables in a few statements; `series(n)` is a row source of `g` = 1..n, `pad(e, w)` zero-pads. */
function seed(series: (n: number) => string, pad: (e: string, w: number) => string, no: string): string[] {
  return [
    `INSERT INTO users (id, name, tier, token_hash, created_at)
       SELECT 'u' || g, 'name-' || ${pad("g", 6)}, 'free', 'th' || g, g FROM ${series(USERS)}`,
    `INSERT INTO apps (id, name, owner_id, key_hash, created_at)
       SELECT 'a' || g, 'app-' || ${pad("g", 5)}, 'u' || g, 'kh' || g, g FROM ${series(APPS)}`,
    `INSERT INTO leases (id, app_id, identity_kind, identity_id, tier, size, slots, cost, duration_ms, reserved_ms,
         status, queued_at, charged_ms, refunded_ms, failed)
       SELECT 'l' || g, ${APP_OF},
         CASE g % 3 WHEN 0 THEN 'user' WHEN 1 THEN 'ip' ELSE 'app' END,
         CASE WHEN g % 6 = 0 THEN 'u1' WHEN g % 3 = 0 THEN 'u' || (g % 2000 + 2) ELSE 'x' || (g % 5000) END,
         'free', 'large', 1, 1, 60000, 60000,
         CASE WHEN g > ${QUEUED_FROM} THEN 'queued' WHEN g > ${ACTIVE_FROM} THEN 'active'
           WHEN (g / 5) % 20 = 0 THEN 'expired' WHEN (g / 5) % 20 = 1 THEN 'cancelled'
           WHEN (g / 5) % 50 = 2 AND g % 5 <> 1 THEN 'failed' ELSE 'released' END,
         g * 1000, 0, 0, ${no} FROM ${series(LEASES)}`,
    `INSERT INTO usage_records (id, identity_kind, identity_id, tier, app_id, node, size, status, queued_at,
         granted_at, ended_at, held_ms, reserved_ms, charged_ms, quota_ms, overage_ms, charged_micros, refunded_ms, wallet)
       SELECT 'r' || ${pad("g", 7)}, CASE g % 3 WHEN 0 THEN 'user' WHEN 1 THEN 'ip' ELSE 'app' END,
         CASE WHEN g % 6 = 0 THEN 'u1' WHEN g % 3 = 0 THEN 'u' || (g % 2000 + 2) ELSE 'x' || (g % 5000) END,
         'free', ${APP_OF}, NULL, 'large', 'released',
         g * 1000, g * 1000, g * 1000 + 500, 1000, 60000, 1000, 1000, 0, 0, 59000,
         CASE WHEN g % 60 = 0 OR g % 600 = 3 THEN '${CALL_WALLET}' END FROM ${series(USAGE)}`,
    `INSERT INTO ledgers (identity, window_started_at, used_ms, reserved_ms, bonus_ms, runs)
       SELECT 'user:u' || g, 1000, 0, 0, 0, 0 FROM ${series(USERS)}`,
  ];
}

/** One statement an adapter ran, and its plan. */
interface Planned {
  readonly name: string;
  readonly text: string;
  /** PostgreSQL: the JSON plan's root; SQLite: EXPLAIN QUERY PLAN's lines. */
  readonly plan: unknown;
}

const USAGE_ALL: UsageFilter = { scope: { kind: "all" }, from: 0, to: Number.MAX_SAFE_INTEGER };

/**
 * Every hot and list query: what each runs, under a name. Lists are asked for a page of 51 (50 and
 * one more, as the use cases do), a first page and a later one (the keyset).
 */
const QUERIES: readonly [string, (tx: Tx) => Promise<unknown>][] = [
  ["leases.list admin", (tx) => tx.leases.list({ limit: 51 })],
  ["leases.list admin, page 2", (tx) => tx.leases.list({ limit: 51, before: 150_000 })],
  ["leases.list admin expired", (tx) => tx.leases.list({ limit: 51, status: "expired" })],
  ["leases.list admin expired, page 2", (tx) => tx.leases.list({ limit: 51, status: "expired", before: 150_000 })],
  ["leases.list admin queued", (tx) => tx.leases.list({ limit: 51, status: "queued" })],
  ["leases.list app", (tx) => tx.leases.list({ limit: 51, appId: "a7" })],
  ["leases.list app, page 2", (tx) => tx.leases.list({ limit: 51, appId: "a7", before: 150_000 })],
  ["leases.list app expired", (tx) => tx.leases.list({ limit: 51, appId: "a7", status: "expired" })],
  [
    "leases.list app expired, page 2",
    (tx) => tx.leases.list({ limit: 51, appId: "a7", status: "expired", before: 150_000 }),
  ],
  ["leases.list big app", (tx) => tx.leases.list({ limit: 51, appId: "a1" })],
  ["leases.list big app expired", (tx) => tx.leases.list({ limit: 51, appId: "a1", status: "expired" })],
  ["leases.list big app failed (none)", (tx) => tx.leases.list({ limit: 51, appId: "a1", status: "failed" })],
  ["leases.list big user", (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u1" } })],
  [
    "leases.list big user expired",
    (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u1" }, status: "expired" }),
  ],
  ["leases.list user", (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u7" } })],
  [
    "leases.list user, page 2",
    (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u7" }, before: 150_000 }),
  ],
  [
    "leases.list user expired",
    (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u7" }, status: "expired" }),
  ],
  [
    "leases.list user expired, page 2",
    (tx) => tx.leases.list({ limit: 51, identity: { kind: "user", id: "u7" }, status: "expired", before: 150_000 }),
  ],
  ["leases.get", (tx) => tx.leases.get("l123456")],
  ["leases.live", (tx) => tx.leases.live()],
  ["leases.earliestEnd", (tx) => tx.leases.earliestEnd({ kind: "user", id: "u7" }, 60_000)],
  ["ledgers.get", (tx) => tx.ledgers.get("user:u7")],
  ["users.get", (tx) => tx.users.get("u7")],
  ["users.findByTokenHash", (tx) => tx.users.findByTokenHash("th7")],
  ["users.page", (tx) => tx.users.page(null, { after: null, limit: 101 })],
  ["users.page, page 2", (tx) => tx.users.page(null, { after: "name-010000", limit: 101 })],
  ["users.page search", (tx) => tx.users.page("name-0001", { after: null, limit: 101 })],
  ["apps.page", (tx) => tx.apps.page({ after: null, limit: 101 })],
  ["apps.page, page 2", (tx) => tx.apps.page({ after: "app-01000", limit: 101 })],
  ["apps.findByKeyHash", (tx) => tx.apps.findByKeyHash("kh7")],
  ["usage.list all", (tx) => tx.usage.list(USAGE_ALL, null, 101)],
  ["usage.list all, page 2", (tx) => tx.usage.list(USAGE_ALL, { endedAt: 100_000_500, id: "r0100000" }, 101)],
  ["usage.list app", (tx) => tx.usage.list({ ...USAGE_ALL, appId: "a7" }, null, 101)],
  [
    "usage.list app, page 2",
    (tx) => tx.usage.list({ ...USAGE_ALL, appId: "a7" }, { endedAt: 100_000_500, id: "r0100000" }, 101),
  ],
  ["usage.list user", (tx) => tx.usage.list({ ...USAGE_ALL, identity: { kind: "user", id: "u7" } }, null, 101)],
  ["usage.list big app", (tx) => tx.usage.list({ ...USAGE_ALL, appId: "a1" }, null, 101)],
  ["usage.list big user", (tx) => tx.usage.list({ ...USAGE_ALL, identity: { kind: "user", id: "u1" } }, null, 101)],
  [
    "usage.list big user, page 2",
    (tx) =>
      tx.usage.list(
        { ...USAGE_ALL, identity: { kind: "user", id: "u1" } },
        { endedAt: 100_000_500, id: "r0100000" },
        101,
      ),
  ],
  // What a signed-in user sees of their own (GET /v1/usage): their records, and their apps'.
  [
    "usage.list own",
    (tx) => tx.usage.list({ ...USAGE_ALL, scope: { kind: "user", userId: "u1", appIds: [] } }, null, 101),
  ],
  [
    "usage.list own and own app's",
    (tx) => tx.usage.list({ ...USAGE_ALL, scope: { kind: "user", userId: "u7", appIds: ["a7"] } }, null, 101),
  ],
  ["usage.summary big user", (tx) => tx.usage.summary({ ...USAGE_ALL, identity: { kind: "user", id: "u1" } }, "day")],
  // A user's wallet: the usage records carrying a call's wallet transactions (a tenth of u1's).
  ["usage.list wallet entries, big user", (tx) => tx.usage.walletEntries("u1", 50)],
  ["usage.list wallet entries, user", (tx) => tx.usage.walletEntries("u5", 50)],
];

/** Lists whose plan may sort: the live leases (only the queued and active ones, a few) and aggregates of them. */
const MAY_SORT = new Set(["leases.live", "leases.earliestEnd"]);
/**
 * PostgreSQL may still sort the matches of a small app or user (a bitmap scan of its index entries
 * then a sort of a few hundred rows, cheaper than reading them in order): at most this many, in memory.
 */
const SMALL_SORT = 1_000;
/** Rows a list may read in all (its page, or a small identity's matches). */
const BOUNDED = 2_000;
/** Lists bounded by their LIMIT (the rest are one-row lookups, or the live leases). */
const isList = (name: string): boolean => /\.(list|page)\b/.test(name);
const BIG = ["leases", "usage_records", "users", "apps", "ledgers"];

/** Runs every query of QUERIES through `tx`, collecting what `explain` recorded for each. */
async function planAll(tx: Tx, recorded: { text: string; plan: unknown }[]): Promise<Planned[]> {
  const out: Planned[] = [];
  for (const [name, run] of QUERIES) {
    recorded.length = 0;
    await run(tx);
    expect(recorded.length, name).toBeGreaterThan(0);
    for (const r of recorded) out.push({ name, ...r });
  }
  return out;
}

describe("list and hot query plans at 200k rows", () => {
  describe("SQLite", () => {
    let dir: string;
    let db: Database.Database;
    let plans: Planned[];
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "gpupool-plans-"));
      db = new Database(join(dir, "plans.db"));
      db.pragma("journal_mode = WAL");
      for (const m of MIGRATIONS) db.exec(m.sqlite);
      const series = (n: number) =>
        `(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ${n}) SELECT g FROM s)`;
      db.transaction(() => {
        for (const text of seed(series, (e, w) => `printf('%0${w}d', ${e})`, "0")) db.exec(text);
      })();
      // No ANALYZE: the server never runs it, so these are the plans it gets.
      const recorded: { text: string; plan: unknown }[] = [];
      const explain = (text: string, params: unknown[]) => {
        const lines = db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(...params) as { detail: string }[];
        recorded.push({ text, plan: lines.map((l) => l.detail) });
      };
      const fake = (text: string) =>
        ({
          get: (...params: unknown[]) => void explain(text, params),
          all: (...params: unknown[]) => (explain(text, params), []),
          run: (...params: unknown[]) => (explain(text, params), { changes: 0, lastInsertRowid: 0 }),
        }) as unknown as Statement;
      const connection: SqliteConnection = {
        st: fake,
        wrote: () => undefined,
        ledgers: new Map(),
        unwrittenLedgers: new Map(),
        users: new Map(),
        wallets: walletCache(),
        flushWallets: () => undefined,
        remember: (_cache, _key, value) => value,
      };
      plans = await planAll(sqliteTx(connection), recorded);
    }, 120_000);
    afterAll(() => {
      db?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("seeded", () => {
      expect(db.prepare("SELECT COUNT(*) AS n FROM leases").get()).toEqual({ n: LEASES });
      expect(db.prepare("SELECT COUNT(*) AS n FROM usage_records").get()).toEqual({ n: USAGE });
    });

    it("no query scans a big table; no list sorts (an index gives its order)", () => {
      const problems: string[] = [];
      for (const p of plans) {
        const lines = p.plan as string[];
        for (const line of lines) {
          // A SCAN of a table in its own order (rowid) is bounded only by a LIMIT without filter: the admin's first page.
          const scan = /^SCAN (\w+)(?! USING)/.exec(line);
          if (scan && BIG.includes(scan[1]!) && !(p.name === "leases.list admin" && !/WHERE/.test(p.text)))
            problems.push(`${p.name}: ${line}`);
          // An aggregate groups what it reads (a summary reads all of its range; it is not a list).
          const grouping = /FOR GROUP BY/.test(line) && !isList(p.name);
          if (/TEMP B-TREE/.test(line) && !MAY_SORT.has(p.name) && !grouping) problems.push(`${p.name}: ${line}`);
        }
      }
      const shown = plans.map((p) => `${p.name}: ${(p.plan as string[]).join(" | ")}`);
      if (process.env["SHOW_PLANS"]) console.log(shown.join("\n"));
      expect(problems, shown.join("\n")).toEqual([]);
    });
  });

  describe.skipIf(!postgresUrl())("PostgreSQL", () => {
    let storage: Storage;
    let sql: postgres.Sql;
    let plans: Planned[];
    beforeAll(async () => {
      const url = freshPostgresUrl("plans");
      storage = await openStorage(url);
      const schema = new URL(url).searchParams.get("schema")!;
      sql = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
      for (const text of seed(
        (n) => `generate_series(1, ${n}) AS g`,
        (e, w) => `lpad(${e}::text, ${w}, '0')`,
        "false",
      ))
        await sql.unsafe(text);
      await sql.unsafe("ANALYZE");
      const recorded: { text: string; plan: unknown }[] = [];
      const fake = {
        unsafe: (text: string, params: unknown[] = []) => {
          const explained = sql
            // ANALYZE: run (these are all reads) for the rows each node really read, and how a sort sorted.
            .unsafe(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, params as postgres.ParameterOrJSON<never>[])
            .then((rows) => {
              const json = rows[0]?.["QUERY PLAN"] as { Plan: unknown }[];
              recorded.push({ text, plan: json[0]?.Plan });
              return Object.assign([], { count: 0 });
            });
          return explained;
        },
      } as unknown as postgres.TransactionSql;
      // A read's view: the same statements as a write's, without the locks.
      plans = await planAll(postgresTx(fake, 1, undefined, undefined, true), recorded);
    }, 120_000);
    afterAll(async () => {
      await sql?.end({ timeout: 1 });
      await storage?.close();
    });

    interface Node {
      "Node Type": string;
      "Relation Name"?: string;
      "Index Name"?: string;
      "Plan Rows": number;
      "Actual Rows": number;
      "Actual Loops": number;
      "Sort Space Type"?: string;
      "Rows Removed by Filter"?: number;
      "Rows Removed by Index Recheck"?: number;
      Plans?: Node[];
    }
    const nodes = (n: Node): Node[] => [n, ...(n.Plans ?? []).flatMap(nodes)];

    it("no query scans a big table sequentially; no sort but of a few rows in memory; every list a LIMIT reading a bounded number of rows", () => {
      const problems: string[] = [];
      // What a node read: the rows it returned and those its filter dropped (a scan that finds nothing may read everything).
      const read = (n: Node) =>
        (n["Actual Rows"] + (n["Rows Removed by Filter"] ?? 0) + (n["Rows Removed by Index Recheck"] ?? 0)) *
        n["Actual Loops"];
      for (const p of plans) {
        const root = p.plan as Node;
        let rows = 0;
        for (const n of nodes(root)) {
          if (n["Node Type"] === "Seq Scan" && BIG.includes(n["Relation Name"] ?? ""))
            problems.push(`${p.name}: Seq Scan on ${n["Relation Name"]}`);
          if (n["Sort Space Type"] === "Disk") problems.push(`${p.name}: a sort spilled to disk`);
          if (/Sort/.test(n["Node Type"]) && !MAY_SORT.has(p.name) && read(n) > SMALL_SORT)
            problems.push(`${p.name}: ${n["Node Type"]} of ${read(n)} rows`);
          if (/Scan/.test(n["Node Type"])) rows += read(n);
        }
        if (isList(p.name) && root["Node Type"] !== "Limit") problems.push(`${p.name}: ${root["Node Type"]}, no LIMIT`);
        // A search by a piece of a name reads the name index until its page is full (see UsersTx.page).
        if (isList(p.name) && !/search/.test(p.name) && rows > BOUNDED) problems.push(`${p.name}: read ${rows} rows`);
      }
      const shown = plans.map(
        (p) =>
          `${p.name}: ${nodes(p.plan as Node)
            .map((n) => `${n["Node Type"]}${n["Index Name"] ? ` ${n["Index Name"]}` : ""} (${read(n)})`)
            .join(" > ")}`,
      );
      if (process.env["SHOW_PLANS"]) console.log(shown.join("\n"));
      expect(problems, shown.join("\n")).toEqual([]);
    });

    it("the per-identity lease index is gone: no lease list needs one (leases_identity)", async () => {
      const [row] =
        await sql`SELECT COUNT(*)::int AS n FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'leases_identity'`;
      expect(row?.["n"]).toBe(0);
      const used = new Set(plans.flatMap((p) => nodes(p.plan as Node).map((n) => n["Index Name"])));
      for (const index of ["leases_status", "leases_app", "leases_app_status", "leases_user", "leases_user_status"])
        expect(used, index).toContain(index);
    });
  });
});
