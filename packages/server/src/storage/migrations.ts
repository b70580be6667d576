import { BILLING_MIGRATION } from "./migrations-billing.js";
import { DASHBOARD_MIGRATION } from "./migrations-dashboard.js";
import { LISTS_MIGRATION } from "./migrations-lists.js";
import { RETENTION_MIGRATION } from "./migrations-retention.js";
import { USAGE_SPLIT_MIGRATION } from "./migrations-usage-split.js";
import { USAGE_WALLET_MIGRATION } from "./migrations-usage-wallet.js";
import { WALLET_MIGRATION } from "./migrations-wallet.js";

/**
 * Schema versions, each as SQLite and as PostgreSQL run it: the same tables, columns, indexes and
 * meaning, in each one's types (PostgreSQL: times and durations BIGINT milliseconds, `failed`
 * BOOLEAN, lease `seq` an identity column; SQLite: INTEGER, and `seq` the rowid alias). Applied in
 * order, each once, by `Store.migrate` (at server start and by `gpupool migrate`), under a lock so
 * that replicas starting together take turns, and with no statement timeout (a migration may take
 * longer than a request). Never edit a shipped version (databases already ran its text); add the
 * next one, for both adapters, and the column in tables.ts.
 * `packages/server/test/storage-migrations.test.ts` checks that both reach the same version with the
 * same columns and equivalent indexes.
 *
 * A plain version runs in one transaction with its record in schema_migrations: all of it or
 * nothing. Its locks are held until it commits, so on a table that older replicas are using keep it
 * to what is quick (a new table, `ADD COLUMN` that is nullable or has a constant default); it waits
 * at most the storage URL's `lock_timeout` for a lock, and fails rather than stall every request
 * queued behind it (run it again).
 *
 * An `online` version is for what would lock a busy table for long, such as an index on leases: its
 * PostgreSQL text is run one statement at a time (split at each `;` that ends a line, so keep `;`
 * out of the statements' bodies), outside any transaction, with no lock timeout, so that
 * `CREATE INDEX CONCURRENTLY` can run while older replicas keep serving (docs/upgrades.md). Each
 * statement must be idempotent (`CREATE INDEX CONCURRENTLY IF NOT EXISTS name …`, `ADD COLUMN IF NOT
 * EXISTS`): a run that was interrupted (a crash, a cancelled build) is run again from its first
 * statement, and the version is recorded only after all of them succeeded. An index that a
 * concurrent build left INVALID is dropped (`DROP INDEX CONCURRENTLY`) and built again by that next
 * run: name it unqualified, as `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name`. SQLite runs
 * an online version's text like a plain one, in one transaction (it has one writer, and no
 * CONCURRENTLY).
 */
