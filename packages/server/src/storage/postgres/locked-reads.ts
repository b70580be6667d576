import type postgres from "postgres";
import type { Row, SqlValue } from "../table.js";
import { LEDGERS } from "../tables.js";
import { LockBusyError } from "./errors.js";
import { LEASE, LEDGER } from "./postgres-sql.js";

type Query = (text: string, params: SqlValue[]) => postgres.PendingQuery<Row[]>;

/** The ledger columns of LEASE.lockedWithLedger's answer, as `g_<column>`. */
const LEDGER_COLUMNS = LEDGERS.selectList.split(", ");

/**
 * An identity's ledger, read and locked after the identity's advisory lock (the lock order), where
 * locks are waited for (not in a follower's group): one statement, `LEDGER.lockedForUpdate` (two
 * before: the lock, then the row in a statement of its own so that its snapshot came after the
 * lock). A ledger that statement did not find may have been inserted since its snapshot by the
 * transaction it waited for (an identity's first admission): read again, under the lock now held.
 * `holdsLock`: this transaction holds the identity's lock already (it read one of its leases).
 */
export async function lockedLedger(
  q: Query,
  lockSpace: number,
  identity: string,
  holdsLock: boolean,
): Promise<Row | undefined> {
  if (!holdsLock) {
    const row = (await q(LEDGER.lockedForUpdate, [lockSpace, identity]))[0];
    if (row?.["found"] === true) return row;
  }
  return (await q(LEDGER.forUpdate, [identity]))[0];
}

/**
 * A lease and its identity's ledger, locked after the identity's advisory lock: one statement,
 * `LEASE.lockedWithLedger` (three before), or in a follower's group (`nowait`: locks tried, never
 * waited for; a lock taken is LockBusyError) `LEASE.tryLockedWithLedger`. `ledger` null: the
 * statement found none — the identity has none, or it was inserted since the statement's snapshot;
 * a caller that needs it reads it again (under the lock now held).
 */
export async function lockedLeaseWithLedger(
  q: Query,
  lockSpace: number,
  id: string,
  nowait: boolean,
): Promise<{ lease: Row | undefined; ledger: Row | null }> {
  const row = (await q(nowait ? LEASE.tryLockedWithLedger : LEASE.lockedWithLedger, [lockSpace, id]))[0];
  if (nowait && row?.["ok"] === false) throw new LockBusyError();
  // A follower group's statement answers one row whatever it finds: no lease, no `id`.
  if (row === undefined || row["id"] === null) return { lease: undefined, ledger: null };
  if (row["g_found"] !== true) return { lease: row, ledger: null };
  const ledger: Row = {};
  for (const c of LEDGER_COLUMNS) ledger[c] = row[`g_${c}`];
  return { lease: row, ledger };
}
