import type postgres from "postgres";
import { LeadershipLostError, StorageUnavailableError } from "../store.js";
import { isConnectionError, storageError } from "./errors.js";
import { fence } from "./fence.js";
import { CHECK_EPOCH } from "./leader-lease.js";
import type { GroupedTx } from "./postgres-tx.js";
import { ReadAhead } from "./read-ahead.js";
import type { ReadAheadSource } from "./read-ahead.js";
import type { Session } from "./session.js";

export interface LeaderGroupOptions {
  /** The leader's one-connection session; the group reserves its connection for its transaction. */
  readonly session: Session;
  /** The term's epoch, which the group checks at BEGIN (see CHECK_EPOCH); null: a follower's group (FollowerGroups), which checks none. */
  readonly epoch: number | null;
  /** Counts the group as one of the store's operations until it is over (`close` waits for it). */
  readonly hold: () => () => void;
  /** How many of the leases' sequence values an insert that waits draws ahead (GroupedTx.drawAhead). */
  readonly drawAhead: () => number;
  /** The members' lock attempts do not wait (GroupedTx.nowait): a follower's group. */
  readonly nowait?: boolean;
  /** What waits to join the group, read ahead before each member (the leader's: see ReadAhead). */
  readonly readAhead?: ReadAheadSource;
}

/**
 * One transaction on the leader's session that several leader transactions share ("members"):
 * one BEGIN, one check of the term's epoch (which locks the leadership row until the group ends,
 * so no other replica takes over meanwhile), one COMMIT and one WAL flush
 * for all of them. Each member runs inside a SAVEPOINT (a follower group's first: see `run`), so one that throws is rolled back alone;
 * each member hears whether it committed only through `committed`, after the COMMIT. A member's
 * notifications (`Tx.publish`) go out in its own writes' statement (see WriteBatch), inside its
 * savepoint: PostgreSQL delivers them at the group's COMMIT, in member order, and drops those of
 * a member rolled back to its savepoint.
 * A follower's groups (FollowerGroups) are the same without the epoch check (`epoch: null`), and
 * with lock attempts that do not wait (`nowait`).
 *
 * Round trips saved inside the group (see `GroupedTx`): a member's writes whose answer nobody
 * reads go out without waiting for it, and a ledger the group already holds the locks of is not
 * read again. A write that fails after its member finished fails the whole group, as a failed
 * COMMIT does: such writes only fail when the storage does (their rows are locked and checked).
 *
 * The connection is reserved by hand (BEGIN, SAVEPOINT, COMMIT are statements of ours) rather than
 * through `sql.begin`, so that those statements are pipelined with the ones after them, and so
 * that nothing is ever sent once the session broke: postgres.js (3.4) writes a statement given to
 * a closed connection into a null socket (an uncaught TypeError). Hence the rule kept here: after
 * a connection error or a close, not one more statement goes out on the group's connection (every
 * statement of the group's own is sent only while `Session.isOpen`, checked in the same turn);
 * after the group is over otherwise, only the ROLLBACK that makes the connection reusable.
 */
