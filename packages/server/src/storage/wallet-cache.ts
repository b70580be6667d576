import type { BillingAccountRecord, GrantRecord, WalletTransactionRecord } from "./billing-records.js";
import { BILLING_ACCOUNTS, WALLET_TRANSACTIONS } from "./billing-tables.js";
import type { Dialect, SqlValue } from "./table.js";

/**
 * Where one connection is the only writer (SQLite): users' grants and billing settings as last
 * read or written, and the wallet writes of the open commit group not yet sent to the database.
 * All of it is dropped on a rollback.
 *
 * The writes are deferred to the end of the commit group, as the ledgers are: a call paid from
 * credits changes a grant and appends a wallet transaction when it is admitted, and again (with
 * the month's spend) when it ends. Kept here, a grant or an account changed several times in a
 * group is written once, and the group's transactions are one multi-row INSERT instead of a
 * statement each.
 */
export interface WalletCache {
  readonly grants: Map<string, readonly GrantRecord[]>;
  readonly accounts: Map<string, BillingAccountRecord | null>;
  readonly unwritten: {
    /** The latest state of each changed grant, by id. */
    readonly grants: Map<string, GrantRecord>;
    /** The latest settings of each changed account, by user. */
    readonly accounts: Map<string, BillingAccountRecord>;
    /** Appended transactions, in order. */
    readonly transactions: WalletTransactionRecord[];
  };
}

export function walletCache(): WalletCache {
  return {
    grants: new Map(),
    accounts: new Map(),
    unwritten: { grants: new Map(), accounts: new Map(), transactions: [] },
  };
}

/** After a rollback, nothing cached or unwritten may be trusted. */
export function forgetWallets(cache: WalletCache): void {
  cache.grants.clear();
  cache.accounts.clear();
  cache.unwritten.grants.clear();
  cache.unwritten.accounts.clear();
  cache.unwritten.transactions.length = 0;
}

const ROW = `(${WALLET_TRANSACTIONS.insertNames.map(() => "?").join(", ")})`;
/** The INSERT of n rows, built once per n (a commit group's flush asks for one every time). */
const insertTexts = new Map<number, string>();
const insertRows = (n: number): string => {
  let text = insertTexts.get(n);
  if (text === undefined) {
    text = `INSERT INTO ${WALLET_TRANSACTIONS.name} (${WALLET_TRANSACTIONS.insertNames.join(", ")}) VALUES ${Array(n).fill(ROW).join(", ")}`;
    insertTexts.set(n, text);
  }
  return text;
};

/** Statement texts (`?` parameters), shared by the deferred and the immediate writes. */
export const WALLET_WRITES = {
  putAccount:
    `INSERT INTO ${BILLING_ACCOUNTS.name} (${BILLING_ACCOUNTS.insertNames.join(", ")}) VALUES (${BILLING_ACCOUNTS.insertNames.map(() => "?").join(", ")})` +
    " ON CONFLICT (user_id) DO UPDATE SET overage_enabled = excluded.overage_enabled, monthly_cap_micros = excluded.monthly_cap_micros, month = excluded.month, month_spent_micros = excluded.month_spent_micros",
  updateGrant: "UPDATE credit_grants SET remaining_micros = ?, held_micros = ? WHERE id = ?",
  /** Transactions go in by at most this many rows per statement (7 parameters each). */
  rowsPerInsert: 64,
  insertTransactions: insertRows,
};

/**
 * The statements (text and parameters) that append `rows` to the wallet transactions, at most
 * `rowsPerInsert` per statement.
 */
export function transactionInserts(
  rows: readonly WalletTransactionRecord[],
  dialect: Dialect,
): { text: string; params: SqlValue[] }[] {
  const out: { text: string; params: SqlValue[] }[] = [];
  for (let i = 0; i < rows.length; i += WALLET_WRITES.rowsPerInsert) {
    const chunk = rows.slice(i, i + WALLET_WRITES.rowsPerInsert);
    out.push({
      text: WALLET_WRITES.insertTransactions(chunk.length),
      params: chunk.flatMap((r) => WALLET_TRANSACTIONS.insertParams(r, dialect)),
    });
  }
  return out;
}

/** Writes what the commit group left unwritten (inside the group, before its COMMIT or a read of these tables). */
export function flushWallets(cache: WalletCache, run: (text: string, params: readonly SqlValue[]) => void): void {
  const { grants, accounts, transactions } = cache.unwritten;
  for (const g of grants.values()) run(WALLET_WRITES.updateGrant, [g.remainingMicros, g.heldMicros, g.id]);
  for (const a of accounts.values()) run(WALLET_WRITES.putAccount, BILLING_ACCOUNTS.insertParams(a, "sqlite"));
  for (const s of transactionInserts(transactions, "sqlite")) run(s.text, s.params);
  grants.clear();
  accounts.clear();
  transactions.length = 0;
}
