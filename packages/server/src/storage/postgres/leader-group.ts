import type postgres from "postgres";
import { LeadershipLostError } from "../store.js";
import { isConnectionError, storageError } from "./errors.js";

export interface LeaderGroupOptions {
  /** The leader's one-connection session; the group reserves its connection for its transaction. */
  readonly session: postgres.Sql;
  /** The backend pid of the session that took the leader lock. */
  readonly pid: number;
  /** Counts the group as one of the store's operations until it is over (`close` waits for it). */
  readonly hold: () => () => void;
  /** Called when the group finds the session broken (then leadership is lost). */
  readonly broken: () => void;
}

/**
 * One transaction on the leader's session that several leader transactions share ("members"):
 * one BEGIN, one check that the session is still the lock's session, one COMMIT and one WAL flush
 * for all of them. Each member runs inside a SAVEPOINT, so one that throws is rolled back alone;
 * each member hears whether it committed only through `committed`, after the COMMIT.
 *
 * The connection is reserved by hand (BEGIN, SAVEPOINT, COMMIT are statements of ours) rather than
 * through `sql.begin`, so that those statements are pipelined with the ones after them, and so
 * that nothing is ever sent once the session broke: postgres.js sends a statement given to a
 * closed connection's transaction into a dead socket (an uncaught TypeError, and the next
 * connection's startup message mixed with it). Hence the rule kept here: after a connection
 * error, a close, or the end of the group, not one more statement goes out on the group's
 * connection, and it is not released to the pool (the pool reconnects when it is next used).
 */
export class LeaderGroup {
  /** Members run in the group so far (whether they succeeded or were rolled back to their savepoint). */
  size = 0;
  /** Resolves once the group's COMMIT is confirmed (durable); rejects if the group did not commit. */
  readonly committed: Promise<void>;
  /** Resolves once the group is over, whichever way: the session may take the next group. */
  readonly over: Promise<void>;
  private phase: "opening" | "open" | "committing" | "over" = "opening";
  private sql: postgres.ReservedSql | null = null;
  /** Rejects with `failure` if the group ends without committing: running members race it. */
  private readonly failed: Promise<never>;
  private failure: Error | null = null;
  private fail!: (err: unknown) => void;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private finish!: () => void;
  private readonly unhold: () => void;
  /** Number of the member allowed to send statements (0: none). */
  private current = 0;

  constructor(private readonly o: LeaderGroupOptions) {
    this.unhold = o.hold();
    this.committed = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    // Nobody may be waiting on a group whose every member threw; keep that from crashing.
    this.committed.catch(() => undefined);
    this.failed = new Promise<never>((_, reject) => (this.fail = reject));
    this.failed.catch(() => undefined);
    this.over = new Promise<void>((resolve) => (this.finish = resolve));
  }

  /** Read through a method: the phase changes while this awaits (TypeScript narrows a field as if it could not). */
  private isOver(): boolean {
    return this.phase === "over";
  }

  /** What every member of a group that is over without committing gets. */
  private get why(): Error {
    return this.failure ?? new LeadershipLostError("The leader's transaction group is over; nothing was committed.");
  }

