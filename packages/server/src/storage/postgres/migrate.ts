import type { Migration } from "../migrations.js";
import { concurrentIndexName, newestVersion, pendingMigrations, splitStatements } from "../schema-version.js";
import type { MigrateOptions, MigrationReport } from "../schema-version.js";
import { StorageUnavailableError } from "../store.js";
import type { Session } from "./session.js";

/** How often a replica waiting for another one's migration tries the migration lock again. */
const LOCK_POLL_MS = 200;

export interface PostgresMigrationTarget {
  readonly schema: string;
  /** The migration lock's key (an advisory lock; see connections.ts `lockKey`). */
  readonly lockKey: string;
  /** The storage URL's lock_timeout, for plain versions (online ones wait as long as they need). */
  readonly lockTimeoutMs: number;
}

/**
 * Migrates `target.schema` on `session`, a session of its own which the caller ends afterwards (its
 * settings are changed here: no statement timeout, and the lock timeout per version).
 *
 * Replicas starting together take turns with a session-level advisory lock, held across the
 * versions, plain (each in a transaction) and online (statement by statement outside any
 * transaction, which a transaction-level lock could not cover). The lock is tried every
 * LOCK_POLL_MS rather than waited for in `pg_advisory_lock`: a statement blocked on a lock holds a
 * snapshot, and `CREATE INDEX CONCURRENTLY` waits for every snapshot older than its own to go, so
 * a replica blocked behind a concurrent build would wait for the build while the build waited for
 * it. The lock of a session that dies goes with it: the next run finds the version unrecorded and
 * runs it again (online statements are idempotent; an index left INVALID is dropped first).
 */
export async function migratePostgres(
  session: Session,
  target: PostgresMigrationTarget,
  options: MigrateOptions,
  migrations: readonly Migration[],
): Promise<MigrationReport> {
  const { schema } = target;
  const table = `"${schema}".schema_migrations`;
  const run = async <T extends object = Record<string, unknown>>(
    text: string,
    params: unknown[] = [],
  ): Promise<T[]> => {
    // A session whose connection closed would reconnect under the driver, without our settings or lock.
    if (!session.isOpen) throw new StorageUnavailableError("The migration's PostgreSQL session closed; run it again.");
    return (await session.sql.unsafe(text, params as never[])) as unknown as T[];
  };
  const currentVersion = async (): Promise<number> => {
    const [t] = await run<{ t: string | null }>("SELECT to_regclass($1)::text AS t", [table]);
    if (!t?.t) return 0;
    const [row] = await run<{ v: number }>(`SELECT COALESCE(MAX(version), 0)::int AS v FROM ${table}`);
    return row?.v ?? 0;
  };
  const known = newestVersion(migrations);
  if (options.dryRun === true) {
    const from = await currentVersion();
    return { from, to: from, known, applied: [], pending: pendingMigrations(migrations, from) };
  }

  await run("SET statement_timeout = 0");
  for (;;) {
    const [row] = await run<{ got: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS got", [target.lockKey]);
    if (row?.got === true) break;
    await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
  try {
    // Only when missing: CREATE SCHEMA checks the CREATE privilege on the database even with
    // IF NOT EXISTS, and a schema made by an administrator for a less privileged user is fine.
    const [exists] = await run("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schema]);
    if (!exists) await run(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await run(`CREATE TABLE IF NOT EXISTS ${table} (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`);
    const from = await currentVersion();
    const pending = pendingMigrations(migrations, from);
    const applied: Migration[] = [];
    const record = `INSERT INTO ${table} (version, applied_at) VALUES ($1, $2)`;
    for (const m of pending) {
      const started = performance.now();
      if (m.online === true) {
        await run("SET lock_timeout = 0");
        for (const statement of splitStatements(m.postgres)) {
          const index = concurrentIndexName(statement);
          if (index !== null) await dropInvalidIndex(run, schema, index);
          await run(statement);
        }
        await run(record, [m.version, Date.now()]);
      } else {
        await run(`SET lock_timeout = ${target.lockTimeoutMs}`);
        // BEGIN and COMMIT sent by hand, through `run`, rather than with `sql.begin`: that answers a
        // failure with a ROLLBACK even on a connection that closed (see session.ts).
        await run("BEGIN");
        try {
          await run(m.postgres);
          await run(record, [m.version, Date.now()]);
          await run("COMMIT");
        } catch (err) {
          if (session.isOpen) await run("ROLLBACK").catch(() => undefined);
          throw err;
        }
      }
      applied.push(m);
      options.onApplied?.(m, performance.now() - started);
    }
    return { from, to: applied.at(-1)?.version ?? from, known, applied, pending: [] };
  } finally {
    if (session.isOpen) await run("SELECT pg_advisory_unlock($1::bigint)", [target.lockKey]).catch(() => undefined);
  }
}

/**
 * A `CREATE INDEX CONCURRENTLY` that failed or was interrupted leaves its index INVALID (kept up
 * to date by writes, never used by queries), and `IF NOT EXISTS` would then skip it for good:
 * such an index is dropped, without blocking writes, before the statement runs again. Under the
 * migration lock no other gpupool builds one meanwhile.
 */
async function dropInvalidIndex(
  run: (text: string, params?: unknown[]) => Promise<unknown[]>,
  schema: string,
  index: string,
): Promise<void> {
  const invalid = await run(
    `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relname = $2 AND NOT i.indisvalid`,
    [schema, index],
  );
  if (invalid.length > 0) await run(`DROP INDEX CONCURRENTLY IF EXISTS "${schema}"."${index}"`);
}
