import type Database from "better-sqlite3";
import type { LedgerState } from "@gpupool/core";
import { billingTx } from "../billing-sql.js";
import { dashboardTx } from "../dashboard-sql.js";
import type { WalletCache } from "../wallet-cache.js";
import { leaseListStatements } from "../lease-list.js";
import { retentionTx } from "../retention-sql.js";
import type { LeaseRecord, Tx, UserRecord } from "../store.js";
import type { Row, TableNames } from "../table.js";
import { APPS, EDGES, IDEMPOTENCY_KEYS, LEASES, LEDGERS, NODES, SESSIONS, SIGNING_KEYS, USERS } from "../tables.js";

export type Statement = Database.Statement<unknown[], Row>;

/** What a transaction's view needs of the SQLite store (see SqliteStore). */
export interface SqliteConnection {
  /** The prepared statement for `sql`, prepared once and cached. */
  st(sql: string): Statement;
  /** Notes that the running transaction wrote something (a throw then rolls back its group). */
  wrote(): void;
  /** Ledger rows as this connection last wrote or read them (exact: it is the only writer). */
  readonly ledgers: Map<string, LedgerState>;
  /** Ledger rows changed in the open commit group and not yet written (see SqliteStore.flushLedgers). */
  readonly unwrittenLedgers: Map<string, LedgerState>;
  /** Users by id, cached the same way as ledgers. */
  readonly users: Map<string, UserRecord>;
  /** Users' grants and billing settings, cached the same way, and the group's wallet writes not yet written. */
  readonly wallets: WalletCache;
  /** Writes the group's deferred wallet writes now (before a read of the wallet tables the cache cannot answer). */
  flushWallets(): void;
  /** Caches `value` under `key` (bounded) and returns it. */
  remember<T>(cache: Map<string, T>, key: string, value: T): T;
}

// Statements, built once from the tables (tables.ts): the text is also the statement cache's key.
const insert = (t: TableNames): string =>
  `INSERT INTO ${t.name} (${t.insertNames.join(", ")}) VALUES (${t.insertNames.map(() => "?").join(", ")})`;
const select = (t: TableNames, rest: string): string => `SELECT ${t.selectList} FROM ${t.name} ${rest}`;
const update = (t: TableNames, where: string): string =>
  `UPDATE ${t.name} SET ${t.mutableNames.map((c) => `${c} = ?`).join(", ")} WHERE ${where}`;

