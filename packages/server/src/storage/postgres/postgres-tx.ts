import type { LedgerState } from "@gpupool/core";
import type postgres from "postgres";
import { billingTx, dollarParams } from "../billing-sql.js";
import { LockBusyError } from "./errors.js";
import { checkPayload } from "../local-coordination.js";
import { dashboardTx } from "../dashboard-sql.js";
import { retentionTx } from "../retention-sql.js";
import type { Tx } from "../store.js";
import type { Row, SqlValue } from "../table.js";
import { APPS, EDGES, IDEMPOTENCY_KEYS, LEASES, LEDGERS, NODES, SESSIONS, SIGNING_KEYS, USERS } from "../tables.js";
import { USAGE_RECORDS } from "../billing-tables.js";
import { WriteBatch } from "./write-batch.js";
import { checkFence } from "./fence.js";
import { lockedLeaseWithLedger, lockedLedger } from "./locked-reads.js";
import { READ_AHEAD } from "./read-ahead.js";
import type { ReadAhead } from "./read-ahead.js";

/** A connection inside a transaction: `sql.begin`'s, or the leader's session within its open group. */
type Sql = postgres.ISql;

import {
  APP,
  EDGE,
  IDEMPOTENCY_KEY,
  LEASE,
  LEDGER,
  NODE,
  SESSION,
  SIGNING_KEY,
  USAGE,
  USER,
  listLeases,
} from "./postgres-sql.js";

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
  /** On the leader's session: the locks and rows read ahead for the transactions waiting to join. */
  readonly ahead?: ReadAhead;
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
  /**
   * A follower's group (FollowerGroups): its locks (an identity's advisory lock, a ledger's or a
   * lease's row) are only tried — `pg_try_advisory_xact_lock`, `FOR UPDATE NOWAIT` — and one that
   * is taken fails the member with LockBusyError (or 55P03): a group never waits for a lock while
   * it holds others, so it cannot be part of a deadlock with another group or the leader's.
   */
  readonly nowait: boolean;
}

/**
 * A transaction's view of the store, and `flush`, which sends the writes it holds (see WriteBatch):
 * called when the transaction's function has returned, before its COMMIT (or its group's next
 * member), so its last writes go out with what follows. A function that throws is rolled back: what
 * it held is never sent.
 */
export type PostgresTx = Tx & {
  readonly flush: () => void;
  /** The statement that reads ahead for a leader group (ReadAhead), in this transaction's lock space. */
  readonly readAhead: (ledgers: string[], leases: string[]) => postgres.PendingQuery<Row[]>;
};