export interface Migration {
  readonly version: number;
  /** Why this version exists. */
  readonly why: string;
  readonly sqlite: string;
  readonly postgres: string;
  /** PostgreSQL: run statement by statement outside a transaction (see above). */
  readonly online?: boolean;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    why: "The tables: users, apps, nodes and edges (named principals with a key), ledgers, leases, signing keys.",
    sqlite: `
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    quota_override_ms INTEGER,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner_id TEXT NOT NULL REFERENCES users(id),
    key_hash TEXT NOT NULL UNIQUE,
    max_concurrency INTEGER,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE edges (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE ledgers (
    identity TEXT PRIMARY KEY,
    window_started_at INTEGER,
    used_ms INTEGER NOT NULL,
    reserved_ms INTEGER NOT NULL,
    bonus_ms INTEGER NOT NULL,
    runs INTEGER NOT NULL
  );
  CREATE TABLE leases (
    -- rowid alias: new rows get max(seq)+1, and leases are never deleted, so seq only grows.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    app_id TEXT,
    identity_kind TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    size TEXT NOT NULL,
    slots INTEGER NOT NULL,
    cost REAL NOT NULL,
    duration_ms INTEGER NOT NULL,
    reserved_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    node TEXT,
    device_index INTEGER,
    device_uuid TEXT,
    device_name TEXT,
    slot_indexes TEXT,
    queued_at INTEGER NOT NULL,
    granted_at INTEGER,
    deadline INTEGER,
    ended_at INTEGER,
    held_ms INTEGER,
    charged_ms INTEGER NOT NULL,
    refunded_ms INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    window_started_at INTEGER,
    problem_code TEXT,
    problem_detail TEXT
  );
  CREATE INDEX leases_live ON leases(status, seq) WHERE status IN ('queued', 'active');
  CREATE INDEX leases_app ON leases(app_id, seq);
  CREATE INDEX leases_identity ON leases(identity_kind, identity_id, seq);
  CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_jwk TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
    postgres: `
  CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    quota_override_ms BIGINT,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner_id TEXT NOT NULL REFERENCES users(id),
    key_hash TEXT NOT NULL UNIQUE,
    max_concurrency INTEGER,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE edges (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE ledgers (
    identity TEXT PRIMARY KEY,
    window_started_at BIGINT,
    used_ms BIGINT NOT NULL,
    reserved_ms BIGINT NOT NULL,
    bonus_ms BIGINT NOT NULL,
    runs INTEGER NOT NULL
  );
  CREATE TABLE leases (
    -- Arrival order across replicas: a sequence, so seq only grows (leases are never deleted).
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    app_id TEXT,
    identity_kind TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    size TEXT NOT NULL,
    slots INTEGER NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    duration_ms BIGINT NOT NULL,
    reserved_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    node TEXT,
    device_index INTEGER,
    device_uuid TEXT,
    device_name TEXT,
    slot_indexes TEXT,
    queued_at BIGINT NOT NULL,
    granted_at BIGINT,
    deadline BIGINT,
    ended_at BIGINT,
    held_ms BIGINT,
    charged_ms BIGINT NOT NULL,
    refunded_ms BIGINT NOT NULL,
    failed BOOLEAN NOT NULL,
    window_started_at BIGINT,
    problem_code TEXT,
    problem_detail TEXT
  );
  CREATE INDEX leases_live ON leases(status, seq) WHERE status IN ('queued', 'active');
  CREATE INDEX leases_app ON leases(app_id, seq);
  CREATE INDEX leases_identity ON leases(identity_kind, identity_id, seq);
  CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_jwk TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  `,
  },
  {
    version: 2,
    why: "Viewer sessions of the edge. Only a hash of the session secret is kept, like user tokens.",
    sqlite: `
  CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE INDEX sessions_user ON sessions(user_id);
  `,
    postgres: `
  CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE INDEX sessions_user ON sessions(user_id);
  `,
  },
  {
    version: 3,
    why: "What a node's agent registered (devices as JSON text), when, its last heartbeat, its URL.",
    sqlite: `
  ALTER TABLE nodes ADD COLUMN devices TEXT;
  ALTER TABLE nodes ADD COLUMN registered_at INTEGER;
  ALTER TABLE nodes ADD COLUMN heartbeat_at INTEGER;
  ALTER TABLE nodes ADD COLUMN agent_url TEXT;
  `,
    postgres: `
  ALTER TABLE nodes ADD COLUMN devices TEXT;
  ALTER TABLE nodes ADD COLUMN registered_at BIGINT;
  ALTER TABLE nodes ADD COLUMN heartbeat_at BIGINT;
  ALTER TABLE nodes ADD COLUMN agent_url TEXT;
  `,
  },
  {
    version: 4,
    why: "Only a user's own leases are listed by identity (GET /v1/leases with a user token). An index of every identity's leases cost each admission a page write at a random place in it (ip and app identities are most of the traffic), about half the pages a group commit wrote. PostgreSQL got this version later than SQLite, when the lists were paired.",
    sqlite: `
  DROP INDEX leases_identity;
  CREATE INDEX leases_user ON leases(identity_id, seq) WHERE identity_kind = 'user';
  `,
    postgres: `
  DROP INDEX leases_identity;
  CREATE INDEX leases_user ON leases(identity_id, seq) WHERE identity_kind = 'user';
  `,
  },
  {
    version: 5,
    why: "Leadership as a lease with a fencing epoch (PostgreSQL replicas): a leader renews its lease every second, another replica may take over once it expired (or at once when the leader's session, which holds the leader lock, is gone) and bumps the epoch, and every transaction of a leader checks the epoch, so a leader that was frozen (SIGSTOP) is replaced and can write nothing after it. One row. SQLite has the table for the pairing; its one server never reads it.",
    sqlite: `
  CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    holder TEXT,
    locked INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  );
  INSERT INTO leadership (id, epoch, holder, locked, expires_at) VALUES (1, 0, NULL, 0, 0);
  `,
    postgres: `
  CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    holder TEXT,
    locked BOOLEAN NOT NULL,
    expires_at BIGINT NOT NULL
  );
  INSERT INTO leadership (id, epoch, holder, locked, expires_at) VALUES (1, 0, NULL, false, 0);
  `,
  },
  {
    version: 6,
    why: "Idempotency-Key on POST /v1/leases: which lease a caller's key was first used for, and a fingerprint of that request, so a retry gets the same lease back (and a different request with the same key is refused). Keyed by the caller's scope and the key; a use older than the keys' lifetime is overwritten.",
    sqlite: `
  CREATE TABLE idempotency_keys (
    scope_key TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
    postgres: `
  CREATE TABLE idempotency_keys (
    scope_key TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  `,
  },
  { version: 7, ...BILLING_MIGRATION },
  { version: 8, ...DASHBOARD_MIGRATION },
  {
    version: 9,
    why: "A queued lease's max_wait (how long its caller said it would wait for a slot) is stored with it, so that after a restart or a failover it still times out when its caller said, not after its tier's whole queue timeout. Null: the caller named none.",
    sqlite: `
  ALTER TABLE leases ADD COLUMN max_wait_ms INTEGER;
  `,
    postgres: `
  ALTER TABLE leases ADD COLUMN max_wait_ms BIGINT;
  `,
  },
  { version: 10, ...RETENTION_MIGRATION },
  { version: 11, ...LISTS_MIGRATION },
  { version: 12, ...WALLET_MIGRATION },
  { version: 13, ...USAGE_WALLET_MIGRATION },
  { version: 14, ...USAGE_SPLIT_MIGRATION },
];

/** The version a fully migrated database is at (versions only grow). */
export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
