import type { IdentityKind, LedgerState } from "@gpupool/core";
import type {
  AppRecord,
  IdempotencyKeyRecord,
  KeyedRecord,
  LeadershipRecord,
  LeaseRecord,
  LeaseStatus,
  NodeRecord,
  SessionRecord,
  SigningKeyRecord,
  UserRecord,
} from "./store.js";
import { sharesJson } from "./billing-tables.js";
import { Table, boolean, devicesJson, integer, integerOrNull, real, slotList, text, textOrNull } from "./table.js";

/*
 * One declaration per entity: the column of each record field, and what an UPDATE may change.
 * Both adapters build their statements from these; the schema itself is in migrations.ts (a new
 * field needs a migration there, for both adapters, and its column here).
 */

/** What `users.update` changes (not the id or creation time). */
const USER_MUTABLE = ["name", "tier", "tokenHash", "quotaOverrideMs"] as const satisfies readonly (keyof UserRecord)[];

export const USERS = new Table<UserRecord, (typeof USER_MUTABLE)[number]>(
  "users",
  {
    id: text("id"),
    name: text("name"),
    tier: text("tier"),
    tokenHash: text("token_hash"),
    quotaOverrideMs: integerOrNull("quota_override_ms"),
    createdAt: integer("created_at"),
  },
  { mutable: USER_MUTABLE },
);

/** What `apps.update` changes: the operator may change an app's concurrency limit. */
const APP_MUTABLE = ["maxConcurrency"] as const satisfies readonly (keyof AppRecord)[];

export const APPS = new Table<AppRecord, (typeof APP_MUTABLE)[number]>(
  "apps",
  {
    id: text("id"),
    name: text("name"),
    ownerId: text("owner_id"),
    keyHash: text("key_hash"),
    maxConcurrency: integerOrNull("max_concurrency"),
    createdAt: integer("created_at"),
  },
  { mutable: APP_MUTABLE },
);

const keyed = {
  id: text("id"),
  name: text("name"),
  keyHash: text("key_hash"),
  createdAt: integer("created_at"),
} as const;

/** A node's registration state: what its agent last registered, which `nodes.setState` replaces. */
const NODE_STATE = [
  "devices",
  "registeredAt",
  "heartbeatAt",
  "agentUrl",
] as const satisfies readonly (keyof NodeRecord)[];

/** Nodes: their key, and their registration state. */
export const NODES = new Table<NodeRecord, (typeof NODE_STATE)[number]>(
  "nodes",
  {
    ...keyed,
    devices: devicesJson("devices"),
    registeredAt: integerOrNull("registered_at"),
    heartbeatAt: integerOrNull("heartbeat_at"),
    agentUrl: textOrNull("agent_url"),
  },
  { mutable: NODE_STATE },
);

export const EDGES = new Table<KeyedRecord>("edges", keyed);

/** An identity's ledger, keyed by the identity (`user:<id>`, `ip:<address>`, `app:<id>`). */
export const LEDGERS = new Table<LedgerState, keyof LedgerState>(
  "ledgers",
  {
    windowStartedAt: integerOrNull("window_started_at"),
    usedMs: integer("used_ms"),
    reservedMs: integer("reserved_ms"),
    bonusMs: integer("bonus_ms"),
    runs: integer("runs"),
  },
  { key: text("identity"), mutable: ["windowStartedAt", "usedMs", "reservedMs", "bonusMs", "runs"] },
);

/**
 * What a lease's lifecycle changes, the only columns its UPDATE sets: naming an indexed column in
 * SET makes SQLite rewrite that index entry even when the value is unchanged (app, identity, size
 * and arrival never change).
 */
const LEASE_LIFECYCLE = [
  "status",
  "node",
  "deviceIndex",
  "deviceUuid",
  "deviceName",
  "slotIndexes",
  "grantedAt",
  "deadline",
  "endedAt",
  "heldMs",
  "chargedMs",
  "refundedMs",
  "failed",
  "windowStartedAt",
  "problemCode",
  "problemDetail",
  "chargedMicros",
] as const satisfies readonly (keyof LeaseRecord)[];

export const LEASES = new Table<LeaseRecord, (typeof LEASE_LIFECYCLE)[number], "seq">(
  "leases",
  {
    seq: integer("seq"),
    id: text("id"),
    appId: textOrNull("app_id"),
    identityKind: text<IdentityKind>("identity_kind"),
    identityId: text("identity_id"),
    tier: text("tier"),
    size: text("size"),
    slots: integer("slots"),
    cost: real("cost"),
    durationMs: integer("duration_ms"),
    reservedMs: integer("reserved_ms"),
    status: text<LeaseStatus>("status"),
    node: textOrNull("node"),
    deviceIndex: integerOrNull("device_index"),
    deviceUuid: textOrNull("device_uuid"),
    deviceName: textOrNull("device_name"),
    slotIndexes: slotList("slot_indexes"),
    queuedAt: integer("queued_at"),
    grantedAt: integerOrNull("granted_at"),
    deadline: integerOrNull("deadline"),
    endedAt: integerOrNull("ended_at"),
    heldMs: integerOrNull("held_ms"),
    chargedMs: integer("charged_ms"),
    refundedMs: integer("refunded_ms"),
    failed: boolean("failed"),
    windowStartedAt: integerOrNull("window_started_at"),
    problemCode: textOrNull("problem_code"),
    problemDetail: textOrNull("problem_detail"),
    quotaMs: integer("quota_ms"),
    overageMs: integer("overage_ms"),
    holdMicros: integer("hold_micros"),
    holdShares: sharesJson("hold_shares"),
    chargedMicros: integer("charged_micros"),
    maxWaitMs: integerOrNull("max_wait_ms"),
  },
  {
    // Arrival order, assigned by the database (SQLite's rowid alias, PostgreSQL's identity column).
    generated: ["seq"],
    mutable: LEASE_LIFECYCLE,
  },
);

/** Idempotency keys of lease requests: everything but the key may be replaced (an expired use of the key). */
export const IDEMPOTENCY_KEYS = new Table<IdempotencyKeyRecord, "leaseId" | "request" | "createdAt">(
  "idempotency_keys",
  {
    scopeKey: text("scope_key"),
    leaseId: text("lease_id"),
    request: text("request"),
    createdAt: integer("created_at"),
  },
  { mutable: ["leaseId", "request", "createdAt"] },
);

export const SIGNING_KEYS = new Table<SigningKeyRecord>("signing_keys", {
  kid: text("kid"),
  privateJwk: text("private_jwk"),
  publicJwk: text("public_jwk"),
  createdAt: integer("created_at"),
});

export const SESSIONS = new Table<SessionRecord>("sessions", {
  idHash: text("id_hash"),
  userId: text("user_id"),
  createdAt: integer("created_at"),
  expiresAt: integer("expires_at"),
  revokedAt: integerOrNull("revoked_at"),
});

/** The leader's lease (one row; read and written only by the PostgreSQL coordination, see postgres/leader-lease.ts). */
export const LEADERSHIP = new Table<LeadershipRecord>("leadership", {
  id: integer("id"),
  epoch: integer("epoch"),
  holder: textOrNull("holder"),
  locked: boolean("locked"),
  expiresAt: integer("expires_at"),
});
