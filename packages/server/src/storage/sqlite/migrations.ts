/** Schema versions, applied in order inside one transaction each. Never edit a shipped one. */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `
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
  // 2: viewer sessions of the edge. Only a hash of the session secret is kept, like user tokens.
  `
  CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE INDEX sessions_user ON sessions(user_id);
  `,
  // 3: what a node's agent registered (devices as JSON text), when, its last heartbeat, its URL.
  `
  ALTER TABLE nodes ADD COLUMN devices TEXT;
  ALTER TABLE nodes ADD COLUMN registered_at INTEGER;
  ALTER TABLE nodes ADD COLUMN heartbeat_at INTEGER;
  ALTER TABLE nodes ADD COLUMN agent_url TEXT;
  `,
  // 4: only a user's own leases are listed by identity (GET /v1/leases with a user token). An index
  // of every identity's leases cost each admission a page write at a random place in it (ip and
  // app identities are most of the traffic), about half the pages a group commit wrote.
  `
  DROP INDEX leases_identity;
  CREATE INDEX leases_user ON leases(identity_id, seq) WHERE identity_kind = 'user';
  `,
];
