import type { LedgerState } from "@gpupool/core";
import type postgres from "postgres";
import { billingTx, dollarParams } from "../billing-sql.js";
import { checkPayload } from "../local-coordination.js";
import { dashboardTx } from "../dashboard-sql.js";
import { leaseListStatements } from "../lease-list.js";
import { retentionTx } from "../retention-sql.js";
import type { Tx } from "../store.js";
import type { Row, SqlValue, TableNames } from "../table.js";
import { APPS, EDGES, IDEMPOTENCY_KEYS, LEASES, LEDGERS, NODES, SESSIONS, SIGNING_KEYS, USERS } from "../tables.js";

/** A connection inside a transaction: `sql.begin`'s, or the leader's session within its open group. */
type Sql = postgres.ISql;

// Statements, built once from the tables (tables.ts), with numbered parameters; prepared on each
// connection the first time it runs them (postgres.js caches them by text).
const param = (n: number): string => `$${n}`;
const insert = (t: TableNames): string =>
  `INSERT INTO ${t.name} (${t.insertNames.join(", ")}) VALUES (${t.insertNames.map((_, i) => param(i + 1)).join(", ")})`;
const select = (t: TableNames, rest: string): string => `SELECT ${t.selectList} FROM ${t.name} ${rest}`;
/** SET every mutable column, WHERE `key` is the parameter after them. */
const update = (t: TableNames, key: string): string =>
  `UPDATE ${t.name} SET ${t.mutableNames.map((c, i) => `${c} = ${param(i + 1)}`).join(", ")} WHERE ${key} = ${param(t.mutableNames.length + 1)}`;

