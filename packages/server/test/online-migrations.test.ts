import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { LATEST_VERSION, MIGRATIONS } from "../src/storage/migrations.js";
import type { Migration } from "../src/storage/migrations.js";
import { migrateStorage } from "../src/storage/migrate-storage.js";
import { openStorage } from "../src/storage/open-store.js";
import { SchemaTooNewError, concurrentIndexName, splitStatements } from "../src/storage/schema-version.js";

/**
 * Migrations beyond the shipped list (storage-migrations.test.ts checks that one): the schema
 * version check on both adapters, and on PostgreSQL online versions (outside a transaction,
 * INVALID indexes rebuilt), no statement timeout, and turns taken with other migrators.
 */

const NEXT = LATEST_VERSION + 1;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function sqliteUrl(): string {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-online-"));
  dirs.push(dir);
  return `sqlite:${join(dir, "pool.db")}`;
}

/** The shipped versions and `extra`, numbered after them. */
function withExtra(...extra: Omit<Migration, "version">[]): Migration[] {
  return [...MIGRATIONS, ...extra.map((m, i) => ({ ...m, version: LATEST_VERSION + 1 + i }))];
}

const schemaOf = (url: string): string => new URL(url).searchParams.get("schema")!;

describe("splitting an online migration into statements", () => {
  it("splits at each ; that ends a line and names the index each concurrent build makes", () => {
    const text = `
  -- why
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_x ON leases(tier, seq);
  CREATE UNIQUE INDEX CONCURRENTLY "leases_y" ON leases(id) WHERE status = 'a;b';

  ALTER TABLE leases ADD COLUMN IF NOT EXISTS note TEXT;
  `;
    const statements = splitStatements(text);
    expect(statements).toHaveLength(3);
    expect(statements.map(concurrentIndexName)).toEqual(["leases_x", "leases_y", null]);
    expect(statements[1]).toContain("'a;b'");
  });
});

describe.each([
  ["SQLite", (): string => sqliteUrl()],
  ["PostgreSQL", (): string => freshPostgresUrl("too-new")],
])("a schema newer than the binary knows (%s)", (name, url) => {
  it.skipIf(name === "PostgreSQL" && !postgresUrl())(
    "is refused at start and by migrate, saying both versions; the binary that knows it starts",
    async () => {
      const storageUrl = url();
      const newer = withExtra({ why: "a column of a newer release", sqlite: "SELECT 1;", postgres: "SELECT 1;" });
      expect(await migrateStorage(storageUrl, { migrations: newer })).toMatchObject({ from: 0, to: NEXT });
      const refusal = await openStorage(storageUrl).then(
        async (s) => {
          await s.close();
          return null;
        },
        (err: unknown) => err,
      );
      expect(refusal).toBeInstanceOf(SchemaTooNewError);
      expect((refusal as Error).message).toContain(`schema is at version ${NEXT}`);
      expect((refusal as Error).message).toContain(`only up to version ${LATEST_VERSION}`);
      expect((refusal as Error).message).toMatch(/Upgrade this binary/);
      await expect(migrateStorage(storageUrl)).rejects.toBeInstanceOf(SchemaTooNewError);
      await expect(migrateStorage(storageUrl, { dryRun: true })).rejects.toBeInstanceOf(SchemaTooNewError);
      // The file (or schema) was not left held: the newer binary opens it.
      const storage = await openStorage(storageUrl, { migrations: newer });
      await storage.close();
    },
  );

  it.skipIf(name === "PostgreSQL" && !postgresUrl())(
    "a dry run lists what is missing and applies nothing",
    async () => {
      const storageUrl = url();
      const dry = await migrateStorage(storageUrl, { dryRun: true });
      expect(dry).toMatchObject({ from: 0, to: 0, known: LATEST_VERSION, applied: [] });
      expect(dry.pending.map((m) => m.version)).toEqual(MIGRATIONS.map((m) => m.version));
      expect((await migrateStorage(storageUrl, { dryRun: true })).from).toBe(0);
      const applied = await migrateStorage(storageUrl);
      expect(applied.applied.map((m) => m.version)).toEqual(MIGRATIONS.map((m) => m.version));
      expect(await migrateStorage(storageUrl, { dryRun: true })).toMatchObject({
        from: LATEST_VERSION,
        pending: [],
      });
    },
  );
});

