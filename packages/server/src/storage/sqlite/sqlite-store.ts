import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { LedgerState } from "@gpupool/core";
import { Serial } from "../../serial.js";
import { flushWallets, forgetWallets, walletCache } from "../wallet-cache.js";
import { MIGRATIONS } from "../migrations.js";
import type { Migration } from "../migrations.js";
import { newestVersion, pendingMigrations } from "../schema-version.js";
import type { MigrateOptions, MigrationReport } from "../schema-version.js";
import { StorageUnavailableError } from "../store.js";
import type { Staged, Stager, Store, Tx, UserRecord } from "../store.js";
import { Checkpointer } from "./checkpointer.js";
import type { CheckpointerOptions } from "./checkpointer.js";
import { DatabaseLock } from "./database-lock.js";
import { DatabaseFile, damagedFile, sqliteUnavailable } from "./file-health.js";
import { sqliteTx, writeLedger } from "./sqlite-tx.js";
import type { SqliteConnection, Statement } from "./sqlite-tx.js";

interface Batch {
  size: number;
  readonly committed: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** Staged transactions per physical commit, at most: bounds the latency one commit adds. */
const MAX_BATCH = 256;

/** How long writes wait for a WAL restart at most (it copies and syncs up to ~64 MiB). */
const RESTART_WAIT_MS = 30_000;

/** `sqlite:./path.db` → `./path.db`; `sqlite::memory:` → `:memory:`. */
export function sqlitePath(url: string): string {
  return url.replace(/^sqlite:(\/\/)?/, "");
}

/**
 * The embedded adapter: one better-sqlite3 connection in WAL mode. better-sqlite3 is synchronous,
 * so a transaction's statements cannot interleave with another's; the Serial keeps an async
 * transaction callback (which awaits between statements) from letting a second BEGIN in.
 * `BEGIN IMMEDIATE` takes the write lock up front so two processes on one file never deadlock on
 * lock upgrade. synchronous=NORMAL in WAL mode survives a process crash (kill -9) without losing
 * a committed transaction; only an OS crash or power loss can drop the last few commits.
 */
export class SqliteStore implements Store {
  readonly kind = "sqlite" as const;
  /**
   * How the lease engine writes here: group commit (see `stage`). Staged transactions run one at a
   * time on the one connection, so they never overlap.
   */
  readonly stager: Stager = { stage: (fn) => this.stage(fn), ordered: true };
  private readonly db: Database.Database;
  private readonly serial = new Serial();
  private readonly cache = new Map<string, Statement>();
  private readonly tx: Tx;
  private batch: Batch | null = null;
  /** Transactions staged in this turn of the event loop, not yet started. */
  private waiting: Array<() => void> = [];
  /** Whether the running transaction has written anything. */
  private wrote = false;
  /**
   * Ledger rows as this connection last wrote or read them. Every write goes through this
   * connection (one server process per SQLite file; several processes need PostgreSQL), so the
   * cache is exact; it is dropped on any rollback.
   */
  private readonly ledgers = new Map<string, LedgerState>();
  /** Users by id, kept the same way: an admission charged to a user reads its tier and override. */
  private readonly users = new Map<string, UserRecord>();
  /**
   * A user's credit grants and billing settings, kept the same way, and the group's wallet writes,
   * written just before COMMIT like the ledgers (see WalletCache).
   */
  private readonly wallets = walletCache();
  /**
   * Ledger rows changed in the open commit group and not yet written: an identity's row is written
   * once per group however many of its leases the group admitted or released (a busy app's
   * anonymous identity is in most of them). Written just before COMMIT; nothing reads the ledgers
   * table but `ledgers.get`, which looks here first.
   */
  private readonly unwrittenLedgers = new Map<string, LedgerState>();
  private readonly checkpointer: Checkpointer | null = null;
  /** This process's hold on the file: no other server may open it while we do. */
  private readonly lock: DatabaseLock | null;
  /** The file opened, watched for deletion or replacement (null in memory). */
  private readonly file: DatabaseFile | null = null;
  /** Why the last commit failed, until one succeeds again (readiness says so). */
  private lastCommitError: StorageUnavailableError | null = null;
  /** The file was found damaged (damagedFile): nothing is committed any more, and readiness says so. */
  private damaged: StorageUnavailableError | null = null;
  /** How many times writes were held back for a WAL restart. */
  walRestarts = 0;

