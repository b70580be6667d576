import type { LedgerState } from "@gpupool/core";
import type postgres from "postgres";
import { encodeDevices } from "../devices-json.js";
import { encodeSlots, n, toApp, toKeyed, toLease, toLedger, toNode, toSession, toSigningKey, toUser } from "../rows.js";
import type { Row } from "../rows.js";
import type { AppRecord, KeyedRecord, LeaseFilter, LeaseRecord, NewLease, NodeRecord, Tx, UserRecord } from "../store.js";

/** A connection inside a transaction: `sql.begin`'s, or the leader's session within its open group. */
type Sql = postgres.ISql;

function leaseRow(l: NewLease): Record<string, string | number | boolean | null> {
  return {
    id: l.id, app_id: l.appId, identity_kind: l.identityKind, identity_id: l.identityId, tier: l.tier, size: l.size, slots: l.slots,
    cost: l.cost, duration_ms: l.durationMs, reserved_ms: l.reservedMs, ...mutableRow(l),
    queued_at: l.queuedAt,
  };
}

/** The columns a lease's lifecycle changes (app, identity, size and arrival never do). */
function mutableRow(l: NewLease): Record<string, string | number | boolean | null> {
  return {
    status: l.status, node: l.node, device_index: l.deviceIndex, device_uuid: l.deviceUuid, device_name: l.deviceName,
    slot_indexes: encodeSlots(l.slotIndexes), granted_at: l.grantedAt, deadline: l.deadline, ended_at: l.endedAt, held_ms: l.heldMs,
    charged_ms: l.chargedMs, refunded_ms: l.refundedMs, failed: l.failed, window_started_at: l.windowStartedAt,
    problem_code: l.problemCode, problem_detail: l.problemDetail,
  };
}

/**
 * What a leader transaction gets from the group it runs in (see LeaderGroup): both save round
 * trips on the leader's session, where every transaction waits for the one before it.
 */
export interface GroupedTx {
  /**
   * Ledgers whose locks (the identity's advisory lock and the row's) the group's transaction holds,
   * as that transaction sees them. Every writer of a ledger takes those locks first (`getLedger`),
   * so while the group holds them nobody else can change the row, and reading it again is not needed.
   */
  readonly ledgers: Map<string, LedgerState | null>;
  /** Sends a write whose answer nothing reads without waiting for it (a failure fails the member, or the group). */
  readonly defer: (q: postgres.PendingQuery<Row[]>) => void;
}

/**
 * One transaction's view of the store. Transactions run at READ COMMITTED; the rows a use case
 * reads to modify (an identity's ledger, a lease) are locked explicitly until commit, so two
 * replicas admitting for one identity, or ending one lease, take turns instead of losing an update.
 *
 * Lock order, which keeps replicas from deadlocking: an identity's advisory lock comes before any
 * row of that identity — its ledger (`getLedger`) and its leases (`getLease`, and the
 * `updateLease` that use cases only do after reading the lease's ledger). So a transaction that
 * holds a ledger or lease row of an identity holds that identity's advisory lock, and whoever
 * waits for such a row already holds the advisory lock itself, which its holder cannot. A plain
 * transaction (a follower's admission, release or cancel, a quota read) works on one identity: it
 * only ever waits for that identity's advisory lock, before it holds anything of its own, so it
 * cannot be part of a cycle — nor can the leader's group, which holds many identities' locks but
 * can only wait for ones such a transaction holds (before, a follower's cancel locked the lease
 * row and then the ledger while the leader's release held the ledger and then granted that lease:
 * a deadlock).
 *
 * `ledgerLockSpace` is the first key of the ledger advisory locks (derived from the schema, so
 * schemas in one database do not contend).
 */