const USER = {
  insert: insert(USERS),
  byId: select(USERS, "WHERE id = ?"),
  byName: select(USERS, "WHERE name = ?"),
  byTokenHash: select(USERS, "WHERE token_hash = ?"),
  update: update(USERS, "id = ?"),
  // By name, one range of its unique index (read until the page is full); the search is a filter.
  page: select(USERS, "WHERE name > ? ORDER BY name LIMIT ?"),
  search: select(
    USERS,
    "WHERE name > ? AND (instr(lower(name), ?) > 0 OR instr(lower(id), ?) > 0) ORDER BY name LIMIT ?",
  ),
};
const APP = {
  insert: insert(APPS),
  byId: select(APPS, "WHERE id = ?"),
  byName: select(APPS, "WHERE name = ?"),
  byKeyHash: select(APPS, "WHERE key_hash = ?"),
  update: update(APPS, "id = ?"),
  list: select(APPS, "ORDER BY created_at, id"),
  page: select(APPS, "WHERE name > ? ORDER BY name LIMIT ?"),
};
const NODE = {
  insert: insert(NODES),
  byKeyHash: select(NODES, "WHERE key_hash = ?"),
  byName: select(NODES, "WHERE name = ?"),
  list: select(NODES, "ORDER BY created_at, id"),
  setState: update(NODES, "id = ?"),
  heartbeat: "UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND registered_at IS NOT NULL",
};
const EDGE = {
  insert: insert(EDGES),
  byKeyHash: select(EDGES, "WHERE key_hash = ?"),
  byName: select(EDGES, "WHERE name = ?"),
};
const LEDGER = {
  byIdentity: select(LEDGERS, "WHERE identity = ?"),
  update: update(LEDGERS, "identity = ?"),
  upsert: `${insert(LEDGERS)} ON CONFLICT(identity) DO UPDATE SET ${LEDGERS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
};
const LEASE = {
  insert: insert(LEASES),
  // By seq, the table's own key, with no lookup in the id index first (the id is still checked).
  update: update(LEASES, "seq = ? AND id = ?"),
  byId: select(LEASES, "WHERE id = ?"),
  live: select(LEASES, "WHERE status IN ('queued', 'active') ORDER BY seq"),
  // The queued and active ranges of the status index (the pool's live leases) beat scanning the
  // table for the identity's leases.
  earliestEnd:
    "SELECT MIN(CASE WHEN status = 'active' THEN deadline ELSE queued_at + ? + duration_ms END) AS d " +
    "FROM leases INDEXED BY leases_status WHERE status IN ('queued', 'active') AND identity_kind = ? AND identity_id = ?",
};
const IDEMPOTENCY_KEY = {
  byKey: select(IDEMPOTENCY_KEYS, "WHERE scope_key = ?"),
  upsert: `${insert(IDEMPOTENCY_KEYS)} ON CONFLICT (scope_key) DO UPDATE SET ${IDEMPOTENCY_KEYS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
  deleteBefore:
    "DELETE FROM idempotency_keys WHERE created_at <= ? AND scope_key IN " +
    "(SELECT scope_key FROM idempotency_keys WHERE created_at <= ? LIMIT ?)",
};
const SIGNING_KEY = { insert: insert(SIGNING_KEYS), list: select(SIGNING_KEYS, "ORDER BY created_at") };
const SESSION = {
  insert: insert(SESSIONS),
  byIdHash: select(SESSIONS, "WHERE id_hash = ?"),
  exists: "SELECT 1 FROM sessions WHERE id_hash = ?",
  revoke: "UPDATE sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL",
  revokeForUser: "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
};

/** Writes an identity's ledger row: an UPDATE when the row is known to exist, else an upsert. */
export function writeLedger(
  st: (sql: string) => Statement,
  identity: string,
  state: LedgerState,
  exists: boolean,
): void {
  if (exists) st(LEDGER.update).run(...LEDGERS.updateParams(state, "sqlite"), identity);
  else st(LEDGER.upsert).run(...LEDGERS.insertParams(state, "sqlite", identity));
}

const listLeases = leaseListStatements(`SELECT ${LEASES.selectList} FROM leases`, () => "?");

/**
 * A transaction's view of the SQLite store. better-sqlite3 is synchronous: each method runs its
 * statement at once, on the store's one connection, inside the commit group the store opened.
 * Ledgers and users are cached (see SqliteStore); an identity's ledger is written once per group.
 */
export function sqliteTx(c: SqliteConnection): Tx {
  const one = (sql: string, ...params: unknown[]): Row | undefined => c.st(sql).get(...params);
  const all = (sql: string, ...params: unknown[]): Row[] => c.st(sql).all(...params);
  /** Runs a write; how many rows it changed. */
  const run = (sql: string, ...params: unknown[]): number => {
    c.wrote();
    return c.st(sql).run(...params).changes;
  };
  const decode = <R>(table: { decode(row: Row): R }, row: Row | undefined): R | null =>
    row === undefined ? null : table.decode(row);
  return {
    ...dashboardTx({
      dialect: "sqlite",
      all: async (text, params) => all(text, ...params),
      run: async (text, params) => run(text, ...params),
    }),
    ...retentionTx({
      dialect: "sqlite",
      all: async (text, params) => all(text, ...params),
      run: async (text, params) => run(text, ...params),
      // A deleted ledger must not stay cached as existing, or its next write would UPDATE no row.
      forgetLedger: (identity) => c.ledgers.delete(identity),
    }),
    ...billingTx({
      dialect: "sqlite",
      all: async (text, params) => all(text, ...params),
      run: async (text, params) => run(text, ...params),
      // One connection writes: nothing to wait for.
      lockUser: async () => {},
      cache: c.wallets,
      deferred: { defer: () => c.wrote(), flush: () => c.flushWallets() },
    }),
    users: {
      insert: async (u) => {
        run(USER.insert, ...USERS.insertParams(u, "sqlite"));
        c.remember(c.users, u.id, u);
      },
      get: async (id) => {
        const cached = c.users.get(id);
        if (cached) return cached;
        const user = decode(USERS, one(USER.byId, id));
        return user && c.remember(c.users, id, user);
      },
      getByName: async (name) => decode(USERS, one(USER.byName, name)),
      findByTokenHash: async (hash) => decode(USERS, one(USER.byTokenHash, hash)),
      update: async (u) => {
        run(USER.update, ...USERS.updateParams(u, "sqlite"), u.id);
        c.users.delete(u.id);
      },
      page: async (search, p) => {
        const needle = search?.toLowerCase() ?? null;
        const rows =
          needle === null
            ? all(USER.page, p.after ?? "", p.limit)
            : all(USER.search, p.after ?? "", needle, needle, p.limit);
        return rows.map((r) => USERS.decode(r));
      },
    },

    apps: {
      insert: async (a) => void run(APP.insert, ...APPS.insertParams(a, "sqlite")),
      get: async (id) => decode(APPS, one(APP.byId, id)),
      getByName: async (name) => decode(APPS, one(APP.byName, name)),
      findByKeyHash: async (hash) => decode(APPS, one(APP.byKeyHash, hash)),
      update: async (a) => void run(APP.update, ...APPS.updateParams(a, "sqlite"), a.id),
      list: async () => all(APP.list).map((r) => APPS.decode(r)),
      page: async (p) => all(APP.page, p.after ?? "", p.limit).map((r) => APPS.decode(r)),
    },

    nodes: {
      insert: async (r) =>
        void run(
          NODE.insert,
          ...NODES.insertParams(
            { ...r, devices: null, registeredAt: null, heartbeatAt: null, agentUrl: null },
            "sqlite",
          ),
        ),
      findByKeyHash: async (hash) => decode(NODES, one(NODE.byKeyHash, hash)),
      getByName: async (name) => decode(NODES, one(NODE.byName, name)),
      list: async () => all(NODE.list).map((r) => NODES.decode(r)),
      setState: async (id, s) => run(NODE.setState, ...NODES.updateParams(s, "sqlite"), id) > 0,
      heartbeat: async (id, at) => run(NODE.heartbeat, at, id) > 0,
    },

    edges: {
      insert: async (r) => void run(EDGE.insert, ...EDGES.insertParams(r, "sqlite")),
      findByKeyHash: async (hash) => decode(EDGES, one(EDGE.byKeyHash, hash)),
      getByName: async (name) => decode(EDGES, one(EDGE.byName, name)),
    },

    ledgers: {
      get: async (identity) => {
        const cached = c.unwrittenLedgers.get(identity) ?? c.ledgers.get(identity);
        if (cached) return cached;
        const state = decode(LEDGERS, one(LEDGER.byIdentity, identity));
        return state && c.remember(c.ledgers, identity, state);
      },
      put: async (identity, s) => {
        c.wrote();
        c.unwrittenLedgers.set(identity, s);
      },
    },

    leases: {
      insert: async (l) => {
        c.wrote();
        const info = c.st(LEASE.insert).run(...LEASES.insertParams(l, "sqlite"));
        return { ...l, seq: Number(info.lastInsertRowid) };
      },
      update: async (l: LeaseRecord) => void run(LEASE.update, ...LEASES.updateParams(l, "sqlite"), l.seq, l.id),
      get: async (id) => decode(LEASES, one(LEASE.byId, id)),
      list: async (f) => {
        const { text, params } = listLeases(f);
        return all(text, ...params).map((r) => LEASES.decode(r));
      },
      live: async () => all(LEASE.live).map((r) => LEASES.decode(r)),
      earliestEnd: async (identity, queueTimeoutMs) => {
        const d = one(LEASE.earliestEnd, queueTimeoutMs, identity.kind, identity.id)?.["d"];
        return d === null || d === undefined ? null : Number(d);
      },
    },

    idempotencyKeys: {
      get: async (scopeKey) => decode(IDEMPOTENCY_KEYS, one(IDEMPOTENCY_KEY.byKey, scopeKey)),
      put: async (k) => void run(IDEMPOTENCY_KEY.upsert, ...IDEMPOTENCY_KEYS.insertParams(k, "sqlite")),
      deleteRecordedBefore: async (before, limit) => run(IDEMPOTENCY_KEY.deleteBefore, before, before, limit),
    },

    signingKeys: {
      // One process per file, and its transactions run one at a time: nothing to wait for.
      lock: async () => undefined,
      list: async () => all(SIGNING_KEY.list).map((r) => SIGNING_KEYS.decode(r)),
      insert: async (k) => void run(SIGNING_KEY.insert, ...SIGNING_KEYS.insertParams(k, "sqlite")),
    },

    sessions: {
      insert: async (x) => void run(SESSION.insert, ...SESSIONS.insertParams(x, "sqlite")),
      get: async (idHash) => decode(SESSIONS, one(SESSION.byIdHash, idHash)),
      revoke: async (idHash, at) => {
        if (!one(SESSION.exists, idHash)) return false;
        run(SESSION.revoke, at, idHash);
        return true;
      },
      revokeForUser: async (userId, at) => run(SESSION.revokeForUser, at, userId),
    },
  };
}
