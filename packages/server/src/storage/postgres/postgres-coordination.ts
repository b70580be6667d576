import { Serial } from "../../serial.js";
import { LeadershipLostError } from "../store.js";
import type { Coordination, Staged, Stager, Tx } from "../store.js";
import { isConnectionError, storageError } from "./errors.js";
import type { InFlight } from "./in-flight.js";
import { LeaderGroup } from "./leader-group.js";
import { POLL_MS } from "./leader-lease.js";
import type { LeaderLease, Term } from "./leader-lease.js";
import type { PostgresChannels } from "./postgres-channels.js";
import type postgres from "postgres";
import type { GroupedTx, PostgresTx } from "./postgres-tx.js";
import type { ReadHint } from "./read-ahead.js";
import { runTx } from "./postgres-tx.js";

type State =
  | { readonly kind: "idle" }
  | { readonly kind: "waiting" }
  | { readonly kind: "leading"; readonly term: Term; readonly lost: (err: Error) => void }
  | { readonly kind: "closed" };

/**
 * The most leader transactions that share one COMMIT. Each one that writes gets a subtransaction
 * id (its savepoint); PostgreSQL caches 64 per backend, and a transaction with more makes every
 * snapshot in the database look subtransactions up in pg_subtrans. It also bounds how long the
 * first member of a group waits for the COMMIT under a steady stream of work.
 */
const MAX_GROUP = 64;

/** Errors of a takeover try that say nothing but "not now": the database is away, or busy. */
function transient(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return isConnectionError(err) || code === "55P03" || code === "57014";
}

export interface PostgresCoordinationOptions {
  /** NOTIFY and LISTEN. */
  readonly channels: PostgresChannels;
  /** The leadership row: takeover, renewal, the leader's session (see leader-lease.ts). */
  readonly lease: LeaderLease;
  /** A transaction's view of the store; `grouped` inside a leader group. */
  readonly makeTx: (sql: postgres.ISql, grouped?: GroupedTx) => PostgresTx;
  /** The replica's operation counter: leader work and messages count as the store's operations (`close` waits for them). */
  readonly inFlight: InFlight;
}

/**
 * Leadership and wake-ups for replicas sharing one PostgreSQL schema.
 *
 * The leader is the replica whose term (a lease in the `leadership` row, with a fencing epoch;
 * see LeaderLease) is current. Its term ends when its lease is taken over (it froze, and another
 * replica took over once the lease expired), when it cannot renew in time, or when its session
 * closes (the database restarted or ended it): then the replica hears `lost`, steps down, and
 * campaigns again like any other. Leader work runs on the term's session (`leaderStager`), in
 * groups whose first statement checks the epoch under a lock on the row: a replaced leader cannot
 * commit anything, even before it hears that it lost.
 *
 * Replicas that do not lead try to take over every POLL_MS (a statement or two, no waiting on a
 * lock: a statement blocked on a lock holds a snapshot, which pins the database's xmin horizon
 * for as long as it waits and would stop VACUUM while a standby waits for days).
 */
export class PostgresCoordination implements Coordination {
  readonly shared = true;
  /**
   * Leader work, fenced and grouped (see `leaderStage`). Its functions do run one at a time (one
   * session, one serial section), but it does not claim `ordered`: the lease engine keeps its own
   * serial section around staging on PostgreSQL, as it always has.
   */
  readonly leaderStager: Stager = {
    stage: (fn) => this.leaderStage(fn),
    expect: (hint) => this.expect(hint),
    ordered: false,
  };
  /** What the leader transactions waiting to stage lock first (Stager.expect), by key: read ahead by the open group. */
  private readonly expected = new Map<string, { readonly hint: ReadHint; n: number }>();
  private state: State = { kind: "idle" };
  private readonly serial = new Serial();
  private wake: (() => void) | null = null;
  /** The open group of leader transactions, if any (see `leaderStage`). */
  private group: LeaderGroup | null = null;
  /** When the open group opened (performance.now()). */
  private groupOpenedAt = 0;
  /** Groups not over yet (the open one, and one whose COMMIT is in flight), with their term. */
  private readonly groups = new Map<LeaderGroup, Term>();
  /** Terms that are over (each ends once, whoever notices first: a renewal, a group, the session's close). */
  private readonly ended = new WeakSet<Term>();
  /** Leader transactions waiting for or inside the serial section. */
  private staging = 0;
  /** Members of the last group that committed (see LeaderGroup's drawAhead). */
  private lastGroupSize = 0;