export class LeaderGroup {
  /** Members run in the group so far (whether they succeeded or were rolled back to their savepoint). */
  size = 0;
  /** Resolves once the group's COMMIT is confirmed (durable); rejects if the group did not commit. */
  readonly committed: Promise<void>;
  /** Resolves once the group is over, whichever way (the session is then free, or gone). */
  readonly over: Promise<void>;
  private phase: "opening" | "open" | "closing" | "committing" | "over" = "opening";
  /** The answer to the group's BEGIN and epoch check: rejects (and ends the group) if either failed, or the epoch is another. */
  private checked: Promise<void> = Promise.resolve();
  /** The reserved connection while the group owns it and it is usable (null once it is released or broken). */
  private sql: postgres.ReservedSql | null = null;
  /** Rejects with `failure` when the group ends without committing: running members race it. */
  private readonly failed: Promise<never>;
  private failure: Error | null = null;
  private fail!: (err: unknown) => void;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };
  private finish!: () => void;
  private readonly unhold: () => void;
  /** Number of the member allowed to send statements (0: none). */
  private current = 0;
  /** The running member's first failed deferred write (it fails the member). */
  private memberError: Error | null = null;
  /** The member being rolled back to its savepoint: a failure of its deferred writes is undone with it. */
  private undoing = 0;
  /** The leases' sequence values drawn ahead for this group's inserts (GroupedTx.seqs). */
  private readonly seqs: number[] = [];
  /** Ledgers whose locks (advisory and row) the group's transaction holds, as it sees them, and what was read ahead. */
  private readonly ahead: ReadAhead;
  /** No member's work is in the transaction yet: a follower's group runs such a member without a savepoint (see `run`). */
  private empty = true;

  constructor(private readonly o: LeaderGroupOptions) {
    this.unhold = o.hold();
    this.ahead = new ReadAhead(o.readAhead);
    this.committed = new Promise<void>((resolve, reject) => (this.settle = { resolve, reject }));
    // Nobody may be waiting on a group whose every member threw; keep that from crashing.
    this.committed.catch(() => undefined);
    this.failed = new Promise<never>((_, reject) => (this.fail = reject));
    this.failed.catch(() => undefined);
    this.over = new Promise<void>((resolve) => (this.finish = resolve));
  }

  /** True while members may join (false once it commits or is over). */
  get isOpen(): boolean {
    return this.phase === "open";
  }

  /** Read through a method: the phase changes while this awaits (TypeScript narrows a field as if it could not). */
  private isOver(): boolean {
    return this.phase === "over";
  }

  /** The running member's failed deferred write, if any (a method: it is set by answers that arrive while the member awaits). */
  private deferredFailure(): Error | null {
    return this.memberError;
  }

  /** What every member of a group that is over without committing gets. */
  private get why(): Error {
    return this.failure ?? new LeadershipLostError("The leader's transaction group is over; nothing was committed.");
  }

  /** BEGIN on the leader's session, and the term's epoch checked (in the same round trip). */
  async open(): Promise<void> {
    let sql: postgres.ReservedSql;
    try {
      sql = await this.o.session.reserve();
    } catch (err) {
      throw this.end(err);
    }
    if (this.isOver() || !this.o.session.isOpen) {
      // The session closed while this waited for it (or the group was stopped): nothing was sent.
      if (this.o.session.isOpen) sql.release();
      throw this.end(new LeadershipLostError("The database session holding leadership closed; nothing was committed."));
    }
    this.sql = sql;
    // Not waited for: the first member's statements go out behind these, and PostgreSQL runs them
    // after the check (which takes the row's lock first). Its answer comes before any of theirs, so a
    // member that waits for one hears of another epoch first; COMMIT is sent only after it.
    // BEGIN first: the check's lock on the leadership row is the transaction's.
    const begin = sql`BEGIN`.execute();
    const epochCheck = this.o.epoch === null ? [] : [sql.unsafe<{ epoch: string }[]>(CHECK_EPOCH).execute()];
    this.checked = Promise.all([begin, ...epochCheck]).then(
      ([, rows]) => {
        if (this.isOver()) throw this.why;
        if (rows === undefined) return;
        const epoch = rows[0] === undefined ? undefined : Number(rows[0].epoch);
        // Another replica took over since this term began: this one can commit nothing more.
        if (epoch !== this.o.epoch)
          throw this.abort(
            new LeadershipLostError(
              `Another replica leads now (leadership epoch ${epoch ?? "?"}, this replica's was ${this.o.epoch}); nothing was committed.`,
            ),
          );
      },
      (err: unknown) => {
        throw this.isOver() ? this.why : this.abort(err);
      },
    );
    this.checked.catch(() => undefined);
    this.phase = "open";
  }

  /**
   * Runs one member inside a savepoint. Its statements go out only while it runs: a member that
   * is over (finished, or abandoned because the group broke) can send nothing more into the group.
   */
  async run<T>(fn: (sql: postgres.ISql, grouped: GroupedTx) => Promise<T>): Promise<T> {
    const sql = this.sql;
    if (this.phase !== "open" || sql === null) throw this.why;
    const member = ++this.size;
    this.current = member;
    this.memberError = null;
    // Before the SAVEPOINT: locks read ahead are not this member's, which a rollback to it would free.
    // It waits for nothing, so only a failing storage fails it (which aborts the transaction, as a late write's failure does).
    this.ahead.send(sql, (err) => {
      if (!this.isOver()) this.abort(this.lateFailure(err, "Reading ahead for the leader's waiting transactions"));
    });
    // Sent together with the member's first statements, and not waited for, like its writes: a
    // member that finds all it reads read ahead waits for no round trip. A follower's group (no
    // epoch check to keep) runs a member with nothing before it in the transaction without one: if
    // it fails, the whole transaction is rolled back and begun again instead (a statement less per group).
    const savepoint = !(this.o.epoch === null && this.empty);
    if (savepoint) this.defer(sql`SAVEPOINT leader_tx`, member);
    const grouped: GroupedTx = {
      ledgers: this.ahead.ledgers,
      ahead: this.ahead,
      defer: (q) => this.defer(q, member),
      seqs: this.seqs,
      drawAhead: this.o.drawAhead,
      nowait: this.o.nowait === true,
    };
    try {
      const value = await Promise.race([(async () => fn(this.fence(sql, member), grouped))(), this.failed]);
      const late = this.deferredFailure();
      if (late !== null) throw late;
      this.empty = false;
      return value;
    } catch (thrown) {
      this.current = 0;
      if (this.isOver()) throw this.why;
      // A failed deferred write aborts the transaction: what the member saw next was that, not the cause.
      const err = this.deferredFailure() ?? thrown;
      if (isConnectionError(err)) throw this.brokenSession(err);
      // Undo this member alone (with whatever locks it took and ledgers it read); the group goes on.
      this.ahead.clear();
      this.undoing = member;
      try {
        if (!this.o.session.isOpen) throw this.brokenSession(err);
        if (!savepoint) await Promise.all([sql`ROLLBACK`.execute(), sql`BEGIN`.execute()]);
        else await sql`ROLLBACK TO SAVEPOINT leader_tx`;
      } catch (again) {
        // A transaction that cannot go back to its savepoint cannot commit either: the group fails.
        throw this.isOver() ? this.why : this.abort(again);
      } finally {
        this.undoing = 0;
      }
      throw err;
    } finally {
      if (this.current === member) this.current = 0;
    }
  }

  /** Commits the group; no member may be running. Never rejects: members hear through `committed`. */
  async commit(): Promise<void> {
    if (this.phase !== "open") return;
    this.phase = "closing";
    // The epoch check's answer (long there, before any member's): a failed check ended the group.
    if (
      !(await this.checked.then(
        () => !this.isOver(),
        () => false,
      ))
    )
      return;
    const sql = this.sql;
    if (sql === null) return;
    if (!this.o.session.isOpen) return this.break();
    this.phase = "committing";
    let result: postgres.RowList<postgres.Row[]>;
    try {
      result = await sql`COMMIT`;
    } catch (err) {
      if (this.sql === null) return; // the session broke: the group was failed then
      if (isConnectionError(err)) {
        this.brokenSession(
          err,
          "The database session holding leadership broke while committing; the next leader reads from the database whether it did.",
          true,
        );
        return;
      }
      // A COMMIT that fails ends the transaction all the same: the session is free again.
      this.end(err);
      this.release();
      return;
    }
    if (this.sql === null) return;
    // An aborted transaction (a deferred write failed) answers COMMIT with ROLLBACK.
    if (result.command !== "COMMIT")
      this.end(new Error(`The leader's transaction group was rolled back (COMMIT answered ${result.command}).`));
    this.release();
    if (this.isOver()) return;
    this.phase = "over";
    this.settle.resolve();
    this.done();
  }

  /**
   * The term is over (`err`): a group still open ends without committing. With the session still
   * there (the lease was lost, not the session), a COMMIT in flight is let finish: the group
   * checked the epoch under a lock on the leadership row, so no other replica took over before it
   * commits; the session is dropped once the group is over.
   */
  stop(err: LeadershipLostError, sessionGone: boolean): void {
    if (sessionGone) return this.break();
    if (this.phase === "committing" || this.isOver()) return;
    this.sql = null;
    this.end(err);
  }

  /** The session closed: the group is over; nothing more is sent, and its connection is not reused. */
  break(): void {
    const committing = this.phase === "committing";
    this.sql = null;
    if (this.isOver()) return;
    this.end(
      new LeadershipLostError(
        committing
          ? "The database session holding leadership closed while committing; the next leader reads from the database whether it did."
          : "The database session holding leadership closed; nothing of its open transaction was committed.",
        { outcomeUnknown: committing },
      ),
    );
  }

  /** A write sent without waiting: its failure is its member's while that runs, else the whole group's. */
  private defer(q: postgres.PendingQuery<postgres.Row[]>, member: number): void {
    q.execute().catch((err: unknown) => {
      if (this.current === member) this.memberError ??= err instanceof Error ? err : new Error(String(err));
      else if (this.undoing !== member && !this.isOver())
        this.abort(
          this.lateFailure(err, `A write of the leader's transaction ${member}, after that transaction had run,`),
        );
    });
  }

  /**
   * What every member hears when a deferred write of a member that already finished failed. The
   * writes deferred are of rows the group holds locked (the lock order of postgresTx), so they do
   * not wait for other transactions and a lock conflict here means a transaction outside that
   * order (an operator's SQL, a bug); it still fails the group as a whole, loudly: each member's
   * caller gets 503 storage_unavailable, and the engine rebuilds its state from the database.
   */
  private lateFailure(err: unknown, what: string): unknown {
    const mapped = storageError(err);
    if (!(mapped instanceof StorageUnavailableError) || isConnectionError(err)) return err;
    return new StorageUnavailableError(
      `${what} failed (${mapped.message}), so its group of ${this.size} transactions cannot commit: all of them were rolled back, and the leader rebuilds its state from the database.`,
      { cause: err, reason: mapped.reason },
    );
  }

  /** A statement failed because the session broke: the group is over, and so is the lead. */
  private brokenSession(
    cause: unknown,
    message = "The database session holding leadership broke; nothing was committed.",
    outcomeUnknown = false,
  ): Error {
    this.sql = null;
    return this.end(Object.assign(new LeadershipLostError(message, { outcomeUnknown }), { cause }));
  }

  /**
   * Ends the group for `err`. A connection error means the session broke (nothing more is sent);
   * otherwise, unless a COMMIT is in flight (its answer ends the transaction), ROLLBACK so the
   * connection can go back to the pool. Returns the error members get.
   */
  private abort(err: unknown): Error {
    if (isConnectionError(err)) return this.brokenSession(err);
    const committing = this.phase === "committing";
    const failure = this.end(err);
    const sql = this.sql;
    if (sql !== null && !committing && this.o.session.isOpen) {
      // Sent now, in the same turn as the answer that brought the failure: the session cannot have closed in between.
      sql`ROLLBACK`.execute().then(
        () => this.release(),
        () => undefined, // the session broke meanwhile: it is not reused (sessionClosed breaks the group)
      );
    }
    return failure;
  }

  /** Ends the group without a commit (the first call decides) and returns the error every member gets. */
  private end(err: unknown): Error {
    if (this.failure !== null || this.phase === "over") return this.why;
    const committing = this.phase === "committing";
    const mapped = err instanceof LeadershipLostError ? err : storageError(err);
    this.failure = mapped instanceof Error ? mapped : new Error(String(mapped));
    this.phase = "over";
    this.current = 0;
    this.ahead.clear();
    this.fail(this.failure);
    this.settle.reject(this.failure);
    // A COMMIT in flight still owns the connection: the group is over for the pool once it is answered.
    if (!committing || this.sql === null) this.done();
    return this.failure;
  }

  /** The transaction is over and the connection fine: back to the pool. */
  private release(): void {
    const sql = this.sql;
    this.sql = null;
    if (this.o.session.isOpen) sql?.release();
    if (this.isOver()) this.done();
  }

  /** The group no longer needs the connection (released, being rolled back, or broken). Idempotent. */
  private done(): void {
    this.unhold();
    this.finish();
  }

  /** The member's view of the connection: refuses statements once the member or the group is over. */
  private fence(sql: postgres.ReservedSql, member: number): postgres.ISql {
    return fence(
      sql as postgres.ISql,
      () => this.current === member && this.phase === "open" && this.o.session.isOpen,
      () =>
        new Error(
          "A leader transaction sent a statement after it ended, or after the leader's session broke; it was not sent.",
        ),
    );
  }
}
