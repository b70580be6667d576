import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { LATEST_VERSION, MIGRATIONS } from "../src/storage/migrations.js";
import { openStorage } from "../src/storage/open-store.js";
import { Table } from "../src/storage/table.js";
import * as billingTables from "../src/storage/billing-tables.js";
import * as dashboardTables from "../src/storage/dashboard-sql.js";
import * as tables from "../src/storage/tables.js";

/**
 * The paired migrations (storage/migrations.ts): a fresh SQLite file and a fresh PostgreSQL schema
 * reach the same version with the same tables, the same columns (name, nullability, type family)
 * and equivalent indexes; the column tables (storage/tables.ts) name exactly those columns; and no
 * shipped version's text ever changes (databases already ran it).
 */

/** A schema as both databases can describe it, normalised so the two can be compared. */
interface Schema {
  version: number;
  tables: Record<string, TableShape>;
  /** Indexes created by name (not those behind a PRIMARY KEY or UNIQUE constraint). */
  indexes: Record<string, { table: string; columns: string[]; unique: boolean; where: string | null }>;
}

interface TableShape {
  /** Column name → "<family> null" or "<family> not null". */
  columns: Record<string, string>;
  primaryKey: string[];
  /** UNIQUE constraints, as "a,b", sorted. */
  unique: string[];
  /** Foreign keys, as "column -> table(column)", sorted. */
  foreignKeys: string[];
}

/** Type families: what a column holds, whatever each database calls it. */
const SQLITE_FAMILY: Record<string, string> = { INTEGER: "integer", REAL: "real", TEXT: "text" };
// BOOLEAN is SQLite's INTEGER 0/1 (see table.ts `boolean`); BIGINT holds milliseconds.
const POSTGRES_FAMILY: Record<string, string> = {
  bigint: "integer",
  integer: "integer",
  boolean: "integer",
  "double precision": "real",
  text: "text",
};

/** A partial index's predicate as text both spell alike: `status IN ('queued', 'active')`. */
function normalisePredicate(where: string | null): string | null {
  if (where === null) return null;
  let s = where
    .replace(/::\w+/g, "") // PostgreSQL's casts: 'user'::text
    .replace(/(\w+) = ANY \(ARRAY\[(.*?)\]\)/gi, "$1 IN ($2)") // its spelling of IN
    .replace(/\s+/g, " ")
    .trim();
  const wrapped = (x: string): boolean => {
    if (!x.startsWith("(") || !x.endsWith(")")) return false;
    let depth = 0;
    for (let i = 0; i < x.length - 1; i++) {
      depth += x[i] === "(" ? 1 : x[i] === ")" ? -1 : 0;
      if (depth === 0) return false;
    }
    return true;
  };
  while (wrapped(s)) s = s.slice(1, -1).trim();
  return s.toLowerCase();
}

function sqliteSchema(path: string): Schema {
  const db = new Database(path, { readonly: true });
  try {
    const version = (db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as { v: number }).v;
    const names = (
      db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .all() as { name: string }[]
    ).map((r) => r.name);
    const schema: Schema = { version, tables: {}, indexes: {} };
    for (const table of names) {
      const info = db.prepare(`PRAGMA table_info(${table})`).all() as {
        name: string;
        type: string;
        notnull: number;
        pk: number;
      }[];
      const shape: TableShape = { columns: {}, primaryKey: [], unique: [], foreignKeys: [] };
      for (const c of info) {
        // A PRIMARY KEY column is never NULL here (SQLite's legacy lets a TEXT key be NULL; nothing writes one).
        shape.columns[c.name] = `${SQLITE_FAMILY[c.type] ?? c.type} ${c.notnull || c.pk ? "not null" : "null"}`;
      }
      shape.primaryKey = info
        .filter((c) => c.pk > 0)
        .sort((a, b) => a.pk - b.pk)
        .map((c) => c.name);
      for (const ix of db.prepare(`PRAGMA index_list(${table})`).all() as {
        name: string;
        unique: number;
        origin: string;
      }[]) {
        const columns = (db.prepare(`PRAGMA index_info(${ix.name})`).all() as { seqno: number; name: string }[])
          .sort((a, b) => a.seqno - b.seqno)
          .map((c) => c.name);
        if (ix.origin === "pk") continue;
        if (ix.origin === "u") {
          shape.unique.push(columns.join(","));
          continue;
        }
        const sql = (
          db.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?").get(ix.name) as { sql: string }
        ).sql;
        const where = /\bWHERE\b([\s\S]*)$/i.exec(sql)?.[1] ?? null;
        schema.indexes[ix.name] = { table, columns, unique: ix.unique === 1, where: normalisePredicate(where) };
      }
      shape.unique.sort();
      shape.foreignKeys = (
        db.prepare(`PRAGMA foreign_key_list(${table})`).all() as { table: string; from: string; to: string }[]
      )
        .map((f) => `${f.from} -> ${f.table}(${f.to})`)
        .sort();
      schema.tables[table] = shape;
    }
    return schema;
  } finally {
    db.close();
  }
}

