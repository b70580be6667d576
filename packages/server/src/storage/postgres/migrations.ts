/**
 * Schema versions, the same as SQLite's (same tables, columns and meaning), in PostgreSQL's types:
 * times and durations are BIGINT milliseconds, lease `seq` an identity column. Applied in order,
 * each once, under an advisory lock (see PostgresStore.migrate). Never edit a shipped one.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  `
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
  // 2: viewer sessions of the edge. Only a hash of the session secret is kept, like user tokens.
  `
  CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE INDEX sessions_user ON sessions(user_id);
  `,
  // 3: what a node's agent registered (devices as JSON text), when, its last heartbeat, its URL.
  `
  ALTER TABLE nodes ADD COLUMN devices TEXT;
  ALTER TABLE nodes ADD COLUMN registered_at BIGINT;
  ALTER TABLE nodes ADD COLUMN heartbeat_at BIGINT;
  ALTER TABLE nodes ADD COLUMN agent_url TEXT;
  `,
];
