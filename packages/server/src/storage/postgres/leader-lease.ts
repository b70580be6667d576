import { hostname } from "node:os";
import { LeadershipLostError } from "../store.js";
import { isConnectionError } from "./errors.js";
import type { Session } from "./session.js";

/** The database's clock in ms: every replica's lease is measured by it, not by its own clock. */
const DB_NOW = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const SQL = {
  tryLock: "SELECT pg_try_advisory_lock($1::bigint) AS got",
  unlock: "SELECT pg_advisory_unlock($1::bigint)",
  /**
   * Takes the lead when the lease expired, or when this session just got the leader lock while
   * the row says the leader held it (so the leader's session is gone: it died, or its connection
   * broke). Waits for a leader transaction in progress, which holds the row (see CHECK_EPOCH), so
   * whatever that transaction commits is there before the next leader reads anything.
   */
  takeOver:
    "UPDATE leadership SET epoch = epoch + 1, holder = $1, locked = $2::boolean, " +
    `expires_at = ${DB_NOW} + $3::bigint WHERE id = 1 AND (expires_at <= ${DB_NOW} OR ($2::boolean AND locked)) RETURNING epoch`,
  renew: `UPDATE leadership SET expires_at = ${DB_NOW} + $2::bigint, locked = $3::boolean WHERE id = 1 AND epoch = $1::bigint RETURNING epoch`,
  /** A leader that stops hands over at once instead of after its lease. */
  resign: "UPDATE leadership SET expires_at = 0 WHERE id = 1 AND epoch = $1::bigint",
};

/**
 * The first statement of every leader transaction (a group, see LeaderGroup): the epoch, read with
 * a lock on the row that is held until the group ends, so no other replica can take over while it
 * runs (the takeover's UPDATE waits) and a group that runs after a takeover sees the new epoch and
 * fails with LeadershipLostError.
 */
export const CHECK_EPOCH = "SELECT epoch FROM leadership WHERE id = 1 FOR SHARE";

/** How often a replica that does not lead tries to take over (the takeover delay after a leader dies). */
export const POLL_MS = 250;

/** Leadership held: from one takeover until it is lost. */
export interface Term {
  readonly epoch: number;
  /** The leader's session: it holds the leader lock (when it could get it), and runs the leader's transactions. */
  readonly session: Session;
}

interface Kept {
  readonly term: Term;
  /** When the last renewal that succeeded was sent (this process's clock): the lease lasts at least until then + leaseMs. */
  renewedAt: number;
  renewing: boolean;
  readonly timer: NodeJS.Timeout;
  readonly lost: (err: LeadershipLostError) => void;
}

export interface LeaderLeaseOptions {
  /** A new session for leadership (see PostgresConnections.leaderSession). */
  readonly newSession: () => Session;
  /** The leader lock's key (an advisory lock; see connections.ts). */
  readonly lockKey: string;
  /** How long a lease lasts unrenewed (`?leader_lease=`); renewed every fifth of it. */
  readonly leaseMs: number;
}

/**
 * Leadership as a lease in the `leadership` row, with a fencing epoch (migration 5).
 *
 * A leader renews its lease every `leaseMs / 5`. Another replica takes over once the lease has
 * expired (by the database's clock) — a leader that froze (SIGSTOP, a blocked event loop) keeps
 * its session and its locks, and used to lead forever — or at once when the leader's session is
 * gone: the leader holds a session-level advisory lock (the leader lock) on its session, and a
 * replica that gets that lock while the row says the leader held it knows that session ended, so
 * after a kill -9 the next replica leads within a poll (250 ms), as before the lease. Every
 * takeover bumps the epoch; every leader transaction checks it first (CHECK_EPOCH) and holds the
 * row until it ends, so a replaced leader can commit nothing: its next transaction, or renewal,
 * finds another epoch and it steps down. A leader that cannot renew for `leaseMs` (its own clock,
 * from when the last successful renewal was sent, so never later than the row says) gives up the
 * lead too.
 *
 * A leader that took over from a frozen one cannot get the leader lock (the frozen one's session
 * holds it): it leads with `locked = false` and tries the lock at each renewal; until it has it, a
 * replica that finds the lock free does not take over (the row says the leader does not hold it),
 * and the leader's death is noticed when its lease expires.
 *
 * Everything here runs on the leader's session, in turns shared with the leader's transaction
 * groups (`turn`): a session runs one statement or transaction at a time.
 */
export class LeaderLease {
  private session: Session | null = null;
  /** Whether `session` holds the leader lock. */
  private locked = false;
  /** Whether a turn on the leader session is taken, and who waits for the next ones, in order. */
  private busy = false;
  private readonly waiting: (() => void)[] = [];
  private kept: Kept | null = null;
  private readonly holder = `${hostname()}:${process.pid}`;

  constructor(private readonly o: LeaderLeaseOptions) {}

