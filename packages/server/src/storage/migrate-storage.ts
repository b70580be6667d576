import { existsSync } from "node:fs";
import { MIGRATIONS } from "./migrations.js";
import { PostgresConnections } from "./postgres/connections.js";
import { PostgresStore } from "./postgres/postgres-store.js";
import { newestVersion, pendingMigrations } from "./schema-version.js";
import type { MigrateOptions, MigrationReport } from "./schema-version.js";
import { SqliteStore, sqlitePath } from "./sqlite/sqlite-store.js";
import type { Store } from "./store.js";

/**
 * `gpupool migrate`: applies the versions the storage at `url` lacks (or, with `dryRun`, says
 * which), and closes it. Only the store is opened: no leader election, no LISTEN, no pool state.
 * On PostgreSQL it takes turns with replicas migrating at start, and may run while older replicas
 * serve (what it applies must suit them: docs/upgrades.md). A SQLite file is held by its one
 * server: stop it first. Refuses a schema newer than it knows (SchemaTooNewError).
 */
export async function migrateStorage(url: string, options: MigrateOptions = {}): Promise<MigrationReport> {
  let store: Store;
  if (url.startsWith("sqlite:")) {
    const path = sqlitePath(url);
    // A dry run creates no file.
    if (options.dryRun === true && path !== ":memory:" && !existsSync(path)) {
      const migrations = options.migrations ?? MIGRATIONS;
      return {
        from: 0,
        to: 0,
        known: newestVersion(migrations),
        applied: [],
        pending: pendingMigrations(migrations, 0),
      };
    }
    store = new SqliteStore(url);
  } else if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    store = new PostgresStore(new PostgresConnections(url));
  } else {
    throw new Error('storage.url must start with "sqlite:" or "postgres://"');
  }
  try {
    return await store.migrate(options);
  } finally {
    await store.close();
  }
}
