import type { DeviceSpec, IdentityKind, LedgerState } from "@gpupool/core";
import type { HeldShare, UsageTx, WalletsTx } from "./billing-records.js";
import type { DashboardTx } from "./dashboard-records.js";
import type { RetentionTx } from "./retention-records.js";
import type { MigrateOptions, MigrationReport } from "./schema-version.js";
import type { StoreObserver } from "./store-observer.js";

export type * from "./billing-records.js";
export type * from "./dashboard-records.js";
export type * from "./retention-records.js";

/**
 * The one storage interface. Use cases open a transaction and call these methods; nothing outside
 * an adapter sees a driver, a connection or SQL. Every method is async so a networked adapter
 * (PostgreSQL) fits the same shape as the embedded one. How the lease engine writes (run once,
 * grouped commits) and leader election are not the store's business: see `Stager` and
 * `Coordination`, which `openStorage` returns beside it.
 */
export interface Store {
  readonly kind: "sqlite" | "postgres";
  /**
   * Runs `fn` in one serializable transaction (rolled back if it throws) and resolves once its
   * commit is durable. `fn` may run more than once: an adapter runs it again when the database
   * rolled it back as a deadlock victim or for a serialization failure (PostgreSQL), so it must do
   * nothing but its statements and pure computation — no changes to memory outside it, no
   * messages, no clock reads whose second value would matter.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * Like `transaction`, but it may share one BEGIN, COMMIT and WAL flush with other calls running
   * at the same time, resolving once that commit is durable: a follower's, on PostgreSQL
   * (FollowerGroups). An adapter without it runs `transaction`.
   */
  groupedTransaction?<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Where the adapter reports what it does on its own (PostgreSQL: follower groups); called at start. */
  observe?(o: StoreObserver): void;
  /**
   * Runs `fn` as a read: one snapshot that takes no lock and writes nothing (no WAL), so it never
   * waits for a writer nor a writer for it. `fn` may only read: on PostgreSQL it runs in a
   * `READ ONLY` REPEATABLE READ transaction, where a write fails, and `ledgers.get` / `leases.get` /
   * `wallets.lock` take none of their locks. On SQLite (one connection, one writer, reads never
   * wait) it runs in the open commit group and answers once that group is durable, so it never
   * reports what a failed commit undid. Like `transaction`, `fn` may run more than once.
   */
  read<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * Creates or upgrades the schema (see migrations.ts), or with `dryRun` only says what is missing;
   * refuses (SchemaTooNewError) a schema newer than the versions it knows.
   */
  migrate(options?: MigrateOptions): Promise<MigrationReport>;
  /** A cheap round trip, for readiness. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** What a staged function returned, and when its writes became durable. */
export interface Staged<T> {
  readonly value: T;
  /** Resolves once the writes are durable; rejects if they were rolled back (then nothing of them is kept). */
  readonly committed: Promise<void>;
}

/**
 * How the lease engine writes: `fn` runs exactly once (it may change the caller's memory as it
 * goes), its writes are visible to the functions staged after it once `stage` resolves, and
 * durable when `committed` settles. Adapters may group several staged functions into one commit;
 * if that commit fails, every member's `committed` rejects and none of their writes are kept.
 * A function that throws leaves none of its own writes behind (an adapter may also roll back the
 * other members of its group, which then hear it through `committed`). Callers must not report
 * success before `committed` resolves.
 */
export interface Stager {
  stage<T>(fn: (tx: Tx) => Promise<T>): Promise<Staged<T>>;
  /** An operation that first locks a ledger ("kind:id") or a lease waits to stage (a hint: see ReadAhead); call the result once it staged or gave up. */
  expect?(hint: { readonly ledger: string } | { readonly lease: string }): () => void;
  /** True when staged functions never overlap (one embedded connection), so the caller need not serialize them. */
  readonly ordered: boolean;
}

/**
 * How control-plane replicas on one database agree on a leader and wake each other.
 *
 * Exactly one replica at a time holds leadership; it alone runs the scheduler and the lease
 * timers. A replica that holds it writes through `leaderStager`, which commits only while
 * leadership is still held (PostgreSQL: on the very session that holds the advisory lock), so a
 * replica that lost leadership without knowing it cannot grant or expire anything.
 */
export interface Coordination {
  /** True when more than one replica may share the store (wake-ups and leader checks matter). */
  readonly shared: boolean;
  /**
   * Resolves once this replica holds leadership (waiting as long as another replica does).
   * `lost` is called at most once if it is later lost (the session holding it broke); the
   * caller may then call `lead` again. Rejects if the storage is closed while waiting.
   */
  lead(lost: (err: Error) => void): Promise<void>;
  /** Fenced: commits only while this replica leads; rejects with LeadershipLostError otherwise. */
  readonly leaderStager: Stager;
  /** Sends `payload` (≤ 7,000 bytes) to every replica subscribed to `channel`, this one included. */
  publish(channel: string, payload: string): Promise<void>;
  /**
   * Calls `onMessage` for each payload published on `channel` from now on; resolves to an
   * unsubscribe. `onResumed` is called whenever listening resumes after the connection that
   * listens was lost: messages sent meanwhile were missed, so the caller should re-read what it
   * relies on.
   */
  subscribe(
    channel: string,
    onMessage: (payload: string) => void,
    onResumed?: () => void,
  ): Promise<() => Promise<void>>;
}

/** A storage URL opened: the store, and the coordination of the replicas that share it (see `openStorage`). */
export interface Storage {
  readonly store: Store;
  readonly coordination: Coordination;
  /** Closes the store and the coordination (stops waiting for leadership, releases it). */
  close(): Promise<void>;
}

export { LeadershipLostError, StorageUnavailableError, outcomeUnknown } from "./storage-errors.js";
export type { StorageUnavailableReason } from "./storage-errors.js";

export interface UserRecord {
  readonly id: string;
  readonly name: string;
  readonly tier: string;
  readonly tokenHash: string;
  readonly quotaOverrideMs: number | null;
  readonly createdAt: number;
}

export interface AppRecord {
  readonly id: string;
  readonly name: string;
  readonly ownerId: string;
  readonly keyHash: string;
  readonly maxConcurrency: number | null;
  readonly createdAt: number;
}

/** Nodes and edges: named principals with a key. */
export interface KeyedRecord {
  readonly id: string;
  readonly name: string;
  readonly keyHash: string;
  readonly createdAt: number;
}

/** A node: its key, and what its agent last registered. */
export interface NodeRecord extends KeyedRecord {
  /** The devices the node's agent registered last (each with `node` = this node's name); null if never. */
  readonly devices: readonly DeviceSpec[] | null;
  readonly registeredAt: number | null;
  readonly heartbeatAt: number | null;
  /** Where the agent's device API listens, as it reported (informational). */
  readonly agentUrl: string | null;
}

export interface NodeState {
  readonly devices: readonly DeviceSpec[] | null;
  readonly registeredAt: number | null;
  readonly heartbeatAt: number | null;
  readonly agentUrl: string | null;
}

export type LeaseStatus = "queued" | "active" | "released" | "expired" | "cancelled" | "failed";

export interface LeaseRecord {
  readonly id: string;
  /** Arrival order, assigned by the store on insert. */
  readonly seq: number;
  readonly appId: string | null;
  readonly identityKind: IdentityKind;
  readonly identityId: string;
  readonly tier: string;
  readonly size: string;
  readonly slots: number;
  readonly cost: number;
  readonly durationMs: number;
  readonly reservedMs: number;
  readonly status: LeaseStatus;
  readonly node: string | null;
  readonly deviceIndex: number | null;
  readonly deviceUuid: string | null;
  readonly deviceName: string | null;
  readonly slotIndexes: readonly number[] | null;
  readonly queuedAt: number;
  readonly grantedAt: number | null;
  readonly deadline: number | null;
  readonly endedAt: number | null;
  readonly heldMs: number | null;
  readonly chargedMs: number;
  readonly refundedMs: number;
  readonly failed: boolean;
  /** Start of the identity's window this lease was granted in: its charge counts there. */
  readonly windowStartedAt: number | null;
  readonly problemCode: string | null;
  readonly problemDetail: string | null;
  /** Of `reservedMs`, what the quota holds (the ledger's reservation); the rest is overage paid from credits. */
  readonly quotaMs: number;
  readonly overageMs: number;
  /** Credits held at admission for the overage part (micro-units), and on which grants. */
  readonly holdMicros: number;
  readonly holdShares: readonly HeldShare[] | null;
  /** Credits spent at the end (≤ `holdMicros`). */
  readonly chargedMicros: number;
  /**
   * How long the caller said it would wait for a slot (max_wait, ms; null: it named none — its
   * tier's queue timeout). Stored so that a queued lease keeps it across a restart or a failover.
   */
  readonly maxWaitMs: number | null;
}

export type NewLease = Omit<LeaseRecord, "seq">;

export interface LeaseFilter {
  readonly appId?: string;
  readonly identity?: { kind: IdentityKind; id: string };
  readonly status?: LeaseStatus;
  /** Only leases that arrived before this `seq` (the keyset of the next page, newest first). */
  readonly before?: number;
  readonly limit: number;
}

/** A page of users by name, or of apps by name. */
export interface NamePage {
  /** Only names after this one (the keyset of the next page); null: from the first. */
  readonly after: string | null;
  readonly limit: number;
}

/** A caller's Idempotency-Key on `POST /v1/leases`: the lease it was first used for. */
export interface IdempotencyKeyRecord {
  /** The caller's scope and the key the client sent, together (see LeaseRequests). */
  readonly scopeKey: string;
  readonly leaseId: string;
  /** A fingerprint of the request the key was first used with. */
  readonly request: string;
  readonly createdAt: number;
}

export interface SigningKeyRecord {
  readonly kid: string;
  readonly privateJwk: string;
  readonly publicJwk: string;
  readonly createdAt: number;
}

/**
 * Who leads the replicas of a PostgreSQL schema (one row, id 1). The leader renews `expiresAt`
 * (the database's clock, ms); another replica may take over once it has passed, or at once when
 * `locked` says the leader held the leader lock and that lock is free (its session is gone), and
 * bumps `epoch`, which every transaction of a leader checks. SQLite has the table but never reads it.
 */
export interface LeadershipRecord {
  readonly id: number;
  readonly epoch: number;
  /** Which replica (host:pid), for people reading the table. */
  readonly holder: string | null;
  readonly locked: boolean;
  readonly expiresAt: number;
}

/** A viewer's edge session. `idHash` is the hash of the secret in the cookie; the secret is never stored. */
export interface SessionRecord {
  readonly idHash: string;
  readonly userId: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly revokedAt: number | null;
}

/** One transaction's view of the store, by entity, in a `Store.transaction` (it may run more than once) or staged. */
export interface Tx {
  readonly users: UsersTx;
  readonly apps: AppsTx;
  readonly nodes: NodesTx;
  readonly edges: EdgesTx;
  readonly ledgers: LedgersTx;
  readonly leases: LeasesTx;
  readonly idempotencyKeys: IdempotencyKeysTx;
  readonly signingKeys: SigningKeysTx;
  readonly sessions: SessionsTx;
  readonly wallets: WalletsTx;
  readonly usage: UsageTx;
  readonly dashboard: DashboardTx;
  readonly retention: RetentionTx;
  /**
   * Sends `payload` on `channel` (as Coordination.publish) when this transaction commits, and not
   * at all if it rolls back: a word to the other replicas that costs no transaction of its own and
   * cannot arrive before what it tells of is visible. Absent on a store nobody shares.
   */
  readonly publish?: (channel: string, payload: string) => Promise<void>;
}

export interface UsersTx {
  insert(user: UserRecord): Promise<void>;
  get(id: string): Promise<UserRecord | null>;
  getByName(name: string): Promise<UserRecord | null>;
  findByTokenHash(hash: string): Promise<UserRecord | null>;
  update(user: UserRecord): Promise<void>;
  /**
   * Users by name (in the database's collation), a page: those whose name or id contains `search`
   * (case-insensitive; null: all). One range of the name index, read until the page is full.
   */
  page(search: string | null, page: NamePage): Promise<UserRecord[]>;
}

export interface AppsTx {
  insert(app: AppRecord): Promise<void>;
  get(id: string): Promise<AppRecord | null>;
  getByName(name: string): Promise<AppRecord | null>;
  findByKeyHash(hash: string): Promise<AppRecord | null>;
  update(app: AppRecord): Promise<void>;
  /** Every app, by creation (recovery, usage scopes: what a replica needs whole). */
  list(): Promise<AppRecord[]>;
  /** Apps by name (in the database's collation), a page. */
  page(page: NamePage): Promise<AppRecord[]>;
}

export interface NodesTx {
  /** A new node has no state yet (devices, registeredAt, heartbeatAt, agentUrl all null). */
  insert(node: KeyedRecord): Promise<void>;
  findByKeyHash(hash: string): Promise<NodeRecord | null>;
  getByName(name: string): Promise<NodeRecord | null>;
  list(): Promise<NodeRecord[]>;
  /** Replaces the node's registration state; false when no node has that id. */
  setState(id: string, state: NodeState): Promise<boolean>;
  /** Records a heartbeat (only for a registered node); false when the node is unknown or not registered. */
  heartbeat(id: string, at: number): Promise<boolean>;
}

export interface EdgesTx {
  insert(edge: KeyedRecord): Promise<void>;
  findByKeyHash(hash: string): Promise<KeyedRecord | null>;
  getByName(name: string): Promise<KeyedRecord | null>;
}

export interface LedgersTx {
  /**
   * The identity's ledger as stored (not rolled to now), or null if it never reserved anything.
   * On a shared store it locks the identity's ledger row until commit — also when it does not
   * exist yet, so two replicas' first admissions for one identity are serialized too — except in
   * a `Store.read`, where it locks nothing.
   */
  get(identity: string): Promise<LedgerState | null>;
  put(identity: string, state: LedgerState): Promise<void>;
}

export interface LeasesTx {
  /** Stores a new lease; the store assigns its `seq` (arrival order). */
  insert(lease: NewLease): Promise<LeaseRecord>;
  /** Writes what a lease's lifecycle changes (status, placement, times, charges, problem); the rest never changes. */
  update(lease: LeaseRecord): Promise<void>;
  /**
   * Inside a transaction on a shared store, locks the row until commit (use cases read-modify-write
   * it); in a `Store.read`, locks nothing.
   */
  get(id: string): Promise<LeaseRecord | null>;
  list(filter: LeaseFilter): Promise<LeaseRecord[]>;
  /** Queued and active leases, in arrival order (recovery). */
  live(): Promise<LeaseRecord[]>;
  /**
   * The earliest time by which one of the identity's live leases is certain to have ended — an
   * active lease's deadline, or for a queued one its queue timeout plus its duration — for an
   * honest retry time. Null when it has no live lease.
   */
  earliestEnd(identity: { kind: IdentityKind; id: string }, queueTimeoutMs: number): Promise<number | null>;
}

export interface IdempotencyKeysTx {
  get(scopeKey: string): Promise<IdempotencyKeyRecord | null>;
  /** Records the key's use, replacing an earlier use of it (one that expired). */
  put(key: IdempotencyKeyRecord): Promise<void>;
  /** Deletes up to `limit` keys recorded at or before `before` (expired: they name nothing any more); how many. */
  deleteRecordedBefore(before: number, limit: number): Promise<number>;
}

export interface SigningKeysTx {
  /**
   * Takes the signing keys' lock until the transaction ends, so that replicas starting together
   * on an empty database make one key between them: the first inserts, the others then read it.
   */
  lock(): Promise<void>;
  /** Oldest first. */
  list(): Promise<SigningKeyRecord[]>;
  insert(key: SigningKeyRecord): Promise<void>;
}

export interface SessionsTx {
  insert(session: SessionRecord): Promise<void>;
  get(idHash: string): Promise<SessionRecord | null>;
  /** Marks the session revoked (if it was not already); true when it exists. */
  revoke(idHash: string, at: number): Promise<boolean>;
  /** Revokes every live session of the user; returns how many were revoked. */
  revokeForUser(userId: string, at: number): Promise<number>;
}
