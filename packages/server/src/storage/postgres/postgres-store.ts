import { createHash } from "node:crypto";
import postgres from "postgres";
import { MIGRATIONS } from "../migrations.js";
import { StorageUnavailableError } from "../store.js";
import type { Store, Tx } from "../store.js";
import { isSerializationFailure, storageError } from "./errors.js";
import { fence } from "./fence.js";
import { InFlight } from "./in-flight.js";
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

/**
 * How many times a plain transaction is run when PostgreSQL fails it as a deadlock victim or for a
 * serialization failure (the first run included).
 */
const MAX_ATTEMPTS = 4;

/** Before running such a transaction again: a few ms, doubling, jittered so that the two sides of a deadlock do not meet again. */
function retryDelayMs(attempt: number): number {
  return (5 + Math.random() * 15) * 2 ** (attempt - 1);
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
 * Nothing is cached in memory: another replica may have written anything since. A transaction
 * that PostgreSQL fails as a deadlock victim or for a serialization failure is run again (see
 * `transaction`); the leader's are not (see `PostgresCoordination.leaderStage`).
 *
 * Timeouts set on every session (from the URL, see url.ts): statement_timeout;
 * idle_in_transaction_session_timeout, so that a replica stalled mid-transaction (SIGSTOP, a GC
 * pause, a blocked event loop) loses its session and its locks instead of holding an identity for
 * everyone; lock_timeout, longer than that, so that a request waiting behind such a stalled
 * replica outlives its session and goes on, and no request waits for a lock until its statement
 * timeout. The leader's session gets the same: a leader stalled inside its open group past the
 * idle timeout holds every lock the group took, and serves nobody meanwhile; it loses its session,
 * hence the lead (its open group fails with 503; another replica leads within 250 ms). The LISTEN
 * connection inherits them and is never inside a transaction. idle_session_timeout is not set: it
 * would end the leader's and the LISTEN sessions whenever they are quiet.
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
    const { schema, statementTimeoutMs, idleInTransactionTimeoutMs, lockTimeoutMs } = this.url;
    const timeouts = {
      statement_timeout: statementTimeoutMs,
      idle_in_transaction_session_timeout: idleInTransactionTimeoutMs,
      lock_timeout: lockTimeoutMs,
    };
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
      connection: { application_name: `gpupool:${schema}`, search_path: schema, ...timeouts },
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
        ...timeouts,
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
        // Replicas starting together wait here for the first one's migration, which may take longer
        // than lock_timeout (statement_timeout still bounds it).
        await sql`SET LOCAL lock_timeout = 0`;
        await sql`SELECT pg_advisory_xact_lock(${lockKey("migrate", schema)}::bigint)`;
        // Only when missing: CREATE SCHEMA checks the CREATE privilege on the database even with
        // IF NOT EXISTS, and a schema made by an administrator for a less privileged user is fine.
        const [exists] = await sql`SELECT 1 FROM pg_namespace WHERE nspname = ${schema}`;
        if (!exists) await sql`CREATE SCHEMA IF NOT EXISTS ${sql(schema)}`;
        await sql`CREATE TABLE IF NOT EXISTS ${sql(schema)}.schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`;
        const [row] = await sql<{ v: number }[]>`SELECT COALESCE(MAX(version), 0)::int AS v FROM ${sql(schema)}.schema_migrations`;
        const current = row?.v ?? 0;
        for (const m of MIGRATIONS) {
          if (m.version <= current) continue;
          await sql.unsafe(m.postgres);
          await sql`INSERT INTO ${sql(schema)}.schema_migrations (version, applied_at) VALUES (${m.version}, ${Date.now()})`;
        }
      }),
    );
  }

  /**
   * Runs `fn` in a transaction. When PostgreSQL fails it as a deadlock victim or for a
   * serialization failure (it was then rolled back whole), it is run again, up to MAX_ATTEMPTS
   * times in all, after a short jittered pause; what still fails is StorageUnavailableError (503).
   * So `fn` may run more than once: it must do nothing but its statements and pure computation
   * (every caller's does: the use cases of replicas that do not lead, admin and quota reads,
   * authentication). The leader's transactions, which change its memory, go through
   * `coordination.leaderStage` and are never run again.
   */
  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.guard(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.runOnce(fn);
        } catch (err) {
          if (!isSerializationFailure(err) || attempt >= MAX_ATTEMPTS) throw storageError(err, attempt);
        }
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt)));
      }
    });
  }

  /** One run of a transaction, whose statements are refused once it is over (see fence.ts). */
  private async runOnce<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    let over = false;
    try {
      return (await this.sql.begin((sql) => {
        const fenced = fence(
          sql,
          () => !over,
          () => new StorageUnavailableError("A statement came after its transaction was over (its session closed under it, or it had committed); it was not sent."),
        );
        return fn(postgresTx(fenced, this.ledgerLockSpace));
      })) as T;
    } finally {
      over = true;
    }
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

  /**
   * A whole transaction: by the time it resolves its commit is durable, so `committed` is settled.
   * Run once only (not `transaction`): a staged function may change its caller's memory.
   */
  async stage<T>(fn: (tx: Tx) => Promise<T>): Promise<{ value: T; committed: Promise<void> }> {
    return { value: await this.guard(() => this.runOnce(fn)), committed: Promise.resolve() };
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
