import { LocalCoordination } from "./local-coordination.js";
import { PostgresConnections } from "./postgres/connections.js";
import { LeaderLease } from "./postgres/leader-lease.js";
import { PostgresChannels } from "./postgres/postgres-channels.js";
import { PostgresCoordination } from "./postgres/postgres-coordination.js";
import { checkSessions } from "./postgres/pooler-check.js";
import { PostgresStore } from "./postgres/postgres-store.js";
import { postgresTx } from "./postgres/postgres-tx.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import type { MigrateOptions } from "./schema-version.js";
import type { Storage } from "./store.js";

/**
 * The storage for a URL, migrated and ready: the store, and the coordination the composition root
 * hands to the lease engine (leader election, the fenced stager, wake-ups).
 *
 * SQLite: one process per file, always the leader; its leader work goes through the store's group
 * commit. PostgreSQL: replicas share the schema; the coordination uses the store's connections
 * (sessions for NOTIFY, a connection for LISTEN, and the leadership lease, whose session runs the leader's groups).
 *
 * Migrating at start is safe with replicas running: it takes turns with theirs, and refuses a
 * schema newer than `options.migrations` (default: every version this binary knows) with
 * SchemaTooNewError. PostgreSQL: a `?max=` that cannot fit the server's connection limit is refused.
 */
export async function openStorage(url: string, options: Pick<MigrateOptions, "migrations"> = {}): Promise<Storage> {
  if (url.startsWith("sqlite:")) {
    const store = new SqliteStore(url);
    try {
      await store.migrate(options);
    } catch (err) {
      await store.close();
      throw err;
    }
    return { store, coordination: new LocalCoordination(store.stager), close: () => store.close() };
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    const connections = new PostgresConnections(url);
    const store = new PostgresStore(connections);
    const channels = new PostgresChannels({
      pool: connections.pool,
      listener: connections.listener,
      schema: connections.schema,
      inFlight: connections.inFlight,
    });
    const lease = new LeaderLease({
      newSession: () => connections.leaderSession(),
      lockKey: connections.leaderKey,
      leaseMs: connections.url.leaderLeaseMs,
    });
    const coordination = new PostgresCoordination({
      channels,
      lease,
      inFlight: connections.inFlight,
      makeTx: (sql, grouped) => postgresTx(sql, connections.ledgerLockSpace, grouped, connections.schema),
    });
    connections.onClose(() => coordination.close());
    try {
      await connections.checkBudget();
      await checkSessions(connections.pool, () => connections.leaderSession());
      await store.migrate(options);
    } catch (err) {
      await connections.close();
      throw err;
    }
    return { store, coordination, close: () => connections.close() };
  }
  throw new Error('storage.url must start with "sqlite:" or "postgres://"');
}