async function postgresSchema(sql: postgres.Sql, schemaName: string): Promise<Schema> {
  const [{ v }] = (await sql.unsafe(
    `SELECT MAX(version)::int AS v FROM ${schemaName}.schema_migrations`,
  )) as unknown as [{ v: number }];
  const schema: Schema = { version: v, tables: {}, indexes: {} };
  const columns = await sql<{ table_name: string; column_name: string; data_type: string; is_nullable: string }[]>`
    SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = ${schemaName}`;
  for (const c of columns) {
    const shape = (schema.tables[c.table_name] ??= { columns: {}, primaryKey: [], unique: [], foreignKeys: [] });
    shape.columns[c.column_name] =
      `${POSTGRES_FAMILY[c.data_type] ?? c.data_type} ${c.is_nullable === "YES" ? "null" : "not null"}`;
  }
  const indexes = await sql<
    {
      name: string;
      table: string;
      unique: boolean;
      constraint: string | null;
      columns: string;
      predicate: string | null;
    }[]
  >`
    SELECT i.relname AS name, t.relname AS table, ix.indisunique AS unique, con.contype::text AS constraint,
           (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS columns,
           pg_get_expr(ix.indpred, ix.indrelid) AS predicate
    FROM pg_index ix
    JOIN pg_class i ON i.oid = ix.indexrelid
    JOIN pg_class t ON t.oid = ix.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_constraint con ON con.conindid = ix.indexrelid AND con.conrelid = t.oid
    WHERE n.nspname = ${schemaName}`;
  for (const ix of indexes) {
    const shape = schema.tables[ix.table]!;
    if (ix.constraint === "p") shape.primaryKey = ix.columns.split(",");
    else if (ix.constraint === "u") shape.unique.push(ix.columns);
    else
      schema.indexes[ix.name] = {
        table: ix.table,
        columns: ix.columns.split(","),
        unique: ix.unique,
        where: normalisePredicate(ix.predicate),
      };
  }
  const foreignKeys = await sql<{ table: string; column: string; ref_table: string; ref_column: string }[]>`
    SELECT cl.relname AS table, a.attname AS column, rc.relname AS ref_table, ra.attname AS ref_column
    FROM pg_constraint c
    JOIN pg_class cl ON cl.oid = c.conrelid
    JOIN pg_namespace n ON n.oid = cl.relnamespace
    JOIN pg_class rc ON rc.oid = c.confrelid
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
    JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
    WHERE c.contype = 'f' AND n.nspname = ${schemaName}`;
  for (const f of foreignKeys)
    schema.tables[f.table]!.foreignKeys.push(`${f.column} -> ${f.ref_table}(${f.ref_column})`);
  for (const shape of Object.values(schema.tables)) {
    shape.unique.sort();
    shape.foreignKeys.sort();
  }
  return schema;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function migratedSqlite(): Promise<Schema> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-migrations-"));
  dirs.push(dir);
  const path = join(dir, "fresh.db");
  const storage = await openStorage(`sqlite:${path}`);
  await storage.close();
  return sqliteSchema(path);
}

