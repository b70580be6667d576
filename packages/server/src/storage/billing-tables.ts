import type { GrantCategory, IdentityKind } from "@gpupool/core";
import type {
  BillingAccountRecord,
  CallWalletEntry,
  HeldShare,
  RefusalCount,
  GrantRecord,
  UsageRecordRow,
  WalletTransactionKind,
  WalletTransactionRecord,
} from "./billing-records.js";
import type { Column } from "./table.js";
import { Table, boolean, integer, integerOrNull, text, textOrNull } from "./table.js";

/*
 * The two JSON columns below are written with every call paid from credits, so they are encoded by
 * hand: the same text as JSON.stringify (a property test holds them to it), at about half its cost
 * for these few short, known shapes — ids need no escaping and amounts are integers, so both go in
 * as they are, and anything else goes through JSON.stringify.
 */
const PLAIN = /^[\w.:-]*$/;
const jsonText = (s: string): string => (PLAIN.test(s) ? `"${s}"` : JSON.stringify(s));
const jsonNumber = (n: number): string => (Number.isSafeInteger(n) ? String(n) : JSON.stringify(n));

/** The shares' fields in their order (for shares as the store makes them: `JSON.stringify(shares)`). */
export function encodeShares(shares: readonly HeldShare[]): string {
  let out = "[";
  for (let i = 0; i < shares.length; i++) {
    const s = shares[i] as HeldShare;
    out += `${i === 0 ? "" : ","}{"grantId":${jsonText(s.grantId)},"micros":${jsonNumber(s.micros)}`;
    out += s.holdTxId === undefined ? "}" : `,"holdTxId":${jsonText(s.holdTxId)}}`;
  }
  return `${out}]`;
}

/** `JSON.stringify(entries.map((e) => [e.id, e.at, e.kind, e.amountMicros, e.grantId]))`. */
export function encodeCallWallet(entries: readonly CallWalletEntry[]): string {
  let out = "[";
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as CallWalletEntry;
    out += `${i === 0 ? "[" : ",["}${jsonText(e.id)},${jsonNumber(e.at)},${jsonText(e.kind)},${jsonNumber(e.amountMicros)},${jsonText(e.grantId)}]`;
  }
  return `${out}]`;
}

/** A hold's shares of grants as JSON text (`[{"grantId":…,"micros":…}]`); NULL when nothing was held. */
export function sharesJson(name: string): Column<readonly HeldShare[] | null> {
  return {
    name,
    encode: (shares) => (shares === null || shares.length === 0 ? null : encodeShares(shares)),
    decode: (v) => (typeof v === "string" ? (JSON.parse(v) as HeldShare[]) : null),
  };
}

/**
 * A call's wallet transactions as JSON text, one array per transaction — `[[id, at, kind,
 * amountMicros, grantId], …]`: the bytes of every call paid from credits, kept short; NULL: none.
 */
export const USAGE_WALLET: Column<readonly CallWalletEntry[] | null> = {
  name: "wallet",
  encode: (entries) => (entries === null || entries.length === 0 ? null : encodeCallWallet(entries)),
  decode: (v) =>
    typeof v === "string"
      ? (JSON.parse(v) as [string, number, CallWalletEntry["kind"], number, string][]).map(
          ([id, at, kind, amountMicros, grantId]) => ({ id, at, kind, amountMicros, grantId }),
        )
      : null,
};

export const GRANT_CHANGES = ["remainingMicros", "heldMicros"] as const satisfies readonly (keyof GrantRecord)[];

/**
 * Credit grants. `held_micros` is what the grant's live leases hold: PostgreSQL writes it with every
 * hold and settlement; SQLite (one process, its wallets cached) writes it only with the grant's
 * other changes and counts the live leases' holds when it loads a wallet (billing-sql's `grants`),
 * so there the column is as of the grant's last write of `remaining_micros`.
 */
export const GRANTS = new Table<GrantRecord, (typeof GRANT_CHANGES)[number]>(
  "credit_grants",
  {
    id: text("id"),
    userId: text("user_id"),
    category: text<GrantCategory>("category"),
    amountMicros: integer("amount_micros"),
    remainingMicros: integer("remaining_micros"),
    heldMicros: integer("held_micros"),
    priority: integer("priority"),
    effectiveAt: integer("effective_at"),
    expiresAt: integerOrNull("expires_at"),
    source: text("source"),
    createdAt: integer("created_at"),
    idempotencyKey: textOrNull("idempotency_key"),
  },
  { mutable: GRANT_CHANGES },
);

export const WALLET_TRANSACTIONS = new Table<WalletTransactionRecord>("wallet_transactions", {
  id: text("id"),
  userId: text("user_id"),
  at: integer("at"),
  kind: text<WalletTransactionKind>("kind"),
  amountMicros: integer("amount_micros"),
  grantId: text("grant_id"),
  leaseId: textOrNull("lease_id"),
});

export const BILLING_ACCOUNTS = new Table<BillingAccountRecord>("billing_accounts", {
  userId: text("user_id"),
  overageEnabled: boolean("overage_enabled"),
  monthlyCapMicros: integerOrNull("monthly_cap_micros"),
  month: text("month"),
  monthSpentMicros: integer("month_spent_micros"),
});

export const USAGE_RECORDS = new Table<UsageRecordRow>("usage_records", {
  id: text("id"),
  identityKind: text<IdentityKind>("identity_kind"),
  identityId: text("identity_id"),
  tier: text("tier"),
  appId: textOrNull("app_id"),
  node: textOrNull("node"),
  size: text("size"),
  status: text("status"),
  queuedAt: integer("queued_at"),
  grantedAt: integerOrNull("granted_at"),
  endedAt: integer("ended_at"),
  heldMs: integer("held_ms"),
  reservedMs: integer("reserved_ms"),
  chargedMs: integer("charged_ms"),
  quotaMs: integer("quota_ms"),
  overageMs: integer("overage_ms"),
  chargedMicros: integer("charged_micros"),
  refundedMs: integer("refunded_ms"),
  problemCode: textOrNull("problem_code"),
  wallet: USAGE_WALLET,
});

/** Refusals counted per day, identity, app (`""`: none) and code (see billing-sql's `addRefusals`). */
export const REFUSAL_COUNTS = new Table<RefusalCount>("refusal_counts", {
  day: text("day"),
  identity: text("identity"),
  appId: text("app_id"),
  tier: text("tier"),
  code: text("code"),
  count: integer("count"),
});
