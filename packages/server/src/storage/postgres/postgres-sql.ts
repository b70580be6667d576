import { leaseListStatements } from "../lease-list.js";
import type { TableNames } from "../table.js";
import { USAGE_RECORDS } from "../billing-tables.js";
import { APPS, EDGES, IDEMPOTENCY_KEYS, LEASES, LEDGERS, NODES, SESSIONS, SIGNING_KEYS, USERS } from "../tables.js";

// Statements, built once from the tables (tables.ts), with numbered parameters; prepared on each
// connection the first time it runs them (postgres.js caches them by text).
export const param = (n: number): string => `$${n}`;
export const insert = (t: TableNames): string =>
  `INSERT INTO ${t.name} (${t.insertNames.join(", ")}) VALUES (${t.insertNames.map((_, i) => param(i + 1)).join(", ")})`;
export const select = (t: TableNames, rest: string): string => `SELECT ${t.selectList} FROM ${t.name} ${rest}`;
/** SET every mutable column, WHERE `key` is the parameter after them. */
export const update = (t: TableNames, key: string): string =>
  `UPDATE ${t.name} SET ${t.mutableNames.map((c, i) => `${c} = ${param(i + 1)}`).join(", ")} WHERE ${key} = ${param(t.mutableNames.length + 1)}`;

