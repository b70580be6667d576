import type postgres from "postgres";
import { StorageUnavailableError, outcomeUnknown } from "../store.js";
import type { Store, Tx } from "../store.js";
import { MIGRATIONS } from "../migrations.js";
import type { MigrateOptions, MigrationReport } from "../schema-version.js";
import type { PostgresConnections } from "./connections.js";
import { lockKey } from "./connections.js";
import { isConnectionError, isSerializationFailure, storageError } from "./errors.js";
import { fence } from "./fence.js";
import { FollowerGroups } from "./follower-groups.js";
import { GroupReport } from "./group-report.js";
import type { GroupObserver } from "./group-report.js";
import { migratePostgres } from "./migrate.js";
import { postgresTx, runTx } from "./postgres-tx.js";

/**
 * How many times a plain transaction is run when PostgreSQL fails it as a deadlock victim or for a
 * serialization failure (the first run included).
 */
const MAX_ATTEMPTS = 4;

/** Before running such a transaction again: a few ms, doubling, jittered so that the two sides of a deadlock do not meet again. */
function retryDelayMs(attempt: number): number {
  return (5 + Math.random() * 15) * 2 ** (attempt - 1);
}

/**
 * The adapter for several control-plane replicas on one PostgreSQL database (`postgres://…`),
 * over the replica's connections (connections.ts: pools, timeouts, schema).
 *
 * Each transaction is a real PostgreSQL transaction at READ COMMITTED; the rows a use case
 * read-modify-writes are locked explicitly (see postgresTx), so replicas never lose an update.
 * Nothing is cached in memory: another replica may have written anything since. A transaction
 * that PostgreSQL fails as a deadlock victim or for a serialization failure is run again (see
 * `transaction`); the leader's are not (see `PostgresCoordination.leaderStager`).
 */
export class PostgresStore implements Store {
  readonly kind = "postgres" as const;

  /** Group commit for the transactions of a replica that does not lead (see `groupedTransaction`). */
  private readonly groups: FollowerGroups;
  /** What the groups report: silent until `observe`. */
  private readonly report = new GroupReport();

  constructor(private readonly connections: PostgresConnections) {
    this.groups = new FollowerGroups({
      report: this.report,
      pool: connections.pool,
      inFlight: connections.inFlight,
      makeTx: (sql, grouped) => postgresTx(sql, connections.ledgerLockSpace, grouped, connections.schema),
      alone: (fn) => this.transaction(fn),
    });
  }

  /**
   * Where the follower's group commit reports: a log for groups that did not commit (their members
   * ran again alone; warn, one line per minute at most, with counts), and a metrics registry for
   * `gpupool_follower_group_members` (the size of each group that committed) and
   * `gpupool_follower_group_fallbacks_total{reason}` (members that ran alone: `lock_busy`,
   * `group_failed`). Until called, nothing is logged or counted.
   */
  observe(o: GroupObserver): void {
    this.report.observe(o);
  }

  /** `host:port/database?schema=…`, without credentials: for logs. */
  get description(): string {
    return this.connections.description;
  }