export function postgresTx(sql: Sql, ledgerLockSpace: number, grouped?: GroupedTx): Tx {
  const one = async (q: postgres.PendingQuery<Row[]>): Promise<Row | undefined> => (await q)[0];
  const all = async (q: postgres.PendingQuery<Row[]>): Promise<Row[]> => [...(await q)];
  const count = async (q: postgres.PendingQuery<Row[]>): Promise<number> => (await q).count;
  const insertKeyed = async (table: "nodes" | "edges", r: KeyedRecord): Promise<void> => {
    await sql`INSERT INTO ${sql(table)} (id, name, key_hash, created_at) VALUES (${r.id}, ${r.name}, ${r.keyHash}, ${r.createdAt})`;
  };
  return {
    insertUser: async (u) => {
      await sql`INSERT INTO users (id, name, tier, token_hash, quota_override_ms, created_at) VALUES (${u.id}, ${u.name}, ${u.tier}, ${u.tokenHash}, ${u.quotaOverrideMs}, ${u.createdAt})`;
    },
    getUser: async (id) => toUser(await one(sql`SELECT * FROM users WHERE id = ${id}`)),
    getUserByName: async (name) => toUser(await one(sql`SELECT * FROM users WHERE name = ${name}`)),
    findUserByTokenHash: async (hash) => toUser(await one(sql`SELECT * FROM users WHERE token_hash = ${hash}`)),
    updateUser: async (u) => {
      await sql`UPDATE users SET name = ${u.name}, tier = ${u.tier}, token_hash = ${u.tokenHash}, quota_override_ms = ${u.quotaOverrideMs} WHERE id = ${u.id}`;
    },
    listUsers: async () => (await all(sql`SELECT * FROM users ORDER BY created_at, id`)).map((r) => toUser(r) as UserRecord),

    insertApp: async (a) => {
      await sql`INSERT INTO apps (id, name, owner_id, key_hash, max_concurrency, created_at) VALUES (${a.id}, ${a.name}, ${a.ownerId}, ${a.keyHash}, ${a.maxConcurrency}, ${a.createdAt})`;
    },
    getApp: async (id) => toApp(await one(sql`SELECT * FROM apps WHERE id = ${id}`)),
    getAppByName: async (name) => toApp(await one(sql`SELECT * FROM apps WHERE name = ${name}`)),
    findAppByKeyHash: async (hash) => toApp(await one(sql`SELECT * FROM apps WHERE key_hash = ${hash}`)),
    listApps: async () => (await all(sql`SELECT * FROM apps ORDER BY created_at, id`)).map((r) => toApp(r) as AppRecord),

    insertNode: (r) => insertKeyed("nodes", r),
    findNodeByKeyHash: async (hash) => toNode(await one(sql`SELECT * FROM nodes WHERE key_hash = ${hash}`)),
    listNodes: async () => (await all(sql`SELECT * FROM nodes ORDER BY created_at, id`)).map((r) => toNode(r) as NodeRecord),
    getNodeByName: async (name) => toNode(await one(sql`SELECT * FROM nodes WHERE name = ${name}`)),
    setNodeState: async (id, s) =>
      (await count(sql`
        UPDATE nodes SET devices = ${encodeDevices(s.devices)}, registered_at = ${s.registeredAt}, heartbeat_at = ${s.heartbeatAt}, agent_url = ${s.agentUrl}
        WHERE id = ${id}`)) > 0,
    heartbeatNode: async (id, at) => (await count(sql`UPDATE nodes SET heartbeat_at = ${at} WHERE id = ${id} AND registered_at IS NOT NULL`)) > 0,
    insertEdge: (r) => insertKeyed("edges", r),
    findEdgeByKeyHash: async (hash) => toKeyed(await one(sql`SELECT * FROM edges WHERE key_hash = ${hash}`)),
    getEdgeByName: async (name) => toKeyed(await one(sql`SELECT * FROM edges WHERE name = ${name}`)),

    getLedger: async (identity) => {
      if (grouped?.ledgers.has(identity)) return grouped.ledgers.get(identity) ?? null;
      // The row may not exist yet, and FOR UPDATE cannot lock a missing row: an advisory lock on
      // the identity serializes first admissions too (without writing a placeholder row). The
      // SELECT is a separate statement so its snapshot is taken after the lock is granted; both
      // are sent at once (pipelined), so this costs one round trip.
      const [, rows] = await Promise.all([
        sql`SELECT pg_advisory_xact_lock(${ledgerLockSpace}::int4, hashtext(${identity}))`,
        sql<Row[]>`SELECT * FROM ledgers WHERE identity = ${identity} FOR UPDATE`,
      ]);
      const ledger = toLedger(rows[0]);
      grouped?.ledgers.set(identity, ledger);
      return ledger;
    },
    putLedger: async (identity, s) => {
      const q = sql<Row[]>`
        INSERT INTO ledgers (identity, window_started_at, used_ms, reserved_ms, bonus_ms, runs)
        VALUES (${identity}, ${s.windowStartedAt}, ${s.usedMs}, ${s.reservedMs}, ${s.bonusMs}, ${s.runs})
        ON CONFLICT (identity) DO UPDATE SET window_started_at = excluded.window_started_at, used_ms = excluded.used_ms,
          reserved_ms = excluded.reserved_ms, bonus_ms = excluded.bonus_ms, runs = excluded.runs`;
      if (!grouped) return void (await q);
      grouped.defer(q);
      // Only a ledger whose locks the group holds is remembered (every writer reads it first anyway).
      if (grouped.ledgers.has(identity)) grouped.ledgers.set(identity, s);
    },

    insertLease: async (l) => {
      const row = await one(sql`INSERT INTO leases ${sql(leaseRow(l))} RETURNING seq`);
      return { ...l, seq: Number(row?.["seq"]) };
    },
    updateLease: async (l: LeaseRecord) => {
      const q = sql<Row[]>`UPDATE leases SET ${sql(mutableRow(l))} WHERE id = ${l.id}`;
      if (grouped) grouped.defer(q);
      else await q;
    },
    getLease: async (id) => {
      // The lock order above: the identity's advisory lock (its identity read from the row without
      // a lock: it never changes), then the row, FOR UPDATE — a separate statement, so its snapshot
      // is taken once the advisory lock is held and it reads the status as it is then. Sent at once:
      // one round trip. In a group already holding the identity's lock, the first one is free.
      const [, rows] = await Promise.all([
        sql`SELECT pg_advisory_xact_lock(${ledgerLockSpace}::int4, hashtext(identity_kind || ':' || identity_id)) FROM leases WHERE id = ${id}`,
        sql<Row[]>`SELECT * FROM leases WHERE id = ${id} FOR UPDATE`,
      ]);
      return toLease(rows[0]);
    },
    listLeases: async (f: LeaseFilter) => {
      const rows = await all(sql`
        SELECT * FROM leases WHERE TRUE
        ${f.appId !== undefined ? sql`AND app_id = ${f.appId}` : sql``}
        ${f.identity !== undefined ? sql`AND identity_kind = ${f.identity.kind} AND identity_id = ${f.identity.id}` : sql``}
        ${f.status !== undefined ? sql`AND status = ${f.status}` : sql``}
        ORDER BY seq DESC LIMIT ${f.limit}`);
      return rows.map((r) => toLease(r) as LeaseRecord);
    },
    liveLeases: async () => (await all(sql`SELECT * FROM leases WHERE status IN ('queued', 'active') ORDER BY seq`)).map((r) => toLease(r) as LeaseRecord),
    earliestEnd: async (identity, queueTimeoutMs) => {
      const r = await one(sql`
        SELECT MIN(CASE WHEN status = 'active' THEN deadline ELSE queued_at + ${queueTimeoutMs}::bigint + duration_ms END) AS d
        FROM leases WHERE status IN ('queued', 'active') AND identity_kind = ${identity.kind} AND identity_id = ${identity.id}`);
      return n(r?.["d"]);
    },

    signingKeys: async () => (await all(sql`SELECT * FROM signing_keys ORDER BY created_at`)).map(toSigningKey),
    insertSigningKey: async (k) => {
      await sql`INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) VALUES (${k.kid}, ${k.privateJwk}, ${k.publicJwk}, ${k.createdAt})`;
    },

    insertSession: async (x) => {
      await sql`INSERT INTO sessions (id_hash, user_id, created_at, expires_at, revoked_at) VALUES (${x.idHash}, ${x.userId}, ${x.createdAt}, ${x.expiresAt}, ${x.revokedAt})`;
    },
    getSession: async (idHash) => toSession(await one(sql`SELECT * FROM sessions WHERE id_hash = ${idHash}`)),
    // The first revocation time stays; true whenever the session exists.
    revokeSession: async (idHash, at) => (await count(sql`UPDATE sessions SET revoked_at = COALESCE(revoked_at, ${at}) WHERE id_hash = ${idHash}`)) > 0,
    revokeUserSessions: (userId, at) => count(sql`UPDATE sessions SET revoked_at = ${at} WHERE user_id = ${userId} AND revoked_at IS NULL`),
  };
}
