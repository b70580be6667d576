import Database from "better-sqlite3";
import type { Acknowledged } from "./pg-fault-kit.js";
import { judge, keyViolations } from "./pg-invariants.js";
import type { InvariantOptions, InvariantReport, KeyRow, LeaseRow, LedgerRow } from "./pg-invariants.js";
import { WALLET_QUERIES, allWalletTransactions, walletViolations } from "./wallet-invariants.js";
import type { BilledLeaseRow, GrantRow, UsageWalletRow, WalletTxRow } from "./wallet-invariants.js";

/**
 * The ledger, lease and wallet invariants of pg-invariants.ts, over a SQLite file read in one
 * snapshot (a read-only connection: safe beside a server that holds the file); with `toldFailed`
 * and `keysMade`, also what the load was told of its Idempotency-Keys (keyViolations).
 */
export function checkSqliteInvariants(
  file: string,
  o: {
    readonly quotaMs: Readonly<Record<string, number>>;
    readonly queueTimeoutMs: number;
    readonly graceMs: number;
    readonly acked: ReadonlyMap<string, Acknowledged>;
  } & Pick<InvariantOptions, "toldFailed" | "keysMade">,
): InvariantReport {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    const read = db.transaction(() => ({
      leases: db
        .prepare(
          "SELECT id, identity_kind, identity_id, tier, status, reserved_ms, quota_ms, charged_ms, window_started_at, node, device_index, slot_indexes, queued_at FROM leases",
        )
        .all() as LeaseRow[],
      ledgers: db
        .prepare("SELECT identity, used_ms, reserved_ms, bonus_ms, window_started_at FROM ledgers")
        .all() as LedgerRow[],
      grants: db.prepare(WALLET_QUERIES.grants).all() as GrantRow[],
      txs: allWalletTransactions(
        db.prepare(WALLET_QUERIES.transactions).all() as WalletTxRow[],
        db.prepare(WALLET_QUERIES.usageWallets).all() as UsageWalletRow[],
      ),
      billed: db.prepare(WALLET_QUERIES.leases).all() as BilledLeaseRow[],
      keys: db.prepare("SELECT scope_key, lease_id FROM idempotency_keys").all() as KeyRow[],
      now: Date.now(),
    }));
    const s = read();
    const report = judge(o, s.leases, s.ledgers, new Map(o.acked), s.now);
    // SQLite's held_micros is as of each grant's last write (see walletViolations).
    report.violations.push(...walletViolations(s.grants, s.txs, s.billed, false));
    report.violations.push(...keyViolations(o, s.keys, s.leases));
    return report;
  } finally {
    db.close();
  }
}

/** How many leases in the file are still queued or active. */
export function liveLeases(file: string): number {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    return (db.prepare("SELECT COUNT(*) AS n FROM leases WHERE status IN ('queued', 'active')").get() as { n: number })
      .n;
  } finally {
    db.close();
  }
}
