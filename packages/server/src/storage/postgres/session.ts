import type postgres from "postgres";
import { isConnectionError } from "./errors.js";

/**
 * One PostgreSQL session: a postgres.js instance of exactly one connection, used for that one
 * connection's life and then dropped. `isOpen` turns false synchronously when its connection
 * closes, before any statement's rejection reaches our code, so a transaction can tell exactly
 * whether the session it began on is still there.
 *
 * Why not postgres.js's own pool (3.4.9; `node_modules/postgres/src/connection.js`): a transaction
 * (`sql.begin`) and a reserved connection (`sql.reserve`) hand their statements straight to their
 * connection's `execute`, which does not look at whether the connection's socket is still there.
 * After the socket closed (`closed()` sets `socket = null`), such a statement is built, its bytes
 * buffered, and a `setImmediate(nextWrite)` scheduled, whose `socket.write` then throws
 * `TypeError: Cannot read properties of null (reading 'write')` (connection.js:255) from a timer:
 * uncaught, and the process exits. `begin` itself sends one: when the transaction's function
 * rejects because its statement failed with the connection, `begin` answers with a `rollback` on
 * that very connection. (Reproduced with `pg_ctl restart` under load: every crash was that
 * `rollback`.) And a connection that closed while a write of its own was still buffered keeps
 * the buffer and its spent timer, so after the driver reconnects the same connection object, its
 * startup message is appended to the stale bytes and never flushed. A session that is never
 * reused after its connection closed, and a transaction that never lets `begin` send anything
 * once the session closed (see PostgresStore.inSession), avoid all of it.
 */
export class Session {
  readonly sql: postgres.Sql;
  private open = true;
  /** A reserve was made: the connection is open (see `reserve`). */
  private reserved = false;
  private readonly listeners = new Set<() => void>();

  /** `connect` makes the one-connection instance, calling `closed` from its `onclose`. */
  constructor(connect: (closed: () => void) => postgres.Sql) {
    this.sql = connect(() => this.closed());
  }

  /** False once its connection closed (or failed to open), for good. */
  get isOpen(): boolean {
    return this.open;
  }

  /**
   * The connection, reserved (`sql.reserve()`). postgres.js (3.4.9) never resolves a reserve that
   * is what opens a connection (its ReadyForQuery drops the reserve that came as the initial
   * query), so the first one of a session sends `SELECT 1` first.
   */
  async reserve(): Promise<postgres.ReservedSql> {
    if (!this.reserved) await this.sql`SELECT 1`;
    this.reserved = true;
    return this.sql.reserve();
  }

  /** Calls `listener` once when the connection closes (at once if it has); returns an unsubscribe. */
  onClosed(listener: () => void): () => void {
    if (!this.open) {
      listener();
      return () => undefined;
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Drops the connection now: nothing more is sent; what waits on it fails. */
  end(): Promise<void> {
    this.closed();
    return this.sql.end({ timeout: 0 });
  }

  private closed(): void {
    if (!this.open) return;
    this.open = false;
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const listener of listeners) listener();
  }
}

/**
 * Up to `size` sessions, each lent to one operation at a time (a transaction, or a statement);
 * callers beyond that wait in arrival order. A session whose connection closed is never lent
 * again: the next operation gets a new one, which connects on first use.
 */
export class SessionPool {
  private readonly idle: Session[] = [];
  private readonly all = new Set<Session>();
  private lent = 0;
  private readonly waiting: { lend: (session: Session) => void; refuse: (err: Error) => void }[] = [];
  private ended = false;

  constructor(
    private readonly connect: () => Session,
    private readonly size: number,
  ) {}

  /** Runs `fn` with a session of its own; the session goes back to the pool when `fn` settles (if it is still open). */
  async run<T>(fn: (session: Session) => Promise<T>): Promise<T> {
    const session = await this.acquire();
    try {
      return await fn(session);
    } catch (err) {
      // A session whose connection failed may be reconnecting under the driver: never lent again.
      if (isConnectionError(err) && session.isOpen) void session.end();
      throw err;
    } finally {
      this.release(session);
    }
  }

  /** Ends every session (the pool lends no more). */
  async end(): Promise<void> {
    this.ended = true;
    for (const w of this.waiting.splice(0)) w.refuse(new Error("The store is closed."));
    const sessions = [...this.all];
    this.all.clear();
    this.idle.length = 0;
    await Promise.all(sessions.map((s) => s.end()));
  }

  private acquire(): Promise<Session> {
    if (this.ended) return Promise.reject(new Error("The store is closed."));
    if (this.lent < this.size) {
      this.lent++;
      return Promise.resolve(this.take());
    }
    return new Promise((lend, refuse) => this.waiting.push({ lend, refuse }));
  }

  private take(): Session {
    for (let s = this.idle.pop(); s !== undefined; s = this.idle.pop()) if (s.isOpen) return s;
    const session = this.connect();
    this.all.add(session);
    session.onClosed(() => {
      this.all.delete(session);
      const i = this.idle.indexOf(session);
      if (i !== -1) this.idle.splice(i, 1);
    });
    return session;
  }

  private release(session: Session): void {
    if (session.isOpen && !this.ended) this.idle.push(session);
    const next = this.waiting.shift();
    if (next !== undefined) next.lend(this.take());
    else this.lent--;
  }
}
