import type postgres from "postgres";
import { Serial } from "../../serial.js";
import { checkPayload } from "../local-coordination.js";
import { LeadershipLostError } from "../store.js";
import type { Coordination, Staged, Stager, Tx } from "../store.js";
import { isConnectionError, storageError } from "./errors.js";
import type { InFlight } from "./in-flight.js";
import { LeaderGroup } from "./leader-group.js";
import type { GroupedTx } from "./postgres-tx.js";

type State =
  | { readonly kind: "idle" }
  | { readonly kind: "waiting" }
  | { readonly kind: "leading"; readonly pid: number; readonly lost: (err: Error) => void }
  | { readonly kind: "closed" };

/** A channel the driver listens on: `first` is its first LISTEN; `ready` once any LISTEN succeeded. */
interface Listen {
  ready: boolean;
  first: Promise<unknown>;
}

/**
 * The most leader transactions that share one COMMIT. Each one that writes gets a subtransaction
 * id (its savepoint); PostgreSQL caches 64 per backend, and a transaction with more makes every
 * snapshot in the database look subtransactions up in pg_subtrans. It also bounds how long the
 * first member of a group waits for the COMMIT under a steady stream of work.
 */
const MAX_GROUP = 64;

/** How often a replica that does not lead tries to take the lock (the takeover delay after a leader dies). */
const POLL_MS = 250;
/** NOTIFY channel names are identifiers: at most 63 bytes. */
const MAX_CHANNEL_BYTES = 63;

export interface PostgresCoordinationOptions {
  /** Connection pool for NOTIFY and LISTEN. */
  readonly pool: postgres.Sql;
  /**
   * A pool of exactly one connection that nothing else uses: the session that holds the leader lock.
   * Its `onclose` must call `sessionClosed` (postgres.js reports a closed connection only there;
   * see PostgresConnections.onLeaderSessionClosed).
   */
  readonly leaderSession: postgres.Sql;
  readonly schema: string;
  /** The advisory lock key (a bigint, as a decimal string) that marks the leader of this schema. */
  readonly leaderKey: string;
  /** A transaction's view of the store; `grouped` inside a leader group. */
  readonly makeTx: (sql: postgres.ISql, grouped?: GroupedTx) => Tx;
  /** The replica's operation counter: leader work and messages count as the store's operations (`close` waits for them). */
  readonly inFlight: InFlight;
}

/**
 * Leadership and wake-ups for replicas sharing one PostgreSQL schema.
 *
 * The leader is the replica whose dedicated session holds a session-level advisory lock. The lock
 * lives exactly as long as that session: when the process dies (even kill -9) the kernel closes
 * its socket, PostgreSQL ends the session and the lock is free. Leader work runs on that same
 * session (`leaderStager`), so a replica whose session is gone cannot commit leader work even
 * before it hears that it lost.
 *
 * Replicas that do not lead poll `pg_try_advisory_lock` every POLL_MS instead of blocking in
 * `pg_advisory_lock`: a statement blocked on a lock holds a snapshot, which pins the database's
 * xmin horizon for as long as it waits (measured on PostgreSQL 15: backend_xmin is set on the
 * waiting session) and would stop VACUUM for the whole database while a standby waits for days.
 * A try-lock holds no snapshot between polls.
 */
export class PostgresCoordination implements Coordination {
  readonly shared = true;
  /**
   * Leader work, fenced and grouped (see `leaderStage`). Its functions do run one at a time (one
   * session, one serial section), but it does not claim `ordered`: the lease engine keeps its own
   * serial section around staging on PostgreSQL, as it always has, and whether it could rely on
   * this order instead (a failed group, a lost lead) has not been examined.
   */
  readonly leaderStager: Stager = { stage: (fn) => this.leaderStage(fn), ordered: false };
  private state: State = { kind: "idle" };
  private readonly serial = new Serial();
  /** Handlers by channel (as the caller names it); one LISTEN per channel for the store's lifetime. */
  private readonly handlers = new Map<string, Set<(payload: string) => void>>();
  private readonly resumers = new Map<string, Set<() => void>>();
  private readonly listens = new Map<string, Listen>();
  private wake: (() => void) | null = null;
  /** The open group of leader transactions, if any (see `leaderStage`). */
  private group: LeaderGroup | null = null;
  /** Groups not over yet: the open one, and one whose COMMIT is in flight. */
  private readonly groups = new Set<LeaderGroup>();
  /** Settles when the last group opened is over. */
  private previous: Promise<void> = Promise.resolve();
  /** Leader transactions waiting for or inside the serial section. */
  private staging = 0;

  constructor(private readonly o: PostgresCoordinationOptions) {}