  /** `options`: how the WAL is checkpointed, and how long a write waits for another connection's lock (tests make both short). */
  constructor(url: string, options: CheckpointerOptions & { busyTimeoutMs?: number } = {}) {
    const path = sqlitePath(url);
    const onDisk = path !== ":memory:" && path !== "";
    if (onDisk) mkdirSync(dirname(path), { recursive: true });
    // One server per file, decided before anything else touches it (see DatabaseLock).
    this.lock = onDisk ? DatabaseLock.take(path) : null;
    try {
      this.db = new Database(path);
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      this.db.pragma("foreign_keys = ON");
      this.db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      if (onDisk) {
        this.db.pragma("wal_autocheckpoint = 0");
        this.checkpointer = new Checkpointer(path, (restart) => this.pauseFor(restart), options);
        this.file = new DatabaseFile(path);
      }
    } catch (err) {
      this.lock?.release();
      throw err;
    }
    const connection: SqliteConnection = {
      st: (sql) => this.st(sql),
      wrote: () => void (this.wrote = true),
      ledgers: this.ledgers,
      unwrittenLedgers: this.unwrittenLedgers,
      users: this.users,
      wallets: this.wallets,
      flushWallets: () => this.flushWallets(),
      remember: (cache, key, value) => this.remember(cache, key, value),
    };
    this.tx = sqliteTx(connection);
  }

  private st(sql: string): Statement {
    let s = this.cache.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.cache.set(sql, s);
    }
    return s;
  }

