import type postgres from "postgres";
import { Serial } from "../../serial.js";
import { LeadershipLostError, outcomeUnknown } from "../store.js";
import type { Tx } from "../store.js";
import { leavesGroup, storageError } from "./errors.js";
import type { FallbackReason, GroupReport } from "./group-report.js";
import type { InFlight } from "./in-flight.js";
import { LeaderGroup } from "./leader-group.js";
import type { GroupedTx, PostgresTx } from "./postgres-tx.js";
import { runTx } from "./postgres-tx.js";
import type { Session, SessionPool } from "./session.js";

/** The most transactions that share one COMMIT (each gets a subtransaction id: see MAX_GROUP of the leader's groups). */
const MAX_GROUP = 64;
/**
 * How long a group takes members at most: its locks are held until its COMMIT, and a plain
 * transaction (a member that left a group, another replica's) may be waiting for one of them.
 */
const MAX_GROUP_MS = 10;
/**
 * Groups open at once. Members of one group run one after another on its session (one round trip
 * each), so a single group caps what a follower admits per second; more lanes make smaller groups
 * (more transactions, WAL flushes and notifying commits per cycle). A member joins the lane with
 * the fewest members waiting (the first of those: one caller at a time uses one lane). 4 lanes
 * while a member took two round trips; with one, 2 lanes gave the benchmark's follower path a
 * third fewer transactions and half the WAL flushes per cycle, at no loss of cycles/s.
 */
const LANES = 2;

export interface FollowerGroupsOptions {
  /** The replica's sessions: a group holds one from its BEGIN to its COMMIT. */
  readonly pool: SessionPool;
  /** The replica's operation counter: a group counts as one of the store's operations until it is over. */
  readonly inFlight: InFlight;
  /** A transaction's view of the store inside a group. */
  readonly makeTx: (sql: postgres.ISql, grouped: GroupedTx) => PostgresTx;
  /** Runs a transaction alone (PostgresStore.transaction): a member that left its group, or whose group did not commit. */
  readonly alone: <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;
  /** Group sizes, members that ran alone, groups that failed (logged). */
  readonly report: GroupReport;
}

/** What a member's run in a group came to. */
type Staged<T> =
  | { readonly kind: "member"; readonly value: T; readonly committed: Promise<void> }
  | { readonly kind: "alone"; readonly reason: FallbackReason };

/**
 * Group commit for a replica that does not lead: its concurrent admissions and releases
 * (`PostgresStore.groupedTransaction`) share one transaction — one BEGIN, each member in a
 * SAVEPOINT (its notifications in its own writes' statement), one COMMIT and one WAL flush — as
 * the leader's transactions share its groups (the same `LeaderGroup`, without the epoch check, on
 * a session of the pool). Up to LANES groups are open at once, one per lane. In a lane, members run one at a
 * time, and its group commits when no member of the lane runs or waits (a turn of the event loop)
 * and the lane has no COMMIT in flight, or once it has MAX_GROUP members or is MAX_GROUP_MS old;
 * the lane's next group opens on another session while one commits.
 *
 * Deadlocks: a group holds the locks of every member so far, so it must never wait for one — the
 * leader's group, another replica's group, or a plain transaction may hold it, and wait for one the
 * group holds. So its members only try their locks (GroupedTx.nowait); a member that finds one
 * taken is rolled back to its savepoint (the rest of the group goes on) and runs again alone, as a
 * plain transaction that waits for its locks and holds nothing else meanwhile (postgresTx's lock
 * order). A member that throws is rolled back alone, and its caller gets what it threw. A group
 * that does not commit (its session broke before the COMMIT, or a write failed after its member
 * ran) fails nobody: each of its members runs again alone — every `fn` may run more than once
 * (Store.transaction). Only a COMMIT whose answer was lost leaves its members' outcome unknown:
 * they get 503, as a plain transaction's caller does. Each committed group's size, each member
 * that ran alone (and why), and each group that failed (logged, a burst in one line) go to the
 * store's GroupReport.
 */
export class FollowerGroups {
  /** Groups open at once, each on its own session: a member joins the one with the fewest members waiting. */
  private readonly lanes: Lane[];

  constructor(o: FollowerGroupsOptions) {
    this.lanes = Array.from({ length: LANES }, () => new Lane(o));
  }

