// The SDK's shapes of billing and the usage ledger (docs/billing.md): the contract's wire objects
// camelCased with Dates for times, as in types.ts. Money is whole micro-units (`…Micros`), never a
// float; each object's `display` has the same amounts for people (`{ balance: "$1.25" }`).
import type * as wire from "@gpupool/contract";
import type { Camelized, Credits, Identity, LeaseStatus, Overage, ProblemCode, Quota, Size } from "./types.js";

export type GrantCategory = wire.WalletGrant["category"];

/** One grant of credits: `included` (the tier's month), `promotional` or `purchased`. */
export type WalletGrant = Camelized<wire.WalletGrant, "effective_at" | "expires_at" | "created_at">;

/** grant, hold, spend, release or expire: each with the grant and (but for grants and expiries) the lease it belongs to. */
export type WalletTransaction = Camelized<wire.WalletTransaction, "at">;

/** A user's wallet: grants in the spending order, the latest transactions first, and the totals. */
export type Wallet = Omit<Camelized<wire.Wallet>, "grants" | "transactions"> & {
  readonly grants: readonly WalletGrant[];
  readonly transactions: readonly WalletTransaction[];
};

/** `GET /v1/me`: the signed-in user, their quota now, credits, and whether overage engages (and if not, why). */
export interface Me {
  readonly user: { readonly id: string; readonly name: string; readonly tier: string };
  readonly quota: Quota;
  readonly credits: Credits;
  readonly overage: Overage;
}

/** What `setBilling` changes; name at least one. */
export interface BillingChanges {
  /** Pay calls past the quota from credits (true), or not. */
  readonly overage?: boolean | undefined;
  /** The most overage may spend in a billing month, as a decimal string (`"5.00"`); null: the operator's default cap. */
  readonly monthlyCap?: string | null | undefined;
}

/** Credits to add to a user's wallet (admin). */
export interface CreditGrantRequest {
  /** A decimal amount of the pool's currency, more than 0: `"10.00"`. */
  readonly amount: string;
  /** `purchased` (a top-up a payment recorded) or `promotional` (a gift). */
  readonly category: "promotional" | "purchased";
  /** When what is left of it expires (in the future); absent or null: never. */
  readonly expiresAt?: Date | string | null | undefined;
  /** Lower is spent first (server default 10; included credits are 0). */
  readonly priority?: number | undefined;
  /** Where it came from, e.g. a payment id. */
  readonly source?: string | undefined;
  /** The same key again returns the same grant and adds nothing (a payment's id is a good key). */
  readonly idempotencyKey: string;
}

/** A grant, and whether this call made it (false: the idempotency key had made it before; nothing was added). */
export interface CreditGrantResult {
  readonly grant: WalletGrant;
  readonly created: boolean;
}

/** What a call cost (micro-units of `currency`) and which bucket paid: `quota`, `credits`, both, or `nothing`. */
export type UsageCost = Camelized<wire.UsageCost>;

type UsageTimes = "queued_at" | "granted_at" | "ended_at";

/** One ended lease as the usage ledger keeps it; `charged = quotaS + overageS`, `chargedMicros` paid `overageS`. */
export type UsageRecord = Omit<
  Camelized<wire.UsageRecord, UsageTimes>,
  "identity" | "size" | "status" | "problem" | "cost"
> & {
  readonly identity: Identity;
  /** What the call cost and which bucket paid. */
  readonly cost: UsageCost;
  readonly size: Size;
  readonly status: LeaseStatus;
  readonly problem: ProblemCode | null;
};

export interface UsagePage {
  /** Oldest first (newest first when asked with `order: "desc"`). */
  readonly records: readonly UsageRecord[];
  /** Pass as `cursor` for the next page; null on the last one. */
  readonly nextCursor: string | null;
}

export type UsageGroupBy = wire.UsageSummary["group_by"];

/** Which records: the range (by when they ended), an app, an identity (`<kind>:<id>`). */
export interface UsageRange {
  /** At or after this instant (server default: 30 days ago). */
  readonly from?: Date | string | undefined;
  /** Before this instant (server default: now). */
  readonly to?: Date | string | undefined;
  /** An app's id. */
  readonly app?: string | undefined;
  /** `<kind>:<id>`, e.g. `user:u_abc`. */
  readonly identity?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface UsageQuery extends UsageRange {
  readonly status?: LeaseStatus | undefined;
  /** Records per page: 1 to 1000 (server default 100). */
  readonly limit?: number | undefined;
  /** `asc` (default): oldest first; `desc`: newest first. */
  readonly order?: "asc" | "desc" | undefined;
}

export type UsageTotals = Camelized<wire.UsageTotals>;
/** `name`: the app's name when grouped by app (null for own scripts, and for other groupings). */
export type UsageGroup = UsageTotals & { readonly key: string; readonly name: string | null };

export interface UsageSummary {
  readonly from: Date;
  readonly to: Date;
  readonly groupBy: UsageGroupBy;
  readonly currency: string;
  /** One per key (a day `YYYY-MM-DD`, an app id, `<kind>:<id>` or a tier), in key order. */
  readonly groups: readonly UsageGroup[];
  readonly total: UsageTotals;
}

export type UsageExportFormat = "csv" | "ndjson";

/** A usage export being streamed: read `body` as it comes, or all of it with `text()`. */
export interface UsageExport {
  readonly format: UsageExportFormat;
  readonly contentType: string;
  readonly body: ReadableStream<Uint8Array>;
  text(): Promise<string>;
}

/** The usage records of a query, fetched a page at a time as they are iterated. */
export interface UsageRecords extends AsyncIterable<UsageRecord> {
  /** The same query page by page, each as the server answered it. */
  pages(): AsyncIterable<UsagePage>;
}
