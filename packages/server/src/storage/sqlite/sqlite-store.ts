import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { LedgerState } from "@gpupool/core";
import { Serial } from "../../serial.js";
import { encodeDevices } from "../devices-json.js";
import { LocalCoordination } from "../local-coordination.js";
import { MIGRATIONS } from "../migrations.js";
import { encodeSlots, n, toApp, toKeyed, toLease, toLedger, toNode, toSession, toSigningKey, toUser } from "../rows.js";
import type { Row } from "../rows.js";
import type { AppRecord, Coordination, KeyedRecord, LeaseFilter, LeaseRecord, LeaseStatus, NewLease, NodeRecord, SessionRecord, SigningKeyRecord, Store, Tx, UserRecord } from "../store.js";
import { Checkpointer } from "./checkpointer.js";



interface Batch {
  size: number;
  readonly committed: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** Staged transactions per physical commit, at most: bounds the latency one commit adds. */
const MAX_BATCH = 256;
type Statement = Database.Statement<unknown[], Row>;

/** `sqlite:./path.db` → `./path.db`; `sqlite::memory:` → `:memory:`. */
export function sqlitePath(url: string): string {
  return url.replace(/^sqlite:(\/\/)?/, "");
}

function leaseParams(l: NewLease): unknown[] {
  return [
    l.id, l.appId, l.identityKind, l.identityId, l.tier, l.size, l.slots, l.cost, l.durationMs, l.reservedMs, l.status,
    l.node, l.deviceIndex, l.deviceUuid, l.deviceName, encodeSlots(l.slotIndexes),
    l.queuedAt, l.grantedAt, l.deadline, l.endedAt, l.heldMs, l.chargedMs, l.refundedMs, l.failed ? 1 : 0,
    l.windowStartedAt, l.problemCode, l.problemDetail,
  ];
}

const LEASE_COLUMNS =
  "id, app_id, identity_kind, identity_id, tier, size, slots, cost, duration_ms, reserved_ms, status, node, device_index, " +
  "device_uuid, device_name, slot_indexes, queued_at, granted_at, deadline, ended_at, held_ms, charged_ms, refunded_ms, failed, " +
  "window_started_at, problem_code, problem_detail";
const UPDATE_LEDGER = "UPDATE ledgers SET window_started_at = ?, used_ms = ?, reserved_ms = ?, bonus_ms = ?, runs = ? WHERE identity = ?";
const UPSERT_LEDGER =
  "INSERT INTO ledgers (identity, window_started_at, used_ms, reserved_ms, bonus_ms, runs) VALUES (?, ?, ?, ?, ?, ?) " +
  "ON CONFLICT(identity) DO UPDATE SET window_started_at = excluded.window_started_at, used_ms = excluded.used_ms, " +
  "reserved_ms = excluded.reserved_ms, bonus_ms = excluded.bonus_ms, runs = excluded.runs";
const INSERT_LEASE = `INSERT INTO leases (${LEASE_COLUMNS}) VALUES (${LEASE_COLUMNS.split(",").map(() => "?").join(", ")})`;
// Only the columns a lease's lifecycle changes: naming an indexed column in SET makes SQLite
// rewrite that index entry even when the value is unchanged (app and identity never change).
const MUTABLE_COLUMNS = [
  "status", "node", "device_index", "device_uuid", "device_name", "slot_indexes", "granted_at", "deadline",
  "ended_at", "held_ms", "charged_ms", "refunded_ms", "failed", "window_started_at", "problem_code", "problem_detail",
] as const;
// By seq, the table's own key, with no lookup in the id index first (the id is still checked).
const UPDATE_LEASE = `UPDATE leases SET ${MUTABLE_COLUMNS.map((c) => `${c} = ?`).join(", ")} WHERE seq = ? AND id = ?`;

function mutableParams(l: LeaseRecord): unknown[] {
  return [
    l.status, l.node, l.deviceIndex, l.deviceUuid, l.deviceName, encodeSlots(l.slotIndexes),
    l.grantedAt, l.deadline, l.endedAt, l.heldMs, l.chargedMs, l.refundedMs, l.failed ? 1 : 0, l.windowStartedAt,
    l.problemCode, l.problemDetail,
  ];
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
  readonly serializesTransactions = true;
  /** One process per SQLite file: always the leader; wake-ups stay in this process. */
  readonly coordination: Coordination = new LocalCoordination((fn) => this.stage(fn));
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
   * Ledger rows changed in the open commit group and not yet written: an identity's row is written
   * once per group however many of its leases the group admitted or released (a busy app's
   * anonymous identity is in most of them). Written just before COMMIT; nothing reads the ledgers
   * table but `getLedger`, which looks here first.
   */
  private readonly unwrittenLedgers = new Map<string, LedgerState>();
  private readonly checkpointer: Checkpointer | null = null;

  constructor(url: string) {
    const path = sqlitePath(url);
    if (path !== ":memory:" && path !== "") mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("busy_timeout = 5000");
    if (path !== ":memory:" && path !== "") {
      this.db.pragma("wal_autocheckpoint = 0");
      this.checkpointer = new Checkpointer(path);
    }
    this.tx = this.makeTx();
  }

  private st(sql: string): Statement {
    let s = this.cache.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.cache.set(sql, s);
    }
    return s;
  }