  /** Runs `fn` in an open group (or alone, see above); resolves with its value once the group's COMMIT is confirmed. */
  run<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    let lane = this.lanes[0]!;
    for (const l of this.lanes) if (l.waiting < lane.waiting) lane = l;
    return lane.run(fn);
  }
}

/** One group at a time (and one COMMIT in flight), its members one at a time. */
class Lane {
  private readonly serial = new Serial();
  private group: LeaderGroup | null = null;
  private openedAt = 0;
  /** Members waiting for or inside the serial section. */
  private staging = 0;
  /** A group's COMMIT in flight: the open group waits for it before it commits, taking members meanwhile. */
  private committing = false;

  constructor(private readonly o: FollowerGroupsOptions) {}

  /** Members waiting for or inside this lane's serial section. */
  get waiting(): number {
    return this.staging;
  }

  async run<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    this.staging++;
    let staged: Staged<T>;
    try {
      staged = await this.serial.run(() => this.stage(fn));
    } finally {
      if (--this.staging === 0) this.commitWhenIdle();
    }
    if (staged.kind === "alone") {
      this.o.report.fellBack(staged.reason);
      return this.o.alone(fn);
    }
    try {
      await staged.committed;
    } catch (err) {
      // Its COMMIT's answer was lost: it may have committed, so it must not run again, nor say nothing changed.
      if (err instanceof LeadershipLostError && err.outcomeUnknown) throw outcomeUnknown(err);
      // Nothing of the group was committed: this member runs again, on its own.
      this.o.report.fellBack("group_failed");
      return this.o.alone(fn);
    }
    return staged.value;
  }

  private async stage<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>> {
    let group: LeaderGroup;
    try {
      group = this.group?.isOpen === true ? this.group : await this.open();
    } catch (err) {
      // No session could be had for a group (the database is away): the member's own transaction says so.
      if (err instanceof LeadershipLostError) return { kind: "alone", reason: "group_failed" };
      throw storageError(err);
    }
    try {
      const value = await group.run((sql, grouped) => runTx(this.o.makeTx(sql, grouped), fn));
      const full = group.size >= MAX_GROUP || performance.now() - this.openedAt >= MAX_GROUP_MS;
      if (full && this.group === group) this.commit();
      return { kind: "member", value, committed: group.committed };
    } catch (err) {
      // A lock it would have waited for, or a group that ended under it (it was rolled back with it).
      if (leavesGroup(err)) return { kind: "alone", reason: "lock_busy" };
      if (err instanceof LeadershipLostError) return { kind: "alone", reason: "group_failed" };
      throw storageError(err);
    }
  }

  /** A session of the pool, held until the group is over, and a group opened on it. */
  private async open(): Promise<LeaderGroup> {
    let over!: () => void;
    const released = new Promise<void>((resolve) => (over = resolve));
    const session = await new Promise<Session>((resolve, reject) => {
      this.o.pool.run((s) => (resolve(s), released)).catch(reject);
    });
    let group: LeaderGroup;
    try {
      group = new LeaderGroup({
        session,
        epoch: null,
        hold: () => this.o.inFlight.hold(),
        drawAhead: () => 0,
        nowait: true,
      });
    } catch (err) {
      over();
      throw err;
    }
    const unsubscribe = session.onClosed(() => group.break());
    group.committed.then(
      () => this.o.report.committed(group.size),
      (err: unknown) =>
        this.o.report.failed(group.size, err, err instanceof LeadershipLostError && err.outcomeUnknown === true),
    );
    void group.over.then(() => {
      unsubscribe();
      over();
    });
    await group.open();
    this.group = group;
    this.openedAt = performance.now();
    return group;
  }

  /**
   * Commits the open group at the next turn of the event loop if no member runs or waits by then,
   * and no other group's COMMIT is in flight: while one is, the open group keeps taking members
   * (as the leader's next group waits for its session), so the WAL flushes are shared by as many
   * members as arrive during one.
   */
  private commitWhenIdle(): void {
    const group = this.group;
    if (group === null || !group.isOpen || this.committing) return;
    setImmediate(() => {
      if (this.staging === 0 && this.group === group && !this.committing) this.commit();
    });
  }

  /** Only between members. Later ones open the next group. */
  private commit(): void {
    const group = this.group;
    if (group === null) return;
    this.group = null;
    this.committing = true;
    void group.commit().finally(() => {
      this.committing = false;
      if (this.staging === 0) this.commitWhenIdle();
    });
  }
}
