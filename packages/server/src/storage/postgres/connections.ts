import { createHash } from "node:crypto";
import postgres from "postgres";
import { storageError } from "./errors.js";
import { InFlight } from "./in-flight.js";
import { Session, SessionPool } from "./session.js";
import { DEFAULT_POOL_MAX, parsePostgresUrl } from "./url.js";
import type { PostgresUrl } from "./url.js";

/** A stable 64-bit advisory lock key (as a decimal string) for `purpose` in `schema`. */
export function lockKey(purpose: string, schema: string): string {
  return createHash("sha256").update(`gpupool\0${purpose}\0${schema}`).digest().readBigInt64BE(0).toString();
}

/** The advisory lock that the leading replica of `schema` holds (as pg_locks shows it: classid = high half, objid = low half). */
export function leaderLockKey(schema: string): string {
  return lockKey("leader", schema);
}

/** The first key of `schema`'s advisory locks for `purpose` (ledgers: the second is the identity's hashtext). */
export function lockSpace(purpose: string, schema: string): number {
  return createHash("sha256").update(`gpupool\0${purpose}\0${schema}`).digest().readInt32BE(0);
}

/**
 * Connections a replica opens beside its pool of `max`: the leader's session (every replica keeps
 * one: a replica that does not lead campaigns on it) and the LISTEN connection. (When a leader's
 * term ends, its session is dropped once its last group settled while the next campaign opens a
 * new one: one more, for a moment, on that one replica.) See `checkBudget` and docs/upgrades.md.
 */
export const CONNECTIONS_BESIDE_POOL = 2;

/** Names this process's replicas apart in application_name (several may run in one process: tests, benchmarks). */
let replicasMade = 0;

/** Reconnect delay after `attempt` failures, in seconds: quick at first, at most 2 s (postgres.js's default grows to 20 s). */
function backoff(attempt: number): number {
  return Math.min(0.05 * 2 ** attempt, 2);
}