/** Runs `fn` on `tx`, then sends the writes it still holds (a function that throws sends none). */
export async function runTx<T>(tx: PostgresTx, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const value = await fn(tx);
  tx.flush();
  return value;
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
): PostgresTx {
  /** Ledger and lease writes, and notifications: their rows are locked (or they take no lock), nothing reads their answer. */
  const defer = grouped?.defer ?? deferPlain;
  const nowait = grouped?.nowait === true;
  const unsafe = (text: string, params: SqlValue[]): postgres.PendingQuery<Row[]> =>
    sql.unsafe<Row[]>(text, params, { prepare: true });
  /** The writes not waited for, sent as one statement before the next statement that is (see WriteBatch). */
  const batch =
    defer === undefined
      ? null
      : new WriteBatch(
          (text, params) => defer(unsafe(text, params)),
          () => checkFence(sql),
        );
  const q = (text: string, params: SqlValue[] = []): postgres.PendingQuery<Row[]> => {
    batch?.flush();
    return unsafe(text, params);
  };
  const one = async (text: string, ...params: SqlValue[]): Promise<Row | undefined> => (await q(text, params))[0];
  const all = async (text: string, ...params: SqlValue[]): Promise<Row[]> => [...(await q(text, params))];
  const run = async (text: string, ...params: SqlValue[]): Promise<void> => void (await q(text, params));
  const count = async (text: string, ...params: SqlValue[]): Promise<number> => (await q(text, params)).count;
  /** A lock attempt's answer (no row: the lease is missing, nothing to lock): one that found the lock taken fails the member. */
  const tryLock = async (attempt: postgres.PendingQuery<Row[]>): Promise<void> => {
    if ((await attempt)[0]?.["ok"] === false) throw new LockBusyError();
  };
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
  /**
   * A follower group's member (nowait) is an admission or a release; a ledger it reads is an
   * admission's, which next stores a lease `queued`: that lease's `seq` (its place in the queue) is
   * drawn in the ledger's statement, so its insert is not waited for (a refused admission wastes the
   * value: the sequence has gaps anyway). Null once used.
   */
  let drawnSeq: number | null = null;
  const billing = billingTx({
    dialect: "postgres",
    all: async (text, params) => [...(await q(dollarParams(text), [...params]))],
    run: async (text, params) => (await q(dollarParams(text), [...params])).count,
    // The user's ledger lock (see the lock order above): billing rows come after it.
    lockUser: (userId) =>
      readOnly
        ? Promise.resolve()
        : nowait
          ? tryLock(q(LEDGER.tryLock, [ledgerLockSpace, `user:${userId}`]))
          : run(LEDGER.lock, ledgerLockSpace, `user:${userId}`),
  });
  return {
    flush: () => batch?.flush(),
    readAhead: (ledgerKeys, leaseIds) =>
      sql.unsafe<Row[]>(READ_AHEAD, [ledgerLockSpace, ledgerKeys.join("\n"), leaseIds.join("\n")], { prepare: true }),
    ...(schema === undefined
      ? {}
      : {
          // pg_notify is transactional: delivered at COMMIT, dropped by a rollback.
          publish: (channel: string, payload: string) => {
            checkPayload(channel, payload);
            if (batch === null)
              return q("SELECT pg_notify($1, $2)", [`${schema}.${channel}`, payload]).then(() => undefined);
            batch.notify(`${schema}.${channel}`, payload);
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
    wallets: billing.wallets,
    usage: {
      ...billing.usage,
      // A new row keyed by its lease, which this transaction holds locked: nothing waits, nothing reads the answer.
      insert: async (r) => {
        if (batch === null) return billing.usage.insert(r);
        batch.add("usage", USAGE.insert, USAGE_RECORDS.insertParams(r, "postgres"));
      },
    },
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
      update: (a) => run(APP.update, ...APPS.updateParams(a, "postgres"), a.id),
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
        const ahead = grouped?.ahead?.pending(`g:${identity}`);
        if (ahead !== undefined) await ahead;
        if (grouped?.ledgers.has(identity)) return grouped.ledgers.get(identity) ?? null;
        if (ledgers.has(identity)) return ledgers.get(identity) ?? null;
        // The row may not exist yet, and FOR UPDATE cannot lock a missing row: an advisory lock on
        // the identity serializes first admissions too (without writing a placeholder row). Both
        // are one statement (lockedLedger). A follower's group tries the lock and locks the row
        // without waiting, and draws the queued lease's seq, in one statement too.
        let row: Row | undefined;
        if (!nowait) row = await lockedLedger(q, ledgerLockSpace, identity, locked.has(identity));
        else {
          const tried = !locked.has(identity);
          row = tried
            ? await one(LEDGER.tryLockedNowaitDrawingSeq, ledgerLockSpace, identity)
            : await one(LEDGER.forUpdateNowaitDrawingSeq, identity);
          if (row?.["ok"] === false) throw new LockBusyError();
          drawnSeq = row?.["next_seq"] === undefined ? null : Number(row["next_seq"]);
          // Missing: maybe inserted since the statement's snapshot, taken before the lock: read again.
          if (row?.["found"] !== true) row = tried ? await one(LEDGER.forUpdateNowait, identity) : undefined;
        }
        const ledger = decode(LEDGERS, row);
        locked.add(identity);
        ledgers.set(identity, ledger);
        grouped?.ledgers.set(identity, ledger);
        return ledger;
      },
      put: async (identity, s) => {
        const params = LEDGERS.insertParams(s, "postgres", identity);
        // Only a ledger whose locks this transaction (or its group) holds is remembered (every writer reads it first anyway).
        if (ledgers.has(identity)) ledgers.set(identity, s);
        if (grouped?.ledgers.has(identity)) grouped.ledgers.set(identity, s);
        grouped?.ahead?.wrote(`g:${identity}`);
        if (batch === null) return void (await q(LEDGER.upsert, params));
        batch.add("ledger", LEDGER.upsert, params);
      },
    },

    leases: {
      insert: async (l) => {
        const params = LEASES.insertParams(l, "postgres");
        // A queued lease's seq is its place in the queue (arrival order across replicas): drawn by
        // its own insert, at the moment it arrives. Any other lease's seq only orders lists, so in
        // the leader's group it comes from values drawn ahead and the insert is not waited for.
        if (grouped !== undefined && batch !== null && l.status === "queued" && drawnSeq !== null) {
          const seq = drawnSeq;
          drawnSeq = null;
          batch.add("lease", LEASE.insertWithSeq, [seq, ...params]);
          return { ...l, seq };
        }
        if (grouped !== undefined && batch !== null && l.status !== "queued") {
          const seq = grouped.seqs.shift();
          if (seq !== undefined) {
            batch.add("lease", LEASE.insertWithSeq, [seq, ...params]);
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
        const params = [...LEASES.updateParams(l, "postgres"), l.id];
        grouped?.ahead?.wrote(`l:${l.id}`);
        if (batch === null) return void (await q(LEASE.update, params));
        batch.add("lease", LEASE.update, params);
      },
      get: async (id) => {
        if (readOnly) return decode(LEASES, await one(LEASE.read, id));
        // The lock order above: the identity's advisory lock (its identity read from the row without
        // a lock: it never changes), then the row, FOR UPDATE, read as it is once the lock is held.
        // Every change of a lease (a release, an end, a grant) reads its identity's ledger next: it
        // is locked and read with it, after the advisory lock like any ledger read: one statement
        // (lockedLeaseWithLedger), which in a follower's group only tries the locks.
        // Or as its leader group read it ahead (ReadAhead), with the same locks taken.
        const ahead = grouped?.ahead?.pending(`l:${id}`);
        if (ahead !== undefined) await ahead;
        const { lease: row, ledger: ledgerRow0 } =
          grouped?.ahead?.takeLease(id) ?? (await lockedLeaseWithLedger(q, ledgerLockSpace, id, nowait));
        let ledgerRow: Row | null | undefined = ledgerRow0;
        const lease = decode(LEASES, row);
        if (lease === null) return null;
        const identity = `${lease.identityKind}:${lease.identityId}`;
        locked.add(identity);
        // A ledger this transaction or its group already holds is as they see it (their writes may be in flight).
        if (!ledgers.has(identity) && !grouped?.ledgers.has(identity)) {
          // Not in the answer (null): missing, or inserted since its snapshot; read again under the lock.
          if (ledgerRow === null) ledgerRow = await one(nowait ? LEDGER.forUpdateNowait : LEDGER.forUpdate, identity);
          const ledger = decode(LEDGERS, ledgerRow);
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