  /**
   * Waits for a turn on the leader session (in order); the returned function ends the turn. An
   * `urgent` turn (a renewal) comes next, before turns already waiting: a renewal that queued behind
   * a new leader's catch-up groups came back after its lease had run out, and leadership passed
   * from replica to replica under load (the takeover suite, CI).
   */
  turn(urgent = false): Promise<() => void> {
    return new Promise((resolve) => {
      const start = (): void => {
        this.busy = true;
        let ended = false;
        resolve(() => {
          if (ended) return;
          ended = true;
          this.busy = false;
          this.waiting.shift()?.();
        });
      };
      if (!this.busy) start();
      else if (urgent) this.waiting.unshift(start);
      else this.waiting.push(start);
    });
  }

  /** How often the lease is renewed: a leader keeps no turn on its session much longer than this. */
  get renewEveryMs(): number {
    return Math.max(50, Math.floor(this.o.leaseMs / 5));
  }

  /** One try at taking the lead: the term, or null while another replica leads. Throws the driver's error when the database fails. */
  async tryTakeOver(): Promise<{ term: Term; sentAt: number } | null> {
    const release = await this.turn();
    const session = this.currentSession();
    try {
      const sentAt = Date.now();
      if (!this.locked) this.locked = await this.tryLock(session);
      const [row] = await session.sql.unsafe<{ epoch: string }[]>(SQL.takeOver, [
        this.holder,
        this.locked,
        this.o.leaseMs,
      ]);
      if (row !== undefined) return { term: { epoch: Number(row.epoch), session }, sentAt };
      // Another replica leads (and does not hold the lock): it gets the lock at its next renewal.
      if (this.locked) await session.sql.unsafe(SQL.unlock, [this.o.lockKey]);
      this.locked = false;
      return null;
    } catch (err) {
      // A session that failed may be reconnecting under the driver: it is not used again.
      if (isConnectionError(err)) void session.end();
      throw err;
    } finally {
      release();
    }
  }

  /** Renews `term` from now on; `lost` is called once if it cannot be (taken over, or not renewed within the lease). */
  keep(term: Term, sentAt: number, lost: (err: LeadershipLostError) => void): void {
    this.stop();
    const timer = setInterval(() => void this.tick(), this.renewEveryMs);
    timer.unref();
    this.kept = { term, renewedAt: sentAt, renewing: false, timer, lost };
  }

  /**
   * Stops renewing, and drops the term's session once `settled` (its groups still committing: a
   * COMMIT in flight commits under the epoch it checked, or not at all). Dropping the session
   * frees the leader lock for the next leader.
   */
  drop(term: Term, settled: Promise<unknown>): void {
    if (this.kept?.term === term) this.stop();
    // The next campaign makes a session of its own (this one may still be committing).
    if (this.session === term.session) {
      this.session = null;
      this.locked = false;
    }
    void settled.then(() => term.session.end());
  }

  /** Hands the lead over now (closing): the next replica need not wait for the lease to run out. */
  async resign(term: Term): Promise<void> {
    this.stop();
    const release = await this.turn();
    try {
      if (term.session.isOpen) await term.session.sql.unsafe(SQL.resign, [term.epoch]);
    } finally {
      release();
    }
  }

  private stop(): void {
    if (this.kept !== null) clearInterval(this.kept.timer);
    this.kept = null;
  }

  /** The leader session, made anew when the last one closed (a new session holds no lock). */
  private currentSession(): Session {
    if (this.session?.isOpen) return this.session;
    const session = this.o.newSession();
    this.session = session;
    this.locked = false;
    session.onClosed(() => {
      if (this.session === session) this.locked = false;
    });
    return session;
  }

  private async tryLock(session: Session): Promise<boolean> {
    const [row] = await session.sql.unsafe<{ got: boolean }[]>(SQL.tryLock, [this.o.lockKey]);
    return row?.got === true;
  }

  private async tick(): Promise<void> {
    const kept = this.kept;
    if (kept === null) return;
    const overdue = Date.now() - kept.renewedAt > this.o.leaseMs;
    if (kept.renewing) {
      // A renewal that has not come back within the lease (the database or this process stalled).
      if (overdue) this.lose(kept, "its lease could not be renewed in time");
      return;
    }
    kept.renewing = true;
    try {
      await this.renew(kept);
    } catch (err) {
      if (this.kept === kept && Date.now() - kept.renewedAt > this.o.leaseMs)
        this.lose(kept, "its lease could not be renewed in time", err);
    } finally {
      kept.renewing = false;
    }
  }

  private async renew(kept: Kept): Promise<void> {
    const release = await this.turn(true);
    try {
      const { session, epoch } = kept.term;
      if (this.kept !== kept || !session.isOpen) return;
      const sentAt = Date.now();
      if (!this.locked) this.locked = await this.tryLock(session);
      const rows = await session.sql.unsafe(SQL.renew, [epoch, this.o.leaseMs, this.locked]);
      if (this.kept !== kept) return;
      if (rows.length === 0) return this.lose(kept, "another replica took over");
      kept.renewedAt = sentAt;
    } finally {
      release();
    }
  }

  private lose(kept: Kept, why: string, cause?: unknown): void {
    if (this.kept !== kept) return;
    this.stop();
    const err = new LeadershipLostError(`This replica no longer leads the pool: ${why}.`);
    if (cause !== undefined) Object.assign(err, { cause });
    kept.lost(err);
  }
}
