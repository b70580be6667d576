import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../pg/postgres-url.js";
import { LATEST_VERSION, MIGRATIONS } from "../../packages/server/src/storage/migrations.js";
import { runCli } from "./binary.js";

/**
 * `gpupool migrate` and the schema version check, through the real binary on both adapters:
 * status, applying, nothing to do; and a schema a newer release migrated, which both
 * `gpupool migrate` and `gpupool server` refuse (exit 1) saying both versions.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Target {
  readonly url: string;
  /** Records a version the binary does not know, as a newer release's migrate would. */
  bumpVersion(version: number): Promise<void>;
  /** Whether anything was created yet. */
  exists(): Promise<boolean>;
}

function sqliteTarget(): Target {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-migrate-"));
  dirs.push(dir);
  const file = join(dir, "pool.db");
  return {
    url: `sqlite:${file}`,
    bumpVersion: async (version) => {
      const db = new Database(file);
      db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 1)").run(version);
      db.close();
    },
    exists: async () => existsSync(file),
  };
}

function postgresTarget(): Target {
  const url = freshPostgresUrl("migrate-cli");
  const schema = new URL(url).searchParams.get("schema")!;
  const admin = (): postgres.Sql => postgres(postgresUrl()!, { max: 1, onnotice: () => undefined });
  return {
    url,
    bumpVersion: async (version) => {
      const sql = admin();
      await sql.unsafe(`INSERT INTO "${schema}".schema_migrations (version, applied_at) VALUES (${version}, 1)`);
      await sql.end();
    },
    exists: async () => {
      const sql = admin();
      const rows = await sql`SELECT 1 FROM pg_namespace WHERE nspname = ${schema}`;
      await sql.end();
      return rows.length > 0;
    },
  };
}

describe.each([
  ["SQLite", sqliteTarget],
  ["PostgreSQL", postgresTarget],
])("gpupool migrate (%s)", (name, target) => {
  it.skipIf(name === "PostgreSQL" && !postgresUrl())(
    "lists what is pending, applies it, then finds the schema current",
    async () => {
      const t = target();
      const status = await runCli(["migrate", "--storage", t.url, "--status"]);
      expect(status.code).toBe(0);
      expect(status.stdout).toContain(`schema at version 0; this gpupool knows up to version ${LATEST_VERSION}.`);
      expect(status.stdout).toContain(`Pending (${MIGRATIONS.length})`);
      expect(await t.exists()).toBe(false);

      const applied = await runCli(["migrate", "--storage", t.url]);
      expect(applied.code).toBe(0);
      for (const m of MIGRATIONS)
        expect(applied.stdout).toMatch(
          new RegExp(`^applied ${m.version}${m.online === true ? " \\(online\\)" : ""}: `, "m"),
        );
      expect(applied.stdout).toContain(`schema now at version ${LATEST_VERSION} (was 0).`);

      const again = await runCli(["migrate", "--storage", t.url]);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain(`the schema is current (version ${LATEST_VERSION}); nothing to apply.`);
      expect((await runCli(["migrate", "--storage", t.url, "--dry-run"])).stdout).toContain(
        "The schema is current: nothing to apply.",
      );
    },
    // Each run of the binary loads the server package (a few seconds on a busy 2-core machine).
    120_000,
  );

  it.skipIf(name === "PostgreSQL" && !postgresUrl())(
    "a schema a newer release migrated: migrate and server both refuse, exit 1, saying both versions",
    async () => {
      const t = target();
      expect((await runCli(["migrate", "--storage", t.url])).code).toBe(0);
      await t.bumpVersion(LATEST_VERSION + 1);
      const says = `the database schema is at version ${LATEST_VERSION + 1}, but this gpupool binary knows migrations only up to version ${LATEST_VERSION}`;
      const migrate = await runCli(["migrate", "--storage", t.url]);
      expect(migrate.code).toBe(1);
      expect(migrate.stderr).toContain(says);
      expect(migrate.stderr).toMatch(/Upgrade this binary/);
      const server = await runCli(["server", "--storage", t.url, "--port", "0"]);
      expect(server.code).toBe(1);
      expect(server.stderr).toContain(says);
      expect(server.stdout).not.toMatch(/listening/);
    },
    // Each run of the binary loads the server package (a few seconds on a busy 2-core machine).
    120_000,
  );
});