export const USER = {
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
export const APP = {
  insert: insert(APPS),
  byId: select(APPS, "WHERE id = $1"),
  byName: select(APPS, "WHERE name = $1"),
  byKeyHash: select(APPS, "WHERE key_hash = $1"),
  update: update(APPS, "id"),
  list: select(APPS, "ORDER BY created_at, id"),
  page: select(APPS, "WHERE name > $1 ORDER BY name LIMIT $2"),
};
export const NODE = {
  insert: insert(NODES),
  byKeyHash: select(NODES, "WHERE key_hash = $1"),
  byName: select(NODES, "WHERE name = $1"),
  list: select(NODES, "ORDER BY created_at, id"),
  setState: update(NODES, "id"),
  heartbeat: "UPDATE nodes SET heartbeat_at = $1 WHERE id = $2 AND registered_at IS NOT NULL",
};
export const EDGE = {
  insert: insert(EDGES),
  byKeyHash: select(EDGES, "WHERE key_hash = $1"),
  byName: select(EDGES, "WHERE name = $1"),
};
export const LEDGER = {
  lock: "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))",
  tryLock: "SELECT pg_try_advisory_xact_lock($1::int4, hashtext($2)) AS ok",
  forUpdate: select(LEDGERS, "WHERE identity = $1 FOR UPDATE"),
  forUpdateNowait: select(LEDGERS, "WHERE identity = $1 FOR UPDATE NOWAIT"),
  /**
   * A follower group's admission (see GroupedTx.nowait): the ledger locked without waiting, and the
   * `seq` of the queued lease it stores next drawn in the same statement, so that lease's insert
   * need not wait for `RETURNING seq`. One row whether or not the ledger exists (`found`).
   */
  forUpdateNowaitDrawingSeq:
    `WITH l AS (${select(LEDGERS, "WHERE identity = $1 FOR UPDATE NOWAIT").replace("SELECT ", "SELECT true AS found, ")}) ` +
    "SELECT nextval(pg_get_serial_sequence('leases', 'seq'))::float8 AS next_seq, l.* FROM (SELECT 1) AS one LEFT JOIN l ON true",
  /**
   * The identity's advisory lock, then its ledger locked, in **one** statement (`$1` the lock space,
   * `$2` the identity): the lock is taken first (a materialized query that the row's filter and the
   * answer both need), so the row lock still comes after it. The row is read with the statement's
   * snapshot, taken before the lock was granted, but `FOR UPDATE` at READ COMMITTED locks and
   * returns the row's newest committed version (whoever changed it held the lock, so committed
   * before this got it). Only a row inserted since that snapshot is missed — an identity's first
   * ledger, written by the transaction this one waited for: so `found` missing means "read it
   * again" (`forUpdate`, a statement of its own, under the lock now held).
   */
  lockedForUpdate:
    "WITH k AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::int4, hashtext($2)) AS x), " +
    `l AS (${select(LEDGERS, "WHERE identity = $2 AND EXISTS (SELECT 1 FROM k) FOR UPDATE").replace("SELECT ", "SELECT true AS found, ")}) ` +
    "SELECT (SELECT count(*) FROM k)::int AS locked, l.* FROM (SELECT 1) AS one LEFT JOIN l ON true",
  /**
   * A follower group's admission in one statement (`$1` the lock space, `$2` the identity): the
   * identity's lock tried (`ok`), then — only if it was got — the ledger locked without waiting,
   * and the queued lease's `seq` drawn (see `forUpdateNowaitDrawingSeq`). As `lockedForUpdate`,
   * `found` missing means "read it again" (a ledger inserted since the statement's snapshot).
   */
  tryLockedNowaitDrawingSeq:
    "WITH k AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1::int4, hashtext($2)) AS ok), " +
    `l AS (${select(LEDGERS, "WHERE identity = $2 AND (SELECT ok FROM k) FOR UPDATE NOWAIT").replace("SELECT ", "SELECT true AS found, ")}) ` +
    "SELECT (SELECT ok FROM k) AS ok, nextval(pg_get_serial_sequence('leases', 'seq'))::float8 AS next_seq, l.* " +
    "FROM (SELECT 1) AS one LEFT JOIN l ON true",
  read: select(LEDGERS, "WHERE identity = $1"),
  upsert: `${insert(LEDGERS)} ON CONFLICT (identity) DO UPDATE SET ${LEDGERS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
};
/** A ledger's columns as `g_<column>`, beside a lease's in one answer. */
const LEDGER_AS_G = LEDGERS.selectList
  .split(", ")
  .map((c) => `${c} AS g_${c}`)
  .join(", ");

export const LEASE = {
  insert: `${insert(LEASES)} RETURNING seq`,
  /** With a seq drawn from the sequence before (see GroupedTx.seqs): nothing to wait for. */
  insertWithSeq: `INSERT INTO leases (seq, ${LEASES.insertNames.join(", ")}) OVERRIDING SYSTEM VALUE VALUES ($1, ${LEASES.insertNames.map((_, i) => param(i + 2)).join(", ")})`,
  /** The next `$1` values of the leases' sequence (nextval is not transactional: they are this caller's whatever happens). */
  nextSeqs: "SELECT nextval(pg_get_serial_sequence('leases', 'seq'))::float8 AS s FROM generate_series(1, $1::int)",
  update: update(LEASES, "id"),
  /**
   * A lease, its identity's lock and its ledger in **one** statement (three before: `$1` the lock
   * space, `$2` the lease): the identity's advisory lock first (a materialized query both row reads need),
   * then the lease and its ledger locked, the ledger's columns as `g_…` (`g_found` when it exists).
   * As LEDGER.lockedForUpdate: `FOR UPDATE` returns the rows' newest committed versions although
   * the snapshot predates the lock; a ledger inserted since is missed (`g_found` missing: read it again).
   */
  lockedWithLedger:
    "WITH k AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::int4, hashtext(identity_kind || ':' || identity_id)) AS x, " +
    "identity_kind || ':' || identity_id AS identity FROM leases WHERE id = $2), " +
    `l AS (${select(LEASES, "WHERE id = $2 AND EXISTS (SELECT 1 FROM k) FOR UPDATE")}), ` +
    `g AS (SELECT true AS g_found, ${LEDGER_AS_G} FROM ledgers WHERE identity = (SELECT identity FROM k) FOR UPDATE) ` +
    "SELECT l.*, g.* FROM l LEFT JOIN g ON true",
  /**
   * `lockedWithLedger` in a follower's group: the identity's lock tried (`ok`: false, it is taken;
   * null, no such lease), the lease and its ledger locked without waiting, and only if it was got.
   */
  tryLockedWithLedger:
    "WITH k AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1::int4, hashtext(identity_kind || ':' || identity_id)) AS ok, " +
    "identity_kind || ':' || identity_id AS identity FROM leases WHERE id = $2), " +
    `l AS (${select(LEASES, "WHERE id = $2 AND (SELECT ok FROM k) FOR UPDATE NOWAIT")}), ` +
    `g AS (SELECT true AS g_found, ${LEDGER_AS_G} FROM ledgers WHERE identity = (SELECT identity FROM k) AND (SELECT ok FROM k) FOR UPDATE NOWAIT) ` +
    "SELECT (SELECT ok FROM k) AS ok, l.*, g.* FROM (SELECT 1) AS one LEFT JOIN l ON true LEFT JOIN g ON true",
  read: select(LEASES, "WHERE id = $1"),
  live: select(LEASES, "WHERE status IN ('queued', 'active') ORDER BY seq"),
  earliestEnd:
    "SELECT MIN(CASE WHEN status = 'active' THEN deadline ELSE queued_at + $1::bigint + duration_ms END) AS d " +
    "FROM leases WHERE status IN ('queued', 'active') AND identity_kind = $2 AND identity_id = $3",
};
/** A lease's usage record (billing-sql.ts's statement, numbered): sent without waiting where the transaction defers writes. */
export const USAGE = { insert: `${insert(USAGE_RECORDS)} ON CONFLICT (id) DO NOTHING` };
export const listLeases = leaseListStatements(`SELECT ${LEASES.selectList} FROM leases`, param);
export const IDEMPOTENCY_KEY = {
  byKey: select(IDEMPOTENCY_KEYS, "WHERE scope_key = $1"),
  upsert: `${insert(IDEMPOTENCY_KEYS)} ON CONFLICT (scope_key) DO UPDATE SET ${IDEMPOTENCY_KEYS.mutableNames.map((c) => `${c} = excluded.${c}`).join(", ")}`,
  // The outer created_at test again: a key re-used (re-recorded) meanwhile is not deleted.
  deleteBefore:
    "DELETE FROM idempotency_keys WHERE created_at <= $1 AND scope_key IN " +
    "(SELECT scope_key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)",
};
export const SIGNING_KEY = {
  // In the ledger locks' key space, under a name no identity ("kind:id") can have.
  lock: "SELECT pg_advisory_xact_lock($1::int4, hashtext('signing_keys'))",
  insert: insert(SIGNING_KEYS),
  list: select(SIGNING_KEYS, "ORDER BY created_at"),
};
export const SESSION = {
  insert: insert(SESSIONS),
  byIdHash: select(SESSIONS, "WHERE id_hash = $1"),
  // The first revocation time stays; true whenever the session exists.
  revoke: "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) WHERE id_hash = $2",
  revokeForUser: "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
};
