import { createHash } from "node:crypto";
import postgres from "postgres";
import { InFlight } from "./in-flight.js";
import { parsePostgresUrl } from "./url.js";
import type { PostgresUrl } from "./url.js";

/** A stable 64-bit advisory lock key (as a decimal string) for `purpose` in `schema`. */
export function lockKey(purpose: string, schema: string): string {
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
 * One replica's connections to a PostgreSQL schema (`postgres://…`), which the store and the
 * coordination share: a pool for transactions, NOTIFY and LISTEN, and the one session that holds
 * the leader lock. It owns their lifetime: `close` stops the coordination, lets running
 * operations finish (a few seconds at most), then drops every connection.
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
  /** Transactions, NOTIFY and LISTEN. */
  readonly pool: postgres.Sql;
  /** The leader's session: one connection that nothing but leadership uses (see PostgresCoordination). */
  readonly leaderSession: postgres.Sql;
  /** The store's and the coordination's running operations, which `close` lets finish. */
  readonly inFlight = new InFlight();
  /** The first key of the ledger advisory locks (derived from the schema, so schemas in one database do not contend). */
  readonly ledgerLockSpace: number;
  /** The advisory lock key that marks the leader of this schema. */
  readonly leaderKey: string;
  private leaderSessionClosed: () => void = () => undefined;
  private readonly stops: (() => void)[] = [];
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
    this.pool = postgres(this.url.connection, {
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
      onclose: () => this.leaderSessionClosed(),
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

  /** Who hears that the leader session's connection closed, for whatever reason (postgres.js reports it only through `onclose`). */
  onLeaderSessionClosed(listener: () => void): void {
    this.leaderSessionClosed = listener;
  }

  /** Called first when closing, before operations are waited for (the coordination stops waiting for leadership). */
  onClose(stop: () => void): void {
    this.stops.push(stop);
  }

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    for (const stop of this.stops) stop();
    // Running operations get a few seconds to finish; then every connection is dropped (the
    // leader session with it, which frees the lock for another replica).
    await this.inFlight.close(5_000);
    await Promise.all([this.pool.end({ timeout: 0 }), this.leaderSession.end({ timeout: 0 })]);
  }
}