  /** BEGIN on the leader's session, checked (in the same round trip) to still be the lock's session. */
  async open(): Promise<void> {
    let sql: postgres.ReservedSql;
    try {
      sql = await this.o.session.reserve();
    } catch (err) {
      throw this.end(err, false);
    }
    if (this.isOver()) {
      // The session closed while this waited for it: what it got may be a new session. Unused, it can go back.
      sql.release();
      throw this.why;
    }
    this.sql = sql;
    let pid: number | undefined;
    try {
      const [, rows] = await Promise.all([sql`BEGIN`.execute(), sql<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`.execute()]);
      pid = rows[0]?.pid;
    } catch (err) {
      if (this.isOver()) throw this.why;
      if (isConnectionError(err)) throw this.brokenSession(err);
      throw this.end(err, await this.rollback());
    }
    if (this.isOver()) throw this.why;
    // The driver reconnects by itself, and a new session does not hold the lock.
    if (pid !== this.o.pid) {
      throw this.end(new LeadershipLostError("The session holding leadership was replaced; nothing was committed."), await this.rollback());
    }
    this.phase = "open";
  }

  /**
   * Runs one member inside a savepoint. Its statements go out only while it runs: a member that
   * is over (finished, or abandoned because the group broke) can send nothing more into the group.
   */
  async run<T>(fn: (sql: postgres.ISql) => Promise<T>): Promise<T> {
    const sql = this.sql;
    if (this.phase !== "open" || sql === null) throw this.why;
    const member = ++this.size;
    this.current = member;
    // Sent together with the member's first statements, in one round trip.
    const savepoint = sql`SAVEPOINT leader_tx`.execute();
    savepoint.catch(() => undefined);
    try {
      const value = await Promise.race([(async () => fn(this.fence(sql, member)))(), this.failed]);
      // Its answer came before those of the member's own statements.
      await savepoint;
      return value;
    } catch (err) {
      this.current = 0;
      if (this.isOver()) throw this.why;
      if (isConnectionError(err)) throw this.brokenSession(err);
      // Undo this member alone; the group goes on.
      try {
        await sql`ROLLBACK TO SAVEPOINT leader_tx`;
      } catch (again) {
        if (this.isOver()) throw this.why;
        if (isConnectionError(again)) throw this.brokenSession(again);
        // A transaction that cannot go back to its savepoint cannot commit either: the group fails.
        throw this.end(again, await this.rollback());
      }
      throw err;
    } finally {
      if (this.current === member) this.current = 0;
    }
  }

  /** Commits the group; no member may be running. Never rejects: members hear through `committed`. */
  async commit(): Promise<void> {
    const sql = this.sql;
    if (this.phase !== "open" || sql === null) return;
    this.phase = "committing";
    try {
      await sql`COMMIT`;
    } catch (err) {
      if (this.isOver()) return;
      if (isConnectionError(err)) {
        this.brokenSession(err, "The database session holding leadership broke while committing; the next leader reads from the database whether it did.");
      } else {
        // A COMMIT that fails ends the transaction all the same: the session is free again.
        this.end(err, true);
      }
      return;
    }
    if (this.isOver()) return;
    this.phase = "over";
    this.sql = null;
    sql.release();
    this.settle.resolve();
    this.done();
  }

  /** The session closed: the group is over; nothing more is sent, and its connection is not reused. */
  break(): void {
    if (this.isOver()) return;
    const message =
      this.phase === "committing"
        ? "The database session holding leadership closed while committing; the next leader reads from the database whether it did."
        : "The database session holding leadership closed; nothing of its open transaction was committed.";
    this.end(new LeadershipLostError(message), false);
  }

  /** A statement failed because the session broke: the group is over, and so is the lead. */
  private brokenSession(cause: unknown, message = "The database session holding leadership broke; nothing was committed."): Error {
    const err = this.end(Object.assign(new LeadershipLostError(message), { cause }), false);
    this.o.broken();
    return err;
  }

  /**
   * Ends the group without a commit (the first call decides) and returns the error every member
   * gets. `reusable`: the connection is healthy and out of any transaction, so it goes back to the pool.
   */
  private end(err: unknown, reusable: boolean): Error {
    if (this.isOver()) return this.why;
    this.phase = "over";
    const mapped = err instanceof LeadershipLostError ? err : storageError(err);
    this.failure = mapped instanceof Error ? mapped : new Error(String(mapped));
    if (reusable) this.sql?.release();
    this.sql = null;
    this.current = 0;
    this.fail(this.failure);
    this.settle.reject(this.failure);
    this.done();
    return this.failure;
  }

  private done(): void {
    this.unhold();
    this.finish();
  }

  /**
   * Rolls the whole transaction back; true when that went through (the connection is then out of
   * any transaction and reusable). A failure is not reported: the group ends with its first error,
   * and a session that broke meanwhile is reported when it closes.
   */
  private async rollback(): Promise<boolean> {
    const sql = this.sql;
    if (sql === null) return false;
    try {
      await sql`ROLLBACK`;
      return true;
    } catch {
      return false;
    }
  }

  /** The member's view of the connection: refuses statements once the member or the group is over. */
  private fence(sql: postgres.ReservedSql, member: number): postgres.ISql {
    const check = (): void => {
      if (this.current !== member || this.phase !== "open") {
        throw new Error("A leader transaction sent a statement after it ended, or after the leader's session broke; it was not sent.");
      }
    };
    return new Proxy(sql, {
      apply: (target, self, args) => {
        check();
        return Reflect.apply(target, self, args) as unknown;
      },
      get: (target, key, receiver) => {
        const value = Reflect.get(target, key, receiver) as unknown;
        if ((key !== "unsafe" && key !== "file") || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          check();
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });
  }
}
