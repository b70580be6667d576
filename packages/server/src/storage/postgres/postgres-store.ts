import { createHash } from "node:crypto";
import postgres from "postgres";
import type { Store, Tx } from "../store.js";
import { storageError } from "./errors.js";
import { InFlight } from "./in-flight.js";
import { POSTGRES_MIGRATIONS } from "./migrations.js";
import { PostgresCoordination } from "./postgres-coordination.js";
import { postgresTx } from "./postgres-tx.js";
import { parsePostgresUrl } from "./url.js";
import type { PostgresUrl } from "./url.js";

/** A stable 64-bit advisory lock key (as a decimal string) for `purpose` in `schema`. */
function lockKey(purpose: string, schema: string): string {
  return createHash("sha256").update(`gpupool\0${purpose}\0${schema}`).digest().readBigInt64BE(0).toString();
}

/** The advisory lock that the leading replica of `schema` holds (as pg_locks shows it: classid = high half, objid = low half). */
export function leaderLockKey(schema: string): string {
  return lockKey("leader", schema);
}

function lockSpace(purpose: string, schema: string): number {
  return createHash("sha256").update(`gpupool\0${purpose}\0${schema}`).digest().readInt32BE(0);
}

/** Reconnect delay after `attempt` failures, in seconds: quick at first, at most 2 s (postgres.js's default grows to 20 s). */
function backoff(attempt: number): number {
  return Math.min(0.05 * 2 ** attempt, 2);
}

/**
 * The adapter for several control-plane replicas on one PostgreSQL database (`postgres://…`).
 *
 * Each transaction is a real PostgreSQL transaction at READ COMMITTED; the rows a use case
 * read-modify-writes are locked explicitly (see postgresTx), so replicas never lose an update.
 * Nothing is cached in memory: another replica may have written anything since. Deadlocks and
 * serialization failures are not retried here; they reach the caller as errors.
 *
 * `?schema=` puts every table in that schema (created if missing; search_path is set on every
 * connection), so several deployments or test files can share one database.
 */
export class PostgresStore implements Store {
  readonly kind = "postgres" as const;
  readonly serializesTransactions = false;
  readonly coordination: PostgresCoordination;
  private readonly url: PostgresUrl;
  private readonly sql: postgres.Sql;
  private readonly leaderSession: postgres.Sql;
  private readonly ledgerLockSpace: number;
  private readonly inFlight = new InFlight();
  private closing: Promise<void> | null = null;

  constructor(url: string) {
    this.url = parsePostgresUrl(url);
    const { schema, statementTimeoutMs } = this.url;
    const common = {
      connect_timeout: this.url.connectTimeoutS,
      backoff,
      fetch_types: false,
      // Notices ("schema already exists, skipping") are not news; errors still throw.
      onnotice: () => undefined,
    } as const;
    this.sql = postgres(this.url.connection, {
      ...common,
      max: this.url.max,
      idle_timeout: 60,
      connection: { application_name: `gpupool:${schema}`, search_path: schema, statement_timeout: statementTimeoutMs },
    });
    // The leader's session: one connection that is never closed for being idle or old (closing it
    // would hand leadership over), with server-side keepalives so PostgreSQL notices a leader
    // host that vanished without closing its socket and frees the lock within about half a minute.
    this.leaderSession = postgres(this.url.connection, {
      ...common,
      max: 1,
      idle_timeout: 0,
      max_lifetime: 0,
      keep_alive: 10,
      connection: {
        application_name: `gpupool-leader:${schema}`,
        search_path: schema,
        statement_timeout: statementTimeoutMs,
        tcp_keepalives_idle: 10,
        tcp_keepalives_interval: 5,
        tcp_keepalives_count: 3,
      },
      onclose: () => this.coordination.sessionClosed(),
    });
    this.ledgerLockSpace = lockSpace("ledger", schema);
    this.coordination = new PostgresCoordination({
      pool: this.sql,
      leaderSession: this.leaderSession,
      schema,
      leaderKey: leaderLockKey(schema),
      inFlight: this.inFlight,
      makeTx: (sql, grouped) => postgresTx(sql, this.ledgerLockSpace, grouped),
    });
  }

  /** `host:port/database?schema=…`, without credentials: for logs. */
  get description(): string {
    return `${this.url.display}?schema=${this.url.schema}`;
  }

  /**
   * Applies the missing migrations in one transaction. A transaction-level advisory lock makes
   * replicas that start together take turns: the first migrates, the others then find nothing to do.
   */
  async migrate(): Promise<void> {
    const schema = this.url.schema;
    await this.guard(() =>
      this.sql.begin(async (sql) => {
        await sql`SELECT pg_advisory_xact_lock(${lockKey("migrate", schema)}::bigint)`;
        // Only when missing: CREATE SCHEMA checks the CREATE privilege on the database even with
        // IF NOT EXISTS, and a schema made by an administrator for a less privileged user is fine.
        const [exists] = await sql`SELECT 1 FROM pg_namespace WHERE nspname = ${schema}`;
        if (!exists) await sql`CREATE SCHEMA IF NOT EXISTS ${sql(schema)}`;
        await sql`CREATE TABLE IF NOT EXISTS ${sql(schema)}.schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`;
        const [row] = await sql<{ v: number }[]>`SELECT COALESCE(MAX(version), 0)::int AS v FROM ${sql(schema)}.schema_migrations`;
        for (let v = row?.v ?? 0; v < POSTGRES_MIGRATIONS.length; v++) {
          await sql.unsafe(POSTGRES_MIGRATIONS[v] ?? "");
          await sql`INSERT INTO ${sql(schema)}.schema_migrations (version, applied_at) VALUES (${v + 1}, ${Date.now()})`;
        }
      }),
    );
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.guard(async () => (await this.sql.begin((sql) => fn(postgresTx(sql, this.ledgerLockSpace)))) as T);
  }

  /** Runs one operation of the store: counted for `close`, driver errors turned into the store's. */
  private guard<T>(fn: () => Promise<T>): Promise<T> {
    return this.inFlight.run(async () => {
      try {
        return await fn();
      } catch (err) {
        throw storageError(err);
      }
    });
  }

  /** A whole transaction: by the time it resolves its commit is durable, so `committed` is settled. */
  async stage<T>(fn: (tx: Tx) => Promise<T>): Promise<{ value: T; committed: Promise<void> }> {
    return { value: await this.transaction(fn), committed: Promise.resolve() };
  }

  async ping(): Promise<void> {
    await this.guard(() => this.sql`SELECT 1`);
  }

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.coordination.close();
    // Running operations get a few seconds to finish; then every connection is dropped (the
    // leader session with it, which frees the lock for another replica).
    await this.inFlight.close(5_000);
    await Promise.all([this.sql.end({ timeout: 0 }), this.leaderSession.end({ timeout: 0 })]);
  }
}