  async migrate(): Promise<void> {
    await this.serial.run(async () => {
      this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
      const row = this.db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number };
      for (const m of MIGRATIONS) {
        if (m.version <= row.v) continue;
        const apply = this.db.transaction(() => {
          this.db.exec(m.sqlite);
          this.db.prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(m.version, Date.now());
        });
        apply.immediate();
      }
    });
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const { value, committed } = await this.stage(fn);
    await committed;
    return value;
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
  stage<T>(fn: (tx: Tx) => Promise<T>): Promise<{ value: T; committed: Promise<void> }> {
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

  private stageNow<T>(fn: (tx: Tx) => Promise<T>): Promise<{ value: T; committed: Promise<void> }> {
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
        throw err;
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
      this.flushLedgers();
      this.st("COMMIT").run();
      batch.resolve();
    } catch (err) {
      this.forget();
      if (this.db.inTransaction) this.db.exec("ROLLBACK");
      batch.reject(err);
    }
  }

  async ping(): Promise<void> {
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
      if (this.ledgers.has(identity)) {
        this.st(UPDATE_LEDGER).run(s.windowStartedAt, s.usedMs, s.reservedMs, s.bonusMs, s.runs, identity);
      } else {
        this.st(UPSERT_LEDGER).run(identity, s.windowStartedAt, s.usedMs, s.reservedMs, s.bonusMs, s.runs);
      }
      this.remember(this.ledgers, identity, s);
    }
    this.unwrittenLedgers.clear();
  }

  /** After a rollback the caches may hold what was never committed. */
  private forget(): void {
    this.unwrittenLedgers.clear();
    this.ledgers.clear();
    this.users.clear();
  }

  private makeTx(): Tx {
    const one = (sql: string, ...params: unknown[]): Row | undefined => this.st(sql).get(...params);
    const all = (sql: string, ...params: unknown[]): Row[] => this.st(sql).all(...params);
    const run = (sql: string, ...params: unknown[]): void => {
      this.wrote = true;
      this.st(sql).run(...params);
    };
    /** Runs a write; how many rows it changed. */
    const change = (sql: string, ...params: unknown[]): number => {
      this.wrote = true;
      return this.st(sql).run(...params).changes;
    };
    const insertKeyed = (table: "nodes" | "edges", r: KeyedRecord): void =>
      run(`INSERT INTO ${table} (id, name, key_hash, created_at) VALUES (?, ?, ?, ?)`, r.id, r.name, r.keyHash, r.createdAt);
    return {
      insertUser: async (u) => {
        run("INSERT INTO users (id, name, tier, token_hash, quota_override_ms, created_at) VALUES (?, ?, ?, ?, ?, ?)", u.id, u.name, u.tier, u.tokenHash, u.quotaOverrideMs, u.createdAt);
        this.remember(this.users, u.id, u);
      },
      getUser: async (id) => {
        const cached = this.users.get(id);
        if (cached) return cached;
        const user = toUser(one("SELECT * FROM users WHERE id = ?", id));
        return user && this.remember(this.users, id, user);
      },
      getUserByName: async (name) => toUser(one("SELECT * FROM users WHERE name = ?", name)),
      findUserByTokenHash: async (hash) => toUser(one("SELECT * FROM users WHERE token_hash = ?", hash)),
      updateUser: async (u) => {
        run("UPDATE users SET name = ?, tier = ?, token_hash = ?, quota_override_ms = ? WHERE id = ?", u.name, u.tier, u.tokenHash, u.quotaOverrideMs, u.id);
        this.users.delete(u.id);
      },
      listUsers: async () => all("SELECT * FROM users ORDER BY created_at, id").map((r) => toUser(r) as UserRecord),

      insertApp: async (a) =>
        run("INSERT INTO apps (id, name, owner_id, key_hash, max_concurrency, created_at) VALUES (?, ?, ?, ?, ?, ?)", a.id, a.name, a.ownerId, a.keyHash, a.maxConcurrency, a.createdAt),
      getApp: async (id) => toApp(one("SELECT * FROM apps WHERE id = ?", id)),
      getAppByName: async (name) => toApp(one("SELECT * FROM apps WHERE name = ?", name)),
      findAppByKeyHash: async (hash) => toApp(one("SELECT * FROM apps WHERE key_hash = ?", hash)),
      listApps: async () => all("SELECT * FROM apps ORDER BY created_at, id").map((r) => toApp(r) as AppRecord),

      insertNode: async (r) => insertKeyed("nodes", r),
      findNodeByKeyHash: async (hash) => toNode(one("SELECT * FROM nodes WHERE key_hash = ?", hash)),
      listNodes: async () => all("SELECT * FROM nodes ORDER BY created_at, id").map((r) => toNode(r) as NodeRecord),
      getNodeByName: async (name) => toNode(one("SELECT * FROM nodes WHERE name = ?", name)),
      setNodeState: async (id, s) =>
        change(
          "UPDATE nodes SET devices = ?, registered_at = ?, heartbeat_at = ?, agent_url = ? WHERE id = ?",
          encodeDevices(s.devices), s.registeredAt, s.heartbeatAt, s.agentUrl, id,
        ) > 0,
      heartbeatNode: async (id, at) => change("UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND registered_at IS NOT NULL", at, id) > 0,
      insertEdge: async (r) => insertKeyed("edges", r),
      findEdgeByKeyHash: async (hash) => toKeyed(one("SELECT * FROM edges WHERE key_hash = ?", hash)),
      getEdgeByName: async (name) => toKeyed(one("SELECT * FROM edges WHERE name = ?", name)),

      getLedger: async (identity) => {
        const cached = this.unwrittenLedgers.get(identity) ?? this.ledgers.get(identity);
        if (cached) return cached;
        const state = toLedger(one("SELECT * FROM ledgers WHERE identity = ?", identity));
        return state && this.remember(this.ledgers, identity, state);
      },
      putLedger: async (identity, s) => {
        this.wrote = true;
        this.unwrittenLedgers.set(identity, s);
      },

      insertLease: async (l) => {
        this.wrote = true;
        const info = this.st(INSERT_LEASE).run(...leaseParams(l));
        return { ...l, seq: Number(info.lastInsertRowid) };
      },
      updateLease: async (l) => run(UPDATE_LEASE, ...mutableParams(l), l.seq, l.id),
      getLease: async (id) => toLease(one("SELECT * FROM leases WHERE id = ?", id)),
      listLeases: async (f: LeaseFilter) => {
        const where: string[] = [];
        const params: unknown[] = [];
        if (f.appId !== undefined) {
          where.push("app_id = ?");
          params.push(f.appId);
        }
        if (f.identity !== undefined) {
          // Spelled out for users, so SQLite can use the partial index of users' leases.
          where.push(f.identity.kind === "user" ? "identity_kind = 'user' AND identity_id = ?" : "identity_kind = ? AND identity_id = ?");
          params.push(...(f.identity.kind === "user" ? [] : [f.identity.kind]), f.identity.id);
        }
        if (f.status !== undefined) {
          where.push("status = ?");
          params.push(f.status);
        }
        const sql = `SELECT * FROM leases ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq DESC LIMIT ?`;
        return all(sql, ...params, f.limit).map((r) => toLease(r) as LeaseRecord);
      },
      liveLeases: async () => all("SELECT * FROM leases WHERE status IN ('queued', 'active') ORDER BY seq").map((r) => toLease(r) as LeaseRecord),
      earliestEnd: async (identity, queueTimeoutMs) => {
        // The IN term repeats the partial index's condition so SQLite can prove it applies; the
        // small index of live leases beats the identity index, which holds all history.
        const r = one(
          "SELECT MIN(CASE WHEN status = 'active' THEN deadline ELSE queued_at + ? + duration_ms END) AS d " +
            "FROM leases INDEXED BY leases_live WHERE status IN ('queued', 'active') AND identity_kind = ? AND identity_id = ?",
          queueTimeoutMs, identity.kind, identity.id,
        );
        return n(r?.["d"]);
      },

      signingKeys: async () => all("SELECT * FROM signing_keys ORDER BY created_at").map(toSigningKey),
      insertSigningKey: async (k: SigningKeyRecord) =>
        run("INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) VALUES (?, ?, ?, ?)", k.kid, k.privateJwk, k.publicJwk, k.createdAt),

      insertSession: async (x: SessionRecord) =>
        run("INSERT INTO sessions (id_hash, user_id, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?)", x.idHash, x.userId, x.createdAt, x.expiresAt, x.revokedAt),
      getSession: async (idHash) => toSession(one("SELECT * FROM sessions WHERE id_hash = ?", idHash)),
      revokeSession: async (idHash, at) => {
        if (!one("SELECT 1 FROM sessions WHERE id_hash = ?", idHash)) return false;
        run("UPDATE sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL", at, idHash);
        return true;
      },
      revokeUserSessions: async (userId, at) => change("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", at, userId),
    };
  }
}

export type { LeaseStatus };