/**
 * One replica's connections to a PostgreSQL schema (`postgres://…`), which the store and the
 * coordination share: a pool of sessions for transactions and NOTIFY, a connection for LISTEN, and
 * the leader's session, made on demand. Each session is one connection used for that
 * connection's life only (see session.ts: postgres.js crashes the process, or stalls a
 * reconnected connection, when a statement reaches a connection that closed). It owns their
 * lifetime: `close` stops the coordination, lets running operations finish (a few seconds at
 * most), then drops every connection.
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
export class PostgresConnections {
  readonly url: PostgresUrl;
  /** Transactions and NOTIFY: `max` sessions, each lent to one operation at a time. */
  readonly pool: SessionPool;
  /** Only its LISTEN connection is used (postgres.js keeps one per instance, and listens again after a reconnect). */
  readonly listener: postgres.Sql;
  /** The store's and the coordination's running operations, which `close` lets finish. */
  readonly inFlight = new InFlight();
  /** The first key of the ledger advisory locks (derived from the schema, so schemas in one database do not contend). */
  readonly ledgerLockSpace: number;
  /** The advisory lock key that marks the leader of this schema. */
  readonly leaderKey: string;
  private readonly stops: (() => void | Promise<void>)[] = [];
  private readonly leaderSessions = new Set<Session>();
  private closing: Promise<void> | null = null;
  private readonly common: postgres.Options<Record<string, postgres.PostgresType>>;
  private readonly settings: Record<string, string | number>;
  /**
   * This replica in `pg_stat_activity.application_name`: `gpupool:<schema>:<replica>` for the pool
   * and the LISTEN connection, `gpupool-leader:<schema>:<replica>` for the leader's session
   * (PostgreSQL cuts names at 63 bytes).
   */
  readonly replica = `${process.pid.toString(36)}.${(++replicasMade).toString(36)}`;

  constructor(url: string) {
    this.url = parsePostgresUrl(url);
    const { schema, statementTimeoutMs, idleInTransactionTimeoutMs, lockTimeoutMs } = this.url;
    this.settings = {
      search_path: schema,
      statement_timeout: statementTimeoutMs,
      idle_in_transaction_session_timeout: idleInTransactionTimeoutMs,
      lock_timeout: lockTimeoutMs,
    };
    this.common = {
      connect_timeout: this.url.connectTimeoutS,
      backoff,
      fetch_types: false,
      // Notices ("schema already exists, skipping") are not news; errors still throw.
      onnotice: () => undefined,
    };
    this.pool = new SessionPool(
      () =>
        new Session((closed) =>
          postgres(this.url.connection, {
            ...this.common,
            max: 1,
            idle_timeout: 60,
            connection: { application_name: `gpupool:${schema}:${this.replica}`, ...this.settings },
            onclose: closed,
          }),
        ),
      this.url.max,
    );
    this.listener = postgres(this.url.connection, {
      ...this.common,
      max: 1,
      connection: { application_name: `gpupool:${schema}:${this.replica}`, ...this.settings },
    });
    this.ledgerLockSpace = lockSpace("ledger", schema);
    this.leaderKey = leaderLockKey(schema);
  }

  get schema(): string {
    return this.url.schema;
  }

  /** `host:port/database?schema=…`, without credentials: for logs. */
  get description(): string {
    return `${this.url.display}?schema=${this.url.schema}`;
  }

  /**
   * A new session for leadership: never closed for being idle or old (closing it would hand
   * leadership over), with server-side keepalives so PostgreSQL notices a leader host that
   * vanished without closing its socket and frees its lock within about half a minute.
   */
  leaderSession(): Session {
    const session = new Session((closed) =>
      postgres(this.url.connection, {
        ...this.common,
        max: 1,
        idle_timeout: 0,
        max_lifetime: 0,
        keep_alive: 10,
        connection: {
          application_name: `gpupool-leader:${this.url.schema}:${this.replica}`,
          ...this.settings,
          tcp_keepalives_idle: 10,
          tcp_keepalives_interval: 5,
          tcp_keepalives_count: 3,
        },
        onclose: closed,
      }),
    );
    this.leaderSessions.add(session);
    session.onClosed(() => this.leaderSessions.delete(session));
    return session;
  }

  /**
   * Refuses (with why, and what to change) a pool that cannot work on this server: one replica
   * alone would need more connections than PostgreSQL lets a role that is not a superuser open
   * (`max_connections` less the slots reserved for superusers). How many replicas fit is the
   * operator's arithmetic (docs/upgrades.md); the default `max` keeps ten within the default 100.
   */
  async checkBudget(): Promise<void> {
    const [row] = await this.pool
      .run((session) =>
        session.sql.unsafe<{ max_connections: number; reserved: number; superuser: boolean }[]>(
          `SELECT current_setting('max_connections')::int AS max_connections,
                current_setting('superuser_reserved_connections')::int
                  + COALESCE(NULLIF(current_setting('reserved_connections', true), '')::int, 0) AS reserved,
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`,
        ),
      )
      .catch((err: unknown) => {
        throw storageError(err);
      });
    if (!row) return;
    const allowed = row.superuser ? row.max_connections : row.max_connections - row.reserved;
    const needed = this.url.max + CONNECTIONS_BESIDE_POOL;
    if (needed > allowed) {
      throw new Error(
        `storage.url ?max=${this.url.max} cannot work: each replica opens up to ${needed} connections to PostgreSQL ` +
          `(a pool of ${this.url.max}, the leader's session and the LISTEN connection), and this server accepts at most ${allowed}` +
          (row.superuser
            ? ` (max_connections)`
            : ` (max_connections ${row.max_connections} less ${row.reserved} reserved for superusers)`) +
          `. Lower ?max= (each replica needs max + ${CONNECTIONS_BESIDE_POOL}; the default ${DEFAULT_POOL_MAX} fits 10 replicas in PostgreSQL's default max_connections of 100), or raise max_connections.`,
      );
    }
  }

  /**
   * Called first when closing, before operations are waited for (the coordination stops waiting
   * for leadership, and hands it over); what it returns is waited for (2 s at most) once the
   * operations are done, before the connections are dropped.
   */
  onClose(stop: () => void | Promise<void>): void {
    this.stops.push(stop);
  }

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    const stopping = Promise.allSettled(this.stops.map(async (stop) => stop()));
    // Running operations get a few seconds to finish; then every connection is dropped (the
    // leader session with it, which frees the lock for another replica).
    await this.inFlight.close(5_000);
    await Promise.race([stopping, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
    await Promise.all([
      this.pool.end(),
      this.listener.end({ timeout: 0 }),
      ...[...this.leaderSessions].map((s) => s.end()),
    ]);
  }
}
