import type { CreditGrant, GrantShare, IdentityKind } from "@gpupool/core";

/**
 * A share of a lease's hold on one grant. `holdTxId`: the id of its `hold` wallet transaction,
 * chosen when the hold was placed; the transaction is written when the lease settles, and shown
 * from the lease until then (Wallets.transactions). A share without one was placed by an older
 * release, which wrote its transaction at once.
 */
export interface HeldShare extends GrantShare {
  readonly holdTxId?: string;
}

/** A grant of credits, as stored: the core's grant, whose wallet it is, and the key that made it (admin grants). */
export interface GrantRecord extends CreditGrant {
  readonly userId: string;
  readonly idempotencyKey: string | null;
}

export type WalletTransactionKind = "grant" | "hold" | "spend" | "release" | "expire";

/** One movement of credits: append-only, never changed. */
export interface WalletTransactionRecord {
  readonly id: string;
  readonly userId: string;
  readonly at: number;
  readonly kind: WalletTransactionKind;
  readonly amountMicros: number;
  readonly grantId: string;
  readonly leaseId: string | null;
}

/**
 * A call's own wallet transactions (its hold, and the spend, release or expire it settled in), kept
 * on its usage record: the user and the lease are the record's.
 */
export type CallWalletEntry = Pick<WalletTransactionRecord, "id" | "at" | "kind" | "amountMicros" | "grantId">;

/** A user's billing settings and what overage spent in the billing month `month` (`YYYY-MM`). */
export interface BillingAccountRecord {
  readonly userId: string;
  readonly overageEnabled: boolean;
  /** Null: the operator's default cap. */
  readonly monthlyCapMicros: number | null;
  readonly month: string;
  readonly monthSpentMicros: number;
}

/** One ended lease in the usage ledger (docs/billing.md): written once, in the transaction that ended it. */
export interface UsageRecordRow {
  readonly id: string;
  readonly identityKind: IdentityKind;
  readonly identityId: string;
  readonly tier: string;
  readonly appId: string | null;
  readonly node: string | null;
  readonly size: string;
  readonly status: string;
  readonly queuedAt: number;
  readonly grantedAt: number | null;
  readonly endedAt: number;
  readonly heldMs: number;
  readonly reservedMs: number;
  readonly chargedMs: number;
  readonly quotaMs: number;
  readonly overageMs: number;
  readonly chargedMicros: number;
  readonly refundedMs: number;
  readonly problemCode: string | null;
  /**
   * The wallet transactions of a call paid (or held) from credits, written with the record instead
   * of as rows of their own (issue 15: one row per call, not three); null: none. Listed in the
   * user's wallet beside the `wallet_transactions` rows (Wallets.transactions); not on the wire.
   */
  readonly wallet: readonly CallWalletEntry[] | null;
}

/** Who may see which usage records: the admin all; a user theirs and their apps'. */
export type UsageScope =
  { readonly kind: "all" } | { readonly kind: "user"; readonly userId: string; readonly appIds: readonly string[] };

export interface UsageFilter {
  readonly scope: UsageScope;
  /** Ended at or after. */
  readonly from: number;
  /** Ended before. */
  readonly to: number;
  readonly appId?: string;
  readonly identity?: { readonly kind: IdentityKind; readonly id: string };
  readonly status?: string;
}

export type UsageGroupBy = "day" | "app" | "identity" | "tier";

/** Totals of one group (money and times as stored: micro-units, milliseconds). */
export interface UsageGroupRow {
  readonly key: string;
  readonly calls: number;
  readonly granted: number;
  readonly heldMs: number;
  readonly chargedMs: number;
  readonly quotaMs: number;
  readonly overageMs: number;
  readonly chargedMicros: number;
  /** Leases that ended with a problem, by code. */
  readonly problems: Readonly<Record<string, number>>;
}

/** Refused admissions counted on one day for one identity, app and code. */
export interface RefusalCount {
  readonly day: string;
  readonly identity: string;
  readonly appId: string;
  readonly tier: string;
  readonly code: string;
  readonly count: number;
}

export interface WalletsTx {
  /**
   * Serializes billing writes of one user: on PostgreSQL the same advisory lock as the user's
   * ledger (so the lock order stays identity → its rows); nothing on SQLite, which has one writer.
   */
  lock(userId: string): Promise<void>;
  account(userId: string): Promise<BillingAccountRecord | null>;
  putAccount(account: BillingAccountRecord): Promise<void>;
  grants(userId: string): Promise<GrantRecord[]>;
  grantByKey(userId: string, key: string): Promise<GrantRecord | null>;
  /** False when the grant's id exists already (the same month's included credits granted twice). */
  insertGrant(grant: GrantRecord): Promise<boolean>;
  /** Writes what settlement and expiry change of a grant: `remainingMicros` and `heldMicros`. */
  updateGrant(grant: GrantRecord): Promise<void>;
  addTransactions(rows: readonly WalletTransactionRecord[]): Promise<void>;
  /** The latest first. */
  transactions(userId: string, limit: number): Promise<WalletTransactionRecord[]>;
}

export interface UsageTx {
  insert(record: UsageRecordRow): Promise<void>;
  /** By (ended_at, id) — oldest first, or newest first with `desc` — after the record `after` when given. */
  list(
    filter: UsageFilter,
    after: { endedAt: number; id: string } | null,
    limit: number,
    order?: "asc" | "desc",
  ): Promise<UsageRecordRow[]>;
  summary(filter: UsageFilter, groupBy: UsageGroupBy): Promise<UsageGroupRow[]>;
  refusals(filter: UsageFilter, groupBy: UsageGroupBy): Promise<{ key: string; code: string; count: number }[]>;
  addRefusals(counts: readonly RefusalCount[]): Promise<void>;
  /**
   * The wallet transactions on the user's latest `limit` usage records that have any (newest
   * record first), each with the record's user and lease.
   */
  walletEntries(userId: string, limit: number): Promise<WalletTransactionRecord[]>;
}