const USER = {
  insert: insert(USERS),
  byId: select(USERS, "WHERE id = $1"),
  byName: select(USERS, "WHERE name = $1"),
  byTokenHash: select(USERS, "WHERE token_hash = $1"),
  update: update(USERS, "id"),
  // By name, one range of its unique index (read until the page is full); the search is a filter.
  page: select(USERS, "WHERE name > $1 ORDER BY name LIMIT $2"),
  search: select(
    USERS,
    "WHERE name > $1 AND (strpos(lower(name), $2) > 0 OR strpos(lower(id), $2) > 0) ORDER BY name LIMIT $3",
  ),
};
const APP = {
  insert: insert(APPS),
  byId: select(APPS, "WHERE id = $1"),
  byName: select(APPS, "WHERE name = $1"),
  byKeyHash: select(APPS, "WHERE key_hash = $1"),
  list: select(APPS, "ORDER BY created_at, id"),
  page: select(APPS, "WHERE name > $1 ORDER BY name LIMIT $2"),
};
const NODE = {
  insert: insert(NODES),
  byKeyHash: select(NODES, "WHERE key_hash = $1"),
  byName: select(NODES, "WHERE name = $1"),
  list: select(NODES, "ORDER BY created_at, id"),
  setState: update(NODES, "id"),
  heartbeat: "UPDATE nodes SET heartbeat_at = $1 WHERE id = $2 AND registered_at IS NOT NULL",
};
const EDGE = {
  insert: insert(EDGES),
  byKeyHash: select(EDGES, "WHERE key_hash = $1"),
  byName: select(EDGES, "WHERE name = $1"),
};
const LEDGER = {
  lock: "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
  forUpdate: select(LEDGERS, "WHERE identity = $1 FOR UPDATE"),
  read: select(LEDGERS, "WHERE identity = $1"),
  upsert: `${insert(LEDGERS)} ON CONFLICT (identity) DO UPDATE SET ${LEDGERS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
};
const LEASE = {
  insert: `${insert(LEASES)} RETURNING seq`,
  /** With a seq drawn from the sequence before (see GroupedTx.seqs): nothing to wait for. */
  insertWithSeq: `INSERT INTO leases (seq, ${LEASES.insertNames.join(", ")}) OVERRIDING SYSTEM VALUE VALUES ($1, ${LEASES.insertNames.map((_, i) => param(i + 2)).join(", ")})`,
  /** The next `$1` values of the leases' sequence (nextval is not transactional: they are this caller's whatever happens). */
  nextSeqs: "SELECT nextval(pg_get_serial_sequence('leases', 'seq'))::float8 AS s FROM generate_series(1, $1::int)",
  update: update(LEASES, "id"),
  lockIdentity:
    "SELECT pg_advisory_xact_lock($1::int4, hashtext(identity_kind || ':' || identity_id)) FROM leases WHERE id = $2",
  forUpdate: select(LEASES, "WHERE id = $1 FOR UPDATE"),
  /** The ledger of the lease's identity, locked: what every change of a lease reads next (its key is kind:id, as identityKey). */
  ledgerForUpdate: select(
    LEDGERS,
    "WHERE identity = (SELECT identity_kind || ':' || identity_id FROM leases WHERE id = $1) FOR UPDATE",
  ),
  read: select(LEASES, "WHERE id = $1"),
  live: select(LEASES, "WHERE status IN ('queued', 'active') ORDER BY seq"),
  earliestEnd:
    "SELECT MIN(CASE WHEN status = 'active' THEN deadline ELSE queued_at + $1::bigint + duration_ms END) AS d " +
    "FROM leases WHERE status IN ('queued', 'active') AND identity_kind = $2 AND identity_id = $3",
};
const listLeases = leaseListStatements(`SELECT ${LEASES.selectList} FROM leases`, param);
const IDEMPOTENCY_KEY = {
  byKey: select(IDEMPOTENCY_KEYS, "WHERE scope_key = $1"),
  upsert: `${insert(IDEMPOTENCY_KEYS)} ON CONFLICT (scope_key) DO UPDATE SET ${IDEMPOTENCY_KEYS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
  // The outer created_at test again: a key re-used (re-recorded) meanwhile is not deleted.
  deleteBefore:
    "DELETE FROM idempotency_keys WHERE created_at <= $1 AND scope_key IN " +
    "(SELECT scope_key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)",
};
const SIGNING_KEY = {
  // In the ledger locks' key space, under a name no identity ("kind:id") can have.
  lock: "SELECT pg_advisory_xact_lock($1::int4, hashtext('signing_keys'))",
  insert: insert(SIGNING_KEYS),
  list: select(SIGNING_KEYS, "ORDER BY created_at"),
};
const SESSION = {
  insert: insert(SESSIONS),
  byIdHash: select(SESSIONS, "WHERE id_hash = $1"),
  // The first revocation time stays; true whenever the session exists.
  revoke: "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) WHERE id_hash = $2",
  revokeForUser: "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
};

/**
 * What a leader transaction gets from the group it runs in (see LeaderGroup): both save round
 * trips on the leader's session, where every transaction waits for the one before it.
 */
export interface GroupedTx {
  /**
   * Ledgers whose locks (the identity's advisory lock and the row's) the group's transaction holds,
   * as that transaction sees them. Every writer of a ledger takes those locks first (`ledgers.get`),
   * so while the group holds them nobody else can change the row, and reading it again is not needed.
   */
  readonly ledgers: Map<string, LedgerState | null>;
  /** Sends a write whose answer nothing reads without waiting for it (a failure fails the member, or the group). */
  readonly defer: (q: postgres.PendingQuery<Row[]>) => void;
  /**
   * Values of the leases' sequence drawn ahead, in increasing order, for inserts that need not wait
   * for `RETURNING seq`: drawn in the round trip of an insert that waits anyway, emptied by a
   * queued lease's insert (which draws its own, so one replica's leases keep their order). They
   * belong to the group: a value is used within the group's few milliseconds, so a lease's `seq`
   * is never much older than the lease (lists are newest first by `seq`).
   */
  readonly seqs: number[];
  /** How many values to draw ahead (0 under light load: nothing is wasted). */
  readonly drawAhead: () => number;
}

/** The most sequence values an insert draws ahead for the ones after it. */
const SEQS_AHEAD = 32;

/**
 * One transaction's view of the store. Transactions run at READ COMMITTED; the rows a use case
 * reads to modify (an identity's ledger, a lease) are locked explicitly until commit, so two
 * replicas admitting for one identity, or ending one lease, take turns instead of losing an update.
 *
 * Lock order, which keeps replicas from deadlocking: an identity's advisory lock comes before any
 * row of that identity — its ledger (`ledgers.get`) and its leases (`leases.get`, and the
 * `leases.update` that use cases only do after reading the lease's ledger). So a transaction that
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
 *
 * `readOnly`: the view of a `Store.read` (a READ ONLY transaction, one snapshot): the getters that
 * lock take no lock (no advisory lock, no FOR UPDATE: nothing to wait for, no transaction id, no
 * WAL), and a write fails in PostgreSQL.
 */
export function postgresTx(
  sql: Sql,
  ledgerLockSpace: number,
  grouped?: GroupedTx,
  schema?: string,
  readOnly = false,
  /**
   * In a plain transaction: sends a write whose answer nothing reads without waiting for it; the
   * writes go out with the statements after them or the COMMIT, and the run fails with the first
   * failure (see PostgresStore.runOnce). Without it, such writes are waited for one by one.
   */
  deferPlain?: (q: postgres.PendingQuery<Row[]>) => void,
): Tx {
  /** Ledger and lease writes, and notifications: their rows are locked (or they take no lock), nothing reads their answer. */
  const defer = grouped?.defer ?? deferPlain;
  const q = (text: string, params: SqlValue[] = []): postgres.PendingQuery<Row[]> =>
    sql.unsafe<Row[]>(text, params, { prepare: true });
  const one = async (text: string, ...params: SqlValue[]): Promise<Row | undefined> => (await q(text, params))[0];
  const all = async (text: string, ...params: SqlValue[]): Promise<Row[]> => [...(await q(text, params))];
  const run = async (text: string, ...params: SqlValue[]): Promise<void> => void (await q(text, params));
  const count = async (text: string, ...params: SqlValue[]): Promise<number> => (await q(text, params)).count;
  const decode = <R>(table: { decode(row: Row): R }, row: Row | undefined): R | null =>
    row === undefined ? null : table.decode(row);
  /**
   * Identities whose advisory lock this transaction holds ("kind:id"), so it is not asked for
   * again (a release locks the identity through its lease, then reads the ledger), and the
   * ledgers it read or wrote under those locks: nobody else can change such a row until this
   * transaction ends, so a second read (the quota after a release or an admission) is not sent.
   */
  const locked = new Set<string>();
  const ledgers = new Map<string, LedgerState | null>();
  return {
    ...(schema === undefined
      ? {}
      : {
          // pg_notify is transactional: delivered at COMMIT, dropped by a rollback.
          publish: (channel: string, payload: string) => {
            checkPayload(channel, payload);
            const notify = q("SELECT pg_notify($1, $2)", [`${schema}.${channel}`, payload]);
            if (defer === undefined) return notify.then(() => undefined);
            defer(notify);
            return Promise.resolve();
          },
        }),
    ...dashboardTx({
      dialect: "postgres",
      all: async (text, params) => [...(await q(dollarParams(text), [...params]))],
      run: async (text, params) => (await q(dollarParams(text), [...params])).count,
    }),
    ...retentionTx({
      dialect: "postgres",
      all: async (text, params) => [...(await q(dollarParams(text), [...params]))],
      run: async (text, params) => (await q(dollarParams(text), [...params])).count,
    }),
    ...billingTx({
      dialect: "postgres",
      all: async (text, params) => [...(await q(dollarParams(text), [...params]))],
      run: async (text, params) => (await q(dollarParams(text), [...params])).count,
      // The user's ledger lock (see the lock order above): billing rows come after it.
      lockUser: (userId) => (readOnly ? Promise.resolve() : run(LEDGER.lock, ledgerLockSpace, `user:${userId}`)),
    }),
    users: {
      insert: (u) => run(USER.insert, ...USERS.insertParams(u, "postgres")),
      get: async (id) => decode(USERS, await one(USER.byId, id)),
      getByName: async (name) => decode(USERS, await one(USER.byName, name)),
      findByTokenHash: async (hash) => decode(USERS, await one(USER.byTokenHash, hash)),
      update: (u) => run(USER.update, ...USERS.updateParams(u, "postgres"), u.id),
      page: async (search, p) => {
        const rows =
          search === null
            ? await all(USER.page, p.after ?? "", p.limit)
            : await all(USER.search, p.after ?? "", search.toLowerCase(), p.limit);
        return rows.map((r) => USERS.decode(r));
      },
    },

    apps: {
      insert: (a) => run(APP.insert, ...APPS.insertParams(a, "postgres")),
      get: async (id) => decode(APPS, await one(APP.byId, id)),
      getByName: async (name) => decode(APPS, await one(APP.byName, name)),
      findByKeyHash: async (hash) => decode(APPS, await one(APP.byKeyHash, hash)),
      list: async () => (await all(APP.list)).map((r) => APPS.decode(r)),
      page: async (p) => (await all(APP.page, p.after ?? "", p.limit)).map((r) => APPS.decode(r)),
    },

    nodes: {
      insert: (r) =>
        run(
          NODE.insert,
          ...NODES.insertParams(
            { ...r, devices: null, registeredAt: null, heartbeatAt: null, agentUrl: null },
            "postgres",
          ),
        ),
      findByKeyHash: async (hash) => decode(NODES, await one(NODE.byKeyHash, hash)),
      getByName: async (name) => decode(NODES, await one(NODE.byName, name)),
      list: async () => (await all(NODE.list)).map((r) => NODES.decode(r)),
      setState: async (id, s) => (await count(NODE.setState, ...NODES.updateParams(s, "postgres"), id)) > 0,
      heartbeat: async (id, at) => (await count(NODE.heartbeat, at, id)) > 0,
    },

    edges: {
      insert: (r) => run(EDGE.insert, ...EDGES.insertParams(r, "postgres")),
      findByKeyHash: async (hash) => decode(EDGES, await one(EDGE.byKeyHash, hash)),
      getByName: async (name) => decode(EDGES, await one(EDGE.byName, name)),
    },

    ledgers: {
      get: async (identity) => {
        if (readOnly) return decode(LEDGERS, await one(LEDGER.read, identity));
        if (grouped?.ledgers.has(identity)) return grouped.ledgers.get(identity) ?? null;
        if (ledgers.has(identity)) return ledgers.get(identity) ?? null;
        // The row may not exist yet, and FOR UPDATE cannot lock a missing row: an advisory lock on
        // the identity serializes first admissions too (without writing a placeholder row). The
        // SELECT is a separate statement so its snapshot is taken after the lock is granted; both
        // are sent at once (pipelined), so this costs one round trip. A transaction that already
        // holds the identity's lock (it read one of its leases) sends the SELECT alone.
        const [, rows] = await Promise.all([
          locked.has(identity) ? null : q(LEDGER.lock, [ledgerLockSpace, identity]),
          q(LEDGER.forUpdate, [identity]),
        ]);
        const ledger = decode(LEDGERS, rows[0]);
        locked.add(identity);
        ledgers.set(identity, ledger);
        grouped?.ledgers.set(identity, ledger);
        return ledger;
      },
      put: async (identity, s) => {
        const write = q(LEDGER.upsert, LEDGERS.insertParams(s, "postgres", identity));
        // Only a ledger whose locks this transaction (or its group) holds is remembered (every writer reads it first anyway).
        if (ledgers.has(identity)) ledgers.set(identity, s);
        if (grouped?.ledgers.has(identity)) grouped.ledgers.set(identity, s);
        if (defer === undefined) return void (await write);
        defer(write);
      },
    },

    leases: {
      insert: async (l) => {
        const params = LEASES.insertParams(l, "postgres");
        // A queued lease's seq is its place in the queue (arrival order across replicas): drawn by
        // its own insert, at the moment it arrives. Any other lease's seq only orders lists, so in
        // the leader's group it comes from values drawn ahead and the insert is not waited for.
        if (grouped !== undefined && l.status !== "queued") {
          const seq = grouped.seqs.shift();
          if (seq !== undefined) {
            grouped.defer(q(LEASE.insertWithSeq, [seq, ...params]));
            return { ...l, seq };
          }
          const n = Math.min(SEQS_AHEAD, grouped.drawAhead());
          const [rows, ahead] = await Promise.all([q(LEASE.insert, params), n > 0 ? q(LEASE.nextSeqs, [n]) : []]);
          grouped.seqs.push(...ahead.map((r) => Number(r["s"])));
          return { ...l, seq: Number(rows[0]?.["seq"]) };
        }
        if (grouped !== undefined) grouped.seqs.length = 0;
        const row = await one(LEASE.insert, ...params);
        return { ...l, seq: Number(row?.["seq"]) };
      },
      update: async (l) => {
        const write = q(LEASE.update, [...LEASES.updateParams(l, "postgres"), l.id]);
        if (defer !== undefined) defer(write);
        else await write;
      },
      get: async (id) => {
        if (readOnly) return decode(LEASES, await one(LEASE.read, id));
        // The lock order above: the identity's advisory lock (its identity read from the row without
        // a lock: it never changes), then the row, FOR UPDATE — a separate statement, so its snapshot
        // is taken once the advisory lock is held and it reads the status as it is then. Sent at once:
        // one round trip. In a group already holding the identity's lock, the first one is free.
        // Every change of a lease (a release, an end, a grant) reads its identity's ledger next: it
        // is read and locked in the same round trip, after the advisory lock like any ledger read.
        const [, rows, ledgerRows] = await Promise.all([
          q(LEASE.lockIdentity, [ledgerLockSpace, id]),
          q(LEASE.forUpdate, [id]),
          q(LEASE.ledgerForUpdate, [id]),
        ]);
        const lease = decode(LEASES, rows[0]);
        if (lease === null) return null;
        const identity = `${lease.identityKind}:${lease.identityId}`;
        locked.add(identity);
        // A ledger this transaction or its group already holds is as they see it (their writes may be in flight).
        if (!ledgers.has(identity) && !grouped?.ledgers.has(identity)) {
          const ledger = decode(LEDGERS, ledgerRows[0]);
          ledgers.set(identity, ledger);
          grouped?.ledgers.set(identity, ledger);
        }
        return lease;
      },
      list: async (f) => {
        const { text, params } = listLeases(f);
        return (await all(text, ...params)).map((r) => LEASES.decode(r));
      },
      live: async () => (await all(LEASE.live)).map((r) => LEASES.decode(r)),
      earliestEnd: async (identity, queueTimeoutMs) => {
        const d = (await one(LEASE.earliestEnd, queueTimeoutMs, identity.kind, identity.id))?.["d"];
        return d === null || d === undefined ? null : Number(d);
      },
    },

    idempotencyKeys: {
      get: async (scopeKey) => decode(IDEMPOTENCY_KEYS, await one(IDEMPOTENCY_KEY.byKey, scopeKey)),
      put: (k) => run(IDEMPOTENCY_KEY.upsert, ...IDEMPOTENCY_KEYS.insertParams(k, "postgres")),
      deleteRecordedBefore: (before, limit) => count(IDEMPOTENCY_KEY.deleteBefore, before, limit),
    },

    signingKeys: {
      lock: () => run(SIGNING_KEY.lock, ledgerLockSpace),
      list: async () => (await all(SIGNING_KEY.list)).map((r) => SIGNING_KEYS.decode(r)),
      insert: (k) => run(SIGNING_KEY.insert, ...SIGNING_KEYS.insertParams(k, "postgres")),
    },

    sessions: {
      insert: (x) => run(SESSION.insert, ...SESSIONS.insertParams(x, "postgres")),
      get: async (idHash) => decode(SESSIONS, await one(SESSION.byIdHash, idHash)),
      revoke: async (idHash, at) => (await count(SESSION.revoke, at, idHash)) > 0,
      revokeForUser: (userId, at) => count(SESSION.revokeForUser, at, userId),
    },
  };
}