describe("paired migrations", () => {
  it("are numbered 1, 2, 3, … with a reason each", () => {
    const versions = MIGRATIONS.map((m) => m.version);
    const top = Math.max(...versions);
    expect(versions).toEqual(Array.from({ length: top }, (_, i) => i + 1));
    expect(LATEST_VERSION).toBe(top);
    for (const m of MIGRATIONS) expect(m.why.length, `version ${m.version}`).toBeGreaterThan(10);
  });

  it("never change once shipped: each version's text is what databases already ran", () => {
    // sha256 of each version's text as it shipped (versions 1–3 as the adapters ran them before the
    // lists were paired; 4 as SQLite ran it, PostgreSQL's the same text). Add a line per new version.
    const shipped: [number, string, string][] = [
      [
        1,
        "99ff96e420cbf2f2c52144d5c1451fc6bb2108f0dc4ecf87a54dc5c6bda717b2",
        "9f7ec38c5650033b08981da247e8627afc86443dfb56308d2707866af09df466",
      ],
      [
        2,
        "b4564dd03aaca8059622a503afdf38a483957086464a82933c27deb627ddd051",
        "9007e6f91f43328bfef7baede182366917e3ffcd131b804ed99b5ee6ea5f0357",
      ],
      [
        3,
        "2ee0136c6833bcc0b212692dd90c1cc40e4b7372bc68b86d4b76fe8ed776eda4",
        "c938538808b72bfc46cf3108a1ca7ebecdfe758e16c6312f5c5a4ab4d599903d",
      ],
      [
        4,
        "532f25c0bc54e244e3d8d04b888d4b0648f3a0e645a1fe48a0c329d0a5b8cf9c",
        "532f25c0bc54e244e3d8d04b888d4b0648f3a0e645a1fe48a0c329d0a5b8cf9c",
      ],
      [
        6,
        "d05d8ed654a9885abc69fbaa2c5ea9d23f147be2f2cf505b9d979dbab266ceec",
        "8af89cc5b111037875e8cdb6d6760b683974eaea921c0230dd0fa287456c08fa",
      ],
    ];
    const sha = (text: string): string => createHash("sha256").update(text).digest("hex");
    for (const [version, sqlite, pg] of shipped) {
      const m = MIGRATIONS.find((x) => x.version === version)!;
      expect([sha(m.sqlite), sha(m.postgres)], `version ${version}`).toEqual([sqlite, pg]);
    }
  });

  it("normalise both spellings of a partial index's predicate alike", () => {
    expect(normalisePredicate("(status = ANY (ARRAY['queued'::text, 'active'::text]))")).toBe(
      normalisePredicate(" status IN ('queued', 'active')\n  "),
    );
    expect(normalisePredicate("(identity_kind = 'user'::text)")).toBe("identity_kind = 'user'");
    expect(normalisePredicate("(a = 1) AND (b = 2)")).toBe("(a = 1) and (b = 2)");
  });

  it("SQLite: the column tables name exactly the migrated columns of their tables", async () => {
    const schema = await migratedSqlite();
    const declared = [
      ...Object.values(tables),
      ...Object.values(billingTables),
      ...Object.values(dashboardTables),
    ].filter((t) => t instanceof Table);
    expect(declared.map((t) => t.name).sort()).toEqual(
      Object.keys(schema.tables)
        .filter((t) => t !== "schema_migrations")
        .sort(),
    );
    for (const t of declared) {
      const names = [...(t.key ? [t.key.name] : []), ...t.selectList.split(", ")];
      expect(names.sort(), t.name).toEqual(Object.keys(schema.tables[t.name]!.columns).sort());
    }
  });

  describe.skipIf(!postgresUrl())("SQLite and PostgreSQL", () => {
    it("reach the same version with the same tables, columns and equivalent indexes", async () => {
      const url = freshPostgresUrl("migrations");
      const storage = await openStorage(url);
      await storage.close();
      const schemaName = new URL(url).searchParams.get("schema")!;
      const sql = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined });
      let pg: Schema;
      try {
        pg = await postgresSchema(sql, schemaName);
      } finally {
        await sql.end();
      }
      const sqlite = await migratedSqlite();
      expect(sqlite.version).toBe(LATEST_VERSION);
      expect(pg.version).toBe(LATEST_VERSION);
      expect(Object.keys(pg.tables).sort()).toEqual(Object.keys(sqlite.tables).sort());
      for (const table of Object.keys(sqlite.tables)) expect(pg.tables[table], table).toEqual(sqlite.tables[table]);
      expect(pg.indexes).toEqual(sqlite.indexes);
      // What version 4 is for: no index of every identity's leases, one of users' leases. Retention
      // (10) indexes only the small session tables (leases and ledgers are walked by their keys);
      // 11 one index per lease list filter, each ending in seq (leases_live dropped), and usage
      // pages of an app or user in (ended_at, id) order; 12 a wallet transaction in one index, in the
      // order its list reads (user_id, at, id), instead of that and its id's; 13 a user's usage records
      // that carry wallet transactions, newest first (the wallet's list of a user's calls); 14 the
      // rest of a user's records (usage_user_page split in two disjoint parts: one entry per record).
      expect(Object.keys(pg.indexes).sort()).toEqual([
        "credit_grants_key",
        "credit_grants_user",
        "dashboard_codes_expires",
        "dashboard_sessions_expires",
        "dashboard_sessions_revoked",
        "leases_app",
        "leases_app_status",
        "leases_status",
        "leases_user",
        "leases_user_status",
        "sessions_expires",
        "sessions_revoked",
        "sessions_user",
        "usage_app_page",
        "usage_ended",
        "usage_user_plain",
        "usage_user_wallet",
        "wallet_transactions_key",
      ]);
    });

    it("a PostgreSQL schema at version 3 (before the lists were paired) upgrades to the latest, its leases intact", async () => {
      const url = freshPostgresUrl("from-v3");
      const schemaName = new URL(url).searchParams.get("schema")!;
      const sql = postgres(postgresUrl()!, {
        max: 1,
        onnotice: () => undefined,
        connection: { search_path: schemaName },
      });
      try {
        await sql.unsafe(`CREATE SCHEMA ${schemaName}`);
        await sql.unsafe("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)");
        for (const m of MIGRATIONS.filter((x) => x.version <= 3)) {
          await sql.unsafe(m.postgres);
          await sql`INSERT INTO schema_migrations (version, applied_at) VALUES (${m.version}, 1)`;
        }
        await sql`
          INSERT INTO leases (id, app_id, identity_kind, identity_id, tier, size, slots, cost, duration_ms, reserved_ms, status, queued_at, charged_ms, refunded_ms, failed)
          VALUES ('l1', NULL, 'user', 'u1', 'free', 'large', 1, 1, 1000, 1000, 'queued', 5000, 0, 0, false)`;
        const storage = await openStorage(url);
        try {
          expect(
            await storage.store.transaction((t) => t.leases.list({ identity: { kind: "user", id: "u1" }, limit: 10 })),
          ).toMatchObject([{ id: "l1", status: "queued" }]);
        } finally {
          await storage.close();
        }
        const indexes = await sql<
          { indexname: string }[]
        >`SELECT indexname FROM pg_indexes WHERE schemaname = ${schemaName} AND tablename = 'leases'`;
        expect(indexes.map((r) => r.indexname)).toContain("leases_user");
        expect(indexes.map((r) => r.indexname)).not.toContain("leases_identity");
        expect((await sql`SELECT version FROM schema_migrations ORDER BY version`).map((r) => r["version"])).toEqual(
          MIGRATIONS.map((m) => m.version),
        );
      } finally {
        await sql.end();
      }
    });
  });
});