  constructor(private readonly o: PostgresCoordinationOptions) {}

  /**
   * The term is over (`err` says why): the open group is rolled back (nothing of it commits), a
   * COMMIT in flight is let finish (it commits under the epoch it checked, which holds the row, or
   * not at all), then the term's session is dropped, which frees the leader lock.
   */
  private termOver(term: Term, err: LeadershipLostError): void {
    if (this.ended.has(term)) return;
    this.ended.add(term);
    const state = this.state;
    if (state.kind === "leading" && state.term === term) this.state = { kind: "idle" };
    const own = [...this.groups].filter(([, t]) => t === term).map(([g]) => g);
    if (this.group !== null && own.includes(this.group)) this.group = null;
    const sessionGone = !term.session.isOpen;
    for (const group of own) group.stop(err, sessionGone);
    const settled = Promise.all(own.map((g) => g.over));
    this.o.lease.drop(term, settled);
    // Not from inside the driver's close handler: whatever the callback does (or throws) stays out of it.
    if (state.kind === "leading" && state.term === term) queueMicrotask(() => state.lost(err));
  }

  async lead(lost: (err: Error) => void): Promise<void> {
    if (this.state.kind === "closed") throw new Error("The store is closed.");
    if (this.state.kind !== "idle") throw new Error("lead() was called while this replica already leads or waits to.");
    this.state = { kind: "waiting" };
    let failures = 0;
    for (;;) {
      if (this.isClosed()) throw new Error("The store was closed while waiting for leadership.");
      let delayMs = POLL_MS;
      try {
        const took = await this.o.lease.tryTakeOver();
        if (took !== null) {
          const { term, sentAt } = took;
          if (this.isClosed()) {
            await this.o.lease.resign(term).catch(() => undefined);
            throw new Error("The store was closed while waiting for leadership.");
          }
          this.state = { kind: "leading", term, lost };
          this.o.lease.keep(term, sentAt, (err) => this.termOver(term, err));
          term.session.onClosed(() =>
            this.termOver(
              term,
              new LeadershipLostError("The database session holding leadership closed; another replica may lead now."),
            ),
          );
          return;
        }
        failures = 0;
      } catch (err) {
        if (this.isClosed()) throw new Error("The store was closed while waiting for leadership.", { cause: err });
        if (!transient(err)) {
          this.state = { kind: "idle" };
          throw storageError(err);
        }
        // The database is away or busy: keep trying (leadership is what the caller asked for), backing off.
        delayMs = Math.min(POLL_MS * 2 ** ++failures, 5_000);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        this.wake = () => (clearTimeout(timer), resolve());
      });
      this.wake = null;
    }
  }

  /**
   * Group commit on the leader's session, as the SQLite adapter does on its one connection: each
   * leader transaction runs inside a SAVEPOINT of one open transaction (a `LeaderGroup`) and
   * resolves once its statements have run, with `committed` settling after the group's COMMIT.
   * The group commits when the leader has nothing more to stage (a turn of the event loop with no
   * leader transaction running or waiting) or after MAX_GROUP of them. The lease engine stages its
   * transactions one at a time and releases its own section before awaiting `committed`, so its
   * next transaction (and every caller waiting behind it) joins the open group: under load the
   * group holds as many transactions as there are callers waiting, which then share one BEGIN,
   * one fencing check and one WAL flush.
   *
   * Fencing: every group checks the term's epoch at BEGIN, with a lock on the leadership row that
   * it holds until it ends, so no takeover happens while a group runs and a group after a takeover
   * fails with LeadershipLostError. When the session breaks, the open group (and a COMMIT in
   * flight) fails with LeadershipLostError for every member and nothing more is sent on it.
   */
  private leaderStage<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>> {
    this.staging++;
    const staged = this.serial.run(() => this.stageInGroup(fn));
    const left = (): void => {
      if (--this.staging === 0) this.commitWhenIdle();
    };
    staged.then(left, left);
    return staged;
  }

  private async stageInGroup<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>> {
    const state = this.state;
    if (state.kind !== "leading") throw new LeadershipLostError();
    try {
      // A group that failed on its own (a write that failed after its transaction ran) is not reused.
      const group = this.group?.isOpen ? this.group : await this.openGroup(state.term);
      const value = await group.run((sql, grouped) => runTx(this.o.makeTx(sql, grouped), fn));
      // Full, or open for as long as the lease is renewed: a group keeps the leader session's turn,
      // and the renewal waits for it (a new leader's catch-up, 50 leases a member, kept one group
      // open for seconds while followers' requests kept joining).
      const full = group.size >= MAX_GROUP || performance.now() - this.groupOpenedAt >= this.o.lease.renewEveryMs;
      if (full && this.group === group) this.commitGroup();
      return { value, committed: group.committed };
    } catch (err) {
      throw this.leaderError(state.term, err);
    }
  }

  /** A leader transaction that locks `hint` first waits to stage; the result withdraws it (once). */
  private expect(hint: ReadHint): () => void {
    const key = "ledger" in hint ? `g:${hint.ledger}` : `l:${hint.lease}`;
    const entry = this.expected.get(key) ?? { hint, n: 0 };
    entry.n++;
    this.expected.set(key, entry);
    let withdrawn = false;
    return () => {
      if (withdrawn) return;
      withdrawn = true;
      if (--entry.n === 0 && this.expected.get(key) === entry) this.expected.delete(key);
    };
  }

  /** Opens the next group in the term session's next turn (after the previous group, or a renewal, is over). */
  private async openGroup(term: Term): Promise<LeaderGroup> {
    const release = await this.o.lease.turn();
    const state = this.state;
    if (state.kind !== "leading" || state.term !== term || !term.session.isOpen) {
      release();
      throw new LeadershipLostError();
    }
    let group: LeaderGroup;
    try {
      group = new LeaderGroup({
        session: term.session,
        epoch: term.epoch,
        hold: () => this.o.inFlight.hold(),
        // The lease engine queues leader transactions in its own serial section, so how many wait
        // is not seen here: the last group's size says how busy the leader is (about half of its
        // members insert a lease; a lone caller's groups have one member, and draw nothing ahead).
        drawAhead: () => Math.floor(this.lastGroupSize / 2),
        readAhead: {
          upcoming: () => Array.from(this.expected.values(), (e) => e.hint),
          query: (sql, ledgers, leases) => this.o.makeTx(sql).readAhead(ledgers, leases),
        },
      });
    } catch (err) {
      release();
      throw err;
    }
    this.groups.set(group, term);
    void group.over.then(() => {
      this.groups.delete(group);
      release();
    });
    await group.open();
    this.group = group;
    this.groupOpenedAt = performance.now();
    return group;
  }

  /** Commits the open group at the next turn of the event loop if no leader transaction runs or waits by then. */
  private commitWhenIdle(): void {
    const group = this.group;
    if (group === null || !group.isOpen) return;
    setImmediate(() => {
      if (this.staging === 0 && this.group === group) this.commitGroup();
    });
  }

  /** Only between leader transactions. Later ones open the next group, which waits for this COMMIT. */
  private commitGroup(): void {
    const group = this.group;
    if (group === null) return;
    this.group = null;
    this.lastGroupSize = group.size;
    void group.commit();
  }

  /** A driver error of leader work, as the caller should see it (a broken session, or another epoch: leadership lost). */
  private leaderError(term: Term, err: unknown): unknown {
    if (err instanceof LeadershipLostError) {
      this.termOver(term, err);
      return err;
    }
    if (isConnectionError(err)) {
      const lost = Object.assign(
        new LeadershipLostError("The database session holding leadership broke; nothing was committed."),
        { cause: err },
      );
      this.termOver(term, lost);
      return lost;
    }
    return storageError(err);
  }

  publish(channel: string, payload: string): Promise<void> {
    return this.o.channels.publish(channel, payload);
  }

  subscribe(
    channel: string,
    onMessage: (payload: string) => void,
    onResumed?: () => void,
  ): Promise<() => Promise<void>> {
    if (this.isClosed()) return Promise.reject(new Error("The store is closed."));
    return this.o.channels.subscribe(channel, onMessage, onResumed);
  }

  private isClosed(): boolean {
    return this.state.kind === "closed";
  }

  /**
   * Stops waiting for leadership, and hands the lead over at once when this replica has it (the
   * next replica need not wait for the lease to run out); the connections then end the sessions.
   */
  async close(): Promise<void> {
    const state = this.state;
    this.state = { kind: "closed" };
    this.o.channels.close();
    this.wake?.();
    if (state.kind === "leading") await this.o.lease.resign(state.term).catch(() => undefined);
  }
}