  /**
   * Applies the missing versions, each in one IMMEDIATE transaction with its record (an online one
   * too: SQLite has one writer and no CONCURRENTLY). One server holds the file (DatabaseLock), so
   * nothing else migrates it meanwhile. A dry run creates nothing.
   */
  async migrate(options: MigrateOptions = {}): Promise<MigrationReport> {
    const migrations = options.migrations ?? MIGRATIONS;
    return this.serial.run(async () => {
      const exists = this.db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        .get();
      if (!exists && options.dryRun !== true)
        this.db.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        );
      const from = exists
        ? (this.db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number }).v
        : 0;
      const pending = pendingMigrations(migrations, from);
      const known = newestVersion(migrations);
      if (options.dryRun === true) return { from, to: from, known, applied: [], pending };
      const applied: Migration[] = [];
      for (const m of pending) {
        const started = performance.now();
        const apply = this.db.transaction(() => {
          this.db.exec(m.sqlite);
          this.db
            .prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .run(m.version, Date.now());
        });
        apply.immediate();
        applied.push(m);
        options.onApplied?.(m, performance.now() - started);
      }
      return { from, to: applied.at(-1)?.version ?? from, known, applied, pending: [] };
    });
  }

  /** Here `fn` runs exactly once (SQLite never fails a transaction for a deadlock): staged, and awaited until durable. */
  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const { value, committed } = await this.stage(fn);
    await committed;
    return value;
  }

  /**
   * A read (see Store.read): staged like a transaction. SQLite's reads take no lock a writer waits
   * for, and a group of reads alone writes nothing to the WAL at its commit.
   */
  read<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.transaction(fn);
  }

  /**
   * Group commit. Staged transactions wait for the end of this turn of the event loop (the
   * `setImmediate` after the sockets read in it), then run one after another, each inside one open
   * physical transaction, and that transaction commits once they have all run (or after MAX_BATCH
   * of them). Under concurrent load many operations share one WAL write, while each caller still
   * hears of success only after its writes are durable.
   *
   * Running them together rather than as each request is parsed costs no latency (the commit was
   * at the end of the turn anyway) and made a lease request over HTTP ~15% cheaper: SQLite and
   * the engine run back to back, not interleaved with HTTP parsing (docs/benchmarks.md).
   */
  private stage<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>> {
    return new Promise((resolve, reject) => {
      this.waiting.push(() => void this.stageNow(fn).then(resolve, reject));
      if (this.waiting.length === 1) setImmediate(this.runWaiting);
    });
  }

  /** Runs what was staged in this turn, in order, then commits it as one group. */
  private readonly runWaiting = (): void => {
    const waiting = this.waiting;
    this.waiting = [];
    for (const start of waiting) start();
    void this.serial.run(async () => this.commitBatch());
  };

  private stageNow<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>> {
    return this.serial.run(async () => {
      const batch = this.openBatch();
      this.wrote = false;
      let value: T;
      try {
        value = await fn(this.tx);
      } catch (err) {
        // Use cases check their rules before writing, so a throw after a write is a failure of
        // the storage or a bug: undo the whole commit group rather than pay for a savepoint
        // around every transaction. Its other members learn of it through `committed`.
        if (this.wrote) this.rollbackBatch(err);
        this.damaged ??= damagedFile(err);
        throw sqliteUnavailable(err) ?? err;
      }
      if (++batch.size >= MAX_BATCH) this.commitBatch();
      return { value, committed: batch.committed };
    });
  }

  private rollbackBatch(err: unknown): void {
    const batch = this.batch;
    this.batch = null;
    this.forget();
    if (this.db.inTransaction) this.db.exec("ROLLBACK");
    batch?.reject(err);
  }

  private openBatch(): Batch {
    if (this.batch) return this.batch;
    this.st("BEGIN IMMEDIATE").run();
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const committed = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
    // Nobody may be waiting on a batch of reads that failed to commit; keep that from crashing.
    committed.catch(() => undefined);
    const batch: Batch = { size: 0, committed, resolve, reject };
    this.batch = batch;
    return batch;
  }

  /** Must run inside the serial section, between staged transactions. */
  private commitBatch(): void {
    const batch = this.batch;
    if (!batch) return;
    this.batch = null;
    try {
      // Written to a file nobody will open again, a commit would be lost: refuse it instead.
      const gone = this.file?.gone() ?? this.damaged;
      if (gone) throw gone;
      this.flushLedgers();
      this.flushWallets();
      this.st("COMMIT").run();
      this.lastCommitError = null;
      batch.resolve();
    } catch (err) {
      this.forget();
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
      this.damaged ??= damagedFile(err);
      const unavailable = err instanceof StorageUnavailableError ? err : (sqliteUnavailable(err) ?? err);
      if (unavailable instanceof StorageUnavailableError) this.lastCommitError = unavailable;
      batch.reject(unavailable);
    }
  }

  /**
   * Ready only while writes commit: the file is still the one opened and not found damaged, its disk has room, the last
   * commit did not fail (until one succeeds again), and it answers.
   */
  async ping(): Promise<void> {
    const problem = this.file?.gone() ?? this.damaged ?? this.file?.tooFull() ?? this.lastCommitError;
    if (problem) throw problem;
    this.st("SELECT 1").get();
  }

  private closing: Promise<void> | null = null;

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    // What was staged before close still runs and commits; what is staged after fails.
    if (this.waiting.length > 0) this.runWaiting();
    await this.serial.run(async () => {
      this.commitBatch();
      this.cache.clear();
    });
    await this.checkpointer?.stop();
    if (this.db.open) this.db.close();
    this.lock?.release();
  }

  private remember<T>(cache: Map<string, T>, key: string, value: T): T {
    // Bounded: a pool with more identities than this just reads the rest from SQLite.
    if (cache.size >= 100_000 && !cache.has(key)) cache.clear();
    cache.set(key, value);
    return value;
  }

  /** Writes the ledger rows the commit group changed (inside it, before COMMIT). */
  private flushLedgers(): void {
    for (const [identity, s] of this.unwrittenLedgers) {
      // A cached row exists (it was read or written in this store, and caches are dropped on any
      // rollback): update it in place rather than attempt an insert first.
      writeLedger((sql) => this.st(sql), identity, s, this.ledgers.has(identity));
      this.remember(this.ledgers, identity, s);
    }
    this.unwrittenLedgers.clear();
  }

  /**
   * Holds writes back while the checkpointer restarts the WAL (see Checkpointer): what is staged
   * meanwhile waits its turn in the serial section, and the event loop keeps answering. A restart
   * that does not end within RESTART_WAIT_MS lets the writes go again.
   */
  private pauseFor(restart: () => Promise<void>): void {
    void this.serial.run(async () => {
      this.commitBatch();
      this.walRestarts++;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([restart(), new Promise<void>((resolve) => (timer = setTimeout(resolve, RESTART_WAIT_MS)))]);
      clearTimeout(timer);
    });
  }

  /** Writes the wallet rows and transactions the commit group changed (inside it). */
  private flushWallets(): void {
    flushWallets(this.wallets, (text, params) => this.st(text).run(...params));
  }

  /** After a rollback the caches may hold what was never committed. */
  private forget(): void {
    this.unwrittenLedgers.clear();
    this.ledgers.clear();
    this.users.clear();
    forgetWallets(this.wallets);
  }
}