  /**
   * Applies the missing migrations (see migrate.ts: under a session-level advisory lock that makes
   * replicas starting together take turns, with no statement timeout; plain versions each in a
   * transaction, online ones statement by statement). It runs on a session of the pool that is
   * ended afterwards, its settings changed: the pool's other sessions keep their timeouts.
   */
  async migrate(options: MigrateOptions = {}): Promise<MigrationReport> {
    const { schema, url } = this.connections;
    return this.guard(() =>
      this.connections.pool.run(async (session) => {
        try {
          return await migratePostgres(
            session,
            { schema, lockKey: lockKey("migrate", schema), lockTimeoutMs: url.lockTimeoutMs },
            options,
            options.migrations ?? MIGRATIONS,
          );
        } finally {
          await session.end();
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
   * `PostgresCoordination.leaderStager` and are never run again.
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

  /**
   * A transaction that shares its group's BEGIN, COMMIT and WAL flush with the others running at
   * the same time (see FollowerGroups: lock attempts that do not wait; a member that would wait, or
   * whose group did not commit, runs alone as `transaction` does).
   */
  groupedTransaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.guard(() => this.groups.run(fn));
  }

  /**
   * A read (see Store.read): a READ ONLY transaction at REPEATABLE READ, so its statements share
   * one snapshot; it takes no lock, gets no transaction id and so writes no WAL, not even at
   * commit. A read-only transaction at REPEATABLE READ never fails for serialization, so it is
   * never run again.
   */
  async read<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.guard(() =>
      this.inSession(
        (sql) => fn(postgresTx(sql, this.connections.ledgerLockSpace, undefined, this.connections.schema, true)),
        "isolation level repeatable read read only",
      ),
    );
  }

  /**
   * One run of a transaction, whose statements are refused once it is over (see fence.ts). Its
   * ledger and lease writes and its notifications are not waited for one by one (a round trip
   * each): they go out with the statements after them, or with the COMMIT. If one fails, the
   * transaction is aborted and PostgreSQL answers that COMMIT with a rollback, whose answer comes
   * after the failure's: the run then fails with that first failure (not with the "transaction is
   * aborted" of the statements after it), so a deadlock victim is still run again.
   */
  private async runOnce<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const pending: Promise<void>[] = [];
    let failed: { err: unknown } | null = null;
    const defer = (q: postgres.PendingQuery<postgres.Row[]>): void => {
      pending.push(
        q.execute().then(
          () => undefined,
          (err: unknown) => void (failed ??= { err }),
        ),
      );
    };
    const firstFailure = async (): Promise<{ err: unknown } | null> => {
      await Promise.all(pending);
      return failed;
    };
    let value: T;
    try {
      value = await this.inSession(
        (sql) =>
          runTx(
            postgresTx(sql, this.connections.ledgerLockSpace, undefined, this.connections.schema, false, defer),
            fn,
          ),
        "",
        true,
      );
    } catch (err) {
      const first = await firstFailure();
      // A write PostgreSQL refused rolled the transaction back; one the broken connection took along says nothing.
      if (
        first === null ||
        (err instanceof StorageUnavailableError && err.reason === "outcome_unknown" && isConnectionError(first.err))
      )
        throw err;
      throw first.err;
    }
    // A write that failed: its transaction was rolled back (its COMMIT answered ROLLBACK).
    const failure = await firstFailure();
    if (failure !== null) throw failure.err;
    return value;
  }

  /**
   * Runs `fn` in a transaction on a session of its own (`sql.begin`), such that nothing is sent
   * on that session once its connection closed — neither by `fn` nor by postgres.js itself:
   *
   * - `fn`'s statements go through a fence that refuses them once the transaction is over or its
   *   session closed (`Session.isOpen` turns false inside the driver's close handling, before any
   *   rejection reaches `fn`).
   * - When `fn` settles after its session closed, what it hands `begin` never settles: `begin`
   *   would otherwise answer a rejection with a `rollback`, or a result with a `commit`, written
   *   into the closed connection — the uncaught TypeError of session.ts. `begin` itself rejects
   *   all the same (postgres.js rejects a transaction whose connection closed), and the session
   *   is never lent again, so the abandoned `begin` holds nothing.
   *
   * `writes`: when the connection breaks once `fn` is done and its COMMIT is in flight, the
   * transaction may have committed: it fails with `outcomeUnknown` (never "nothing was changed").
   */
  private inSession<T>(fn: (sql: postgres.TransactionSql) => Promise<T>, options = "", writes = false): Promise<T> {
    return this.connections.pool.run(async (session) => {
      let over = false;
      let committing = false;
      // What `fn` failed with after the session closed: it says more than the driver's "connection closed".
      let cause: unknown = null;
      try {
        return (await session.sql.begin(options, (sql) => {
          const fenced = fence(
            sql,
            () => !over && session.isOpen,
            () =>
              new StorageUnavailableError(
                "A statement came after its transaction was over (its session closed under it, or it had committed); it was not sent.",
              ),
          );
          const never = new Promise<never>(() => undefined);
          return fn(fenced).then(
            (value) => (session.isOpen ? ((committing = true), value) : never),
            (err: unknown) => {
              if (session.isOpen) throw err;
              cause = err;
              return never;
            },
          );
        })) as T;
      } catch (err) {
        if (writes && committing && isConnectionError(err)) throw outcomeUnknown(err);
        throw cause ?? err;
      } finally {
        over = true;
      }
    });
  }

  /** Runs one operation of the store: counted for `close`, driver errors turned into the store's. */
  private guard<T>(fn: () => Promise<T>): Promise<T> {
    return this.connections.inFlight.run(async () => {
      try {
        return await fn();
      } catch (err) {
        throw storageError(err);
      }
    });
  }

  async ping(): Promise<void> {
    await this.guard(() => this.connections.pool.run((session) => session.sql`SELECT 1`));
  }

  /** Closes the replica's connections, its coordination's included (see PostgresConnections.close). */
  close(): Promise<void> {
    return this.connections.close();
  }
}
