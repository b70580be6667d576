import type postgres from "postgres";
import type { Row, SqlValue } from "../table.js";
import { LEDGERS } from "../tables.js";
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
 * A lease and its identity's ledger, locked after the identity's advisory lock, where locks are
 * waited for: one statement, `LEASE.lockedWithLedger` (three before). `ledger` null: the statement
 * found none — the identity has none, or it was inserted since the statement's snapshot; a caller
 * that needs it reads it again (`LEDGER.forUpdate`, under the lock now held).
 */
export async function lockedLeaseWithLedger(
  q: Query,
  lockSpace: number,
  id: string,
): Promise<{ lease: Row | undefined; ledger: Row | null }> {
  const lease = (await q(LEASE.lockedWithLedger, [lockSpace, id]))[0];
  if (lease?.["g_found"] !== true) return { lease, ledger: null };
  const ledger: Row = {};
  for (const c of LEDGER_COLUMNS) ledger[c] = lease[`g_${c}`];
  return { lease, ledger };
}