describe.skipIf(!postgresUrl())("PostgreSQL migrations", () => {
  const admin = postgres(postgresUrl() ?? "postgres://unused", { max: 2, onnotice: () => undefined });
  afterAll(() => admin.end());
  const opened: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });

  const versions = async (schema: string): Promise<number[]> =>
    (await admin.unsafe(`SELECT version FROM "${schema}".schema_migrations ORDER BY version`)).map((r) =>
      Number(r["version"]),
    );
  const index = async (schema: string, name: string): Promise<{ valid: boolean } | null> => {
    const [row] = await admin<{ valid: boolean }[]>`
      SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ${schema} AND c.relname = ${name}`;
    return row ?? null;
  };

  it("runs a migration that takes longer than the statement timeout", async () => {
    const url = `${freshPostgresUrl("slow")}&statement_timeout=200`;
    const slow = withExtra({ why: "a slow backfill", sqlite: "SELECT 1;", postgres: "SELECT pg_sleep(0.6);" });
    const storage = await openStorage(url, { migrations: slow });
    opened.push(storage);
    expect(await versions(schemaOf(url))).toContain(NEXT);
    // The replica's own statements keep their timeout.
    await expect(storage.store.ping()).resolves.toBeUndefined();
  });

  it("builds an online version's index concurrently, outside a transaction, and records it", async () => {
    const url = freshPostgresUrl("online");
    await migrateStorage(url);
    const online = withExtra({
      why: "an index built while replicas serve",
      online: true,
      sqlite: "CREATE INDEX IF NOT EXISTS leases_tier ON leases(tier, seq);",
      postgres: `
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_tier ON leases(tier, seq);
  ALTER TABLE leases ADD COLUMN IF NOT EXISTS note TEXT;
  `,
    });
    const report = await migrateStorage(url, { migrations: online });
    expect(report.applied.map((m) => m.version)).toEqual([NEXT]);
    expect(await index(schemaOf(url), "leases_tier")).toEqual({ valid: true });
    expect(await versions(schemaOf(url))).toContain(NEXT);
    // SQLite runs the same version as a plain one.
    const sqlite = sqliteUrl();
    expect((await migrateStorage(sqlite, { migrations: online })).to).toBe(NEXT);
  });

  it("an index build that failed is left INVALID and unrecorded; the next run drops it and builds it again", async () => {
    const url = freshPostgresUrl("invalid");
    const schema = schemaOf(url);
    await migrateStorage(url);
    for (const id of ["a", "b"])
      await admin.unsafe(
        `INSERT INTO "${schema}".users (id, name, tier, token_hash, created_at) VALUES ('${id}', 'n-${id}', 'free', 'h-${id}', 1)`,
      );
    const unique = withExtra({
      why: "one user per tier (a build that fails on duplicates)",
      online: true,
      sqlite: "CREATE UNIQUE INDEX IF NOT EXISTS users_tier ON users(tier);",
      postgres: "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_tier ON users(tier);",
    });
    await expect(migrateStorage(url, { migrations: unique })).rejects.toMatchObject({ code: "23505" });
    expect(await index(schema, "users_tier")).toEqual({ valid: false });
    expect(await versions(schema)).not.toContain(NEXT);
    await admin.unsafe(`DELETE FROM "${schema}".users WHERE id = 'b'`);
    expect((await migrateStorage(url, { migrations: unique })).applied.map((m) => m.version)).toEqual([NEXT]);
    expect(await index(schema, "users_tier")).toEqual({ valid: true });
    expect(await versions(schema)).toContain(NEXT);
  });

  it("migrators started together take turns across an online version: each version applied once", async () => {
    const url = freshPostgresUrl("online-race");
    const online = withExtra(
      {
        why: "a slow online step",
        online: true,
        sqlite: "SELECT 1;",
        postgres: "SELECT pg_sleep(0.3);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS leases_tier ON leases(tier, seq);",
      },
      { why: "a plain one after it", sqlite: "SELECT 1;", postgres: "ALTER TABLE leases ADD COLUMN note TEXT;" },
    );
    const reports = await Promise.all(Array.from({ length: 3 }, () => migrateStorage(url, { migrations: online })));
    // One of them applied everything; the others found nothing left (an ADD COLUMN run twice would fail).
    expect(reports.map((r) => r.applied.length).sort()).toEqual([0, 0, online.length]);
    expect(await versions(schemaOf(url))).toEqual(online.map((m) => m.version));
  });

  it("refuses at start a ?max= that one replica cannot fit under max_connections, saying why", async () => {
    const [row] = await admin<{ n: number }[]>`SELECT current_setting('max_connections')::int AS n`;
    const max = row!.n - 1;
    const err = await openStorage(`${freshPostgresUrl("budget")}&max=${max}`).then(
      async (s) => {
        await s.close();
        return null;
      },
      (e: unknown) => e,
    );
    expect((err as Error | null)?.message).toMatch(
      new RegExp(`\\?max=${max} cannot work: each replica opens up to ${max + 2} connections`),
    );
    expect((err as Error).message).toMatch(/Lower \?max=/);
  });
});