  /** Called when the leader session's connection closed, for whatever reason. */
  sessionClosed(): void {
    // Whatever the state: nothing more may be sent on that connection, nor committed.
    this.group = null;
    for (const group of this.groups) group.break();
    const state = this.state;
    if (state.kind !== "leading") return;
    this.state = { kind: "idle" };
    // Not from inside the driver's close handler: whatever the callback does (or throws) stays out of it.
    const err = new LeadershipLostError(
      "The database session holding leadership closed; another replica may lead now.",
    );
    queueMicrotask(() => state.lost(err));
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
        const [row] = await this.o.leaderSession<{ ok: boolean; pid: number }[]>`
          SELECT pg_try_advisory_lock(${this.o.leaderKey}::bigint) AS ok, pg_backend_pid() AS pid`;
        // The result arrives before any close of its connection is seen (a later event), so a
        // session lost from here on is reported through sessionClosed.
        if (this.isClosed()) throw new Error("The store was closed while waiting for leadership.");
        if (row?.ok) {
          this.state = { kind: "leading", pid: row.pid, lost };
          return;
        }
        failures = 0;
      } catch (err) {
        if (this.isClosed()) throw new Error("The store was closed while waiting for leadership.", { cause: err });
        if (!isConnectionError(err)) {
          this.state = { kind: "idle" };
          throw storageError(err);
        }
        // The database is away: keep waiting (leadership is what the caller asked for), backing off.
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
   * one fencing check and one WAL flush. Committing at the first turn of the event loop after the
   * group opened would commit after one member here: each member waits for the network, and the
   * engine's next transaction only comes once the previous one has run.
   *
   * Fencing is unchanged: every group runs on the lock's session and checks its backend pid once
   * at BEGIN; when that session breaks, the open group (and a COMMIT in flight) fails with
   * LeadershipLostError for every member and nothing more is sent on it.
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
      const group = this.group?.isOpen ? this.group : await this.openGroup(state.pid);
      const value = await group.run((sql, grouped) => fn(this.o.makeTx(sql, grouped)));
      if (group.size >= MAX_GROUP && this.group === group) this.commitGroup();
      return { value, committed: group.committed };
    } catch (err) {
      throw this.leaderError(err);
    }
  }

  /** Opens the next group once the previous one is over (the session runs one transaction at a time). */
  private async openGroup(pid: number): Promise<LeaderGroup> {
    await this.previous;
    const state = this.state;
    if (state.kind !== "leading" || state.pid !== pid) throw new LeadershipLostError();
    const group = new LeaderGroup({
      session: this.o.leaderSession,
      pid,
      hold: () => this.o.inFlight.hold(),
      broken: () => this.sessionClosed(),
    });
    this.groups.add(group);
    void group.over.then(() => this.groups.delete(group));
    this.previous = group.over;
    await group.open();
    this.group = group;
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
    void group.commit();
  }

  /** A driver error of leader work, as the caller should see it (a broken session: leadership lost). */
  private leaderError(err: unknown): unknown {
    if (err instanceof LeadershipLostError) {
      this.sessionClosed();
      return err;
    }
    if (isConnectionError(err)) {
      this.sessionClosed();
      return Object.assign(
        new LeadershipLostError("The database session holding leadership broke; nothing was committed."),
        { cause: err },
      );
    }
    return storageError(err);
  }

  private channel(channel: string): string {
    const name = `${this.o.schema}.${channel}`;
    if (channel === "" || Buffer.byteLength(name) > MAX_CHANNEL_BYTES) {
      throw new Error(`channel "${channel}": schema and channel together must fit in ${MAX_CHANNEL_BYTES} bytes`);
    }
    return name;
  }

  async publish(channel: string, payload: string): Promise<void> {
    checkPayload(channel, payload);
    const name = this.channel(channel);
    await this.o.inFlight.run(async () => {
      try {
        await this.o.pool`SELECT pg_notify(${name}, ${payload})`;
      } catch (err) {
        throw storageError(err);
      }
    });
  }

  async subscribe(
    channel: string,
    onMessage: (payload: string) => void,
    onResumed?: () => void,
  ): Promise<() => Promise<void>> {
    const name = this.channel(channel);
    if (this.isClosed()) throw new Error("The store is closed.");
    // A wrapper per call, so the same function subscribed twice is two subscriptions.
    const handler = (payload: string): void => onMessage(payload);
    let set = this.handlers.get(channel);
    if (!set) this.handlers.set(channel, (set = new Set()));
    set.add(handler);
    const resumed = onResumed === undefined ? null : (): void => onResumed();
    if (resumed !== null) {
      let r = this.resumers.get(channel);
      if (!r) this.resumers.set(channel, (r = new Set()));
      r.add(resumed);
    }
    const listen = this.listens.get(channel) ?? this.listen(channel, name);
    if (!listen.ready) {
      try {
        await listen.first;
      } catch (err) {
        set.delete(handler);
        if (resumed !== null) this.resumers.get(channel)?.delete(resumed);
        throw storageError(err);
      }
    }
    return async () => {
      set.delete(handler);
      if (resumed !== null) this.resumers.get(channel)?.delete(resumed);
    };
  }

  /**
   * LISTENs on a channel, once for the store's lifetime. postgres.js keeps one connection for
   * LISTEN, re-issues every LISTEN after it reconnects (also after a first attempt that failed),
   * and reports each success through `onlisten`. Its own unlisten does not survive such a
   * reconnect, and a second listen() on a channel would deliver twice, so the driver is asked once
   * and `handlers` decides who hears what. Delivery is on a microtask, never inside the driver.
   */
  private listen(channel: string, name: string): Listen {
    const dispatch = (payload: string): void => {
      for (const h of [...(this.handlers.get(channel) ?? [])])
        queueMicrotask(() => this.handlers.get(channel)?.has(h) && h(payload));
    };
    const listen: Listen = { ready: false, first: Promise.resolve() };
    // onlisten runs at the first LISTEN and again after every reconnect: the later ones mean
    // notifications may have been missed while the connection was down.
    listen.first = this.o.pool.listen(name, dispatch, () => {
      if (listen.ready) for (const r of [...(this.resumers.get(channel) ?? [])]) queueMicrotask(r);
      listen.ready = true;
    });
    listen.first.catch(() => undefined);
    this.listens.set(channel, listen);
    return listen;
  }

  private isClosed(): boolean {
    return this.state.kind === "closed";
  }

  /** Stops waiting for leadership; the connections then end the sessions (which frees the lock). */
  close(): void {
    this.state = { kind: "closed" };
    this.handlers.clear();
    this.wake?.();
  }
}
