import * as z from "zod/mini";
import { Count, Time, TimeOrNull, describe, matching } from "./common.js";

// Money (docs/billing.md): whole micro-units of the pool's currency (1 USD = 1,000,000) in fields ending
// `_micros`, never floats; every object with money fields carries `currency` and a `display`
// string per field for people. Requests name amounts as decimal strings ("10.00").

/** An amount in micro-units of the currency. */
export const Micros = z.int().check(z.nonnegative());

/** A decimal amount in a request: digits, an optional fraction of at most 6 digits. */
export const Amount = describe(
  z
    .string()
    .check(
      z.maxLength(20),
      matching(
        /^(0|[1-9][0-9]{0,9})(\.[0-9]{1,6})?$/,
        'a decimal amount such as "10.00" (no sign, at most 6 decimal places, at most 1e9)',
      ),
    ),
  'A decimal amount of the currency, as a string: `"10.00"`.',
);

const Currency = describe(z.string(), "ISO 4217 code of the pool's currency (`billing.currency`), e.g. `USD`.");
const Display = describe(
  z.record(z.string(), z.string()),
  'Each money field of this object for people, keyed by its name without `_micros`: `{ "balance": "$1.25" }`.',
);

export const BUCKETS = ["quota", "credits"] as const;

/** What paid for a call, on lease objects and release results. */
export const LeaseBilling = z.object({
  quota_s: describe(
    z.number(),
    "GPU seconds (× cost) of the reservation taken from the daily quota. `quota_s + overage_s` is the reservation.",
  ),
  overage_s: describe(
    z.number(),
    "GPU seconds (× cost) of the reservation paid from credits (overage); 0 without overage.",
  ),
  hold_micros: describe(
    Micros,
    "Credits held at admission for the overage part. Once the call ended, `charged_micros` of it was spent and the rest released (the wallet's transactions show both).",
  ),
  charged_micros: describe(
    Micros,
    "Credits spent once it ended: the overage seconds it used × the price, rounded up to a micro-unit. 0 until it ends.",
  ),
  currency: Currency,
  display: Display,
});
export type LeaseBilling = z.infer<typeof LeaseBilling>;

/** A user's credits at a glance (on the quota object and `/v1/me`). */
export const Credits = z.object({
  balance_micros: describe(Micros, "Left of effective, unexpired grants."),
  held_micros: describe(Micros, "Held by the user's calls in flight."),
  available_micros: describe(Micros, "`balance − held`: what a new call's overage may hold."),
  currency: Currency,
  display: Display,
});
export type Credits = z.infer<typeof Credits>;

export const OVERAGE_BLOCKERS = ["operator_disabled", "tier_without_overage", "not_opted_in", "not_a_user"] as const;
export type OverageBlocker = (typeof OVERAGE_BLOCKERS)[number];
export const OverageBlockerSchema = describe(
  z.enum(OVERAGE_BLOCKERS),
  "Why credits do not extend this identity's quota: `operator_disabled` (the pool has no overage), `tier_without_overage` (the tier is not among `billing.overage.tiers`), `not_opted_in` (the user has not turned overage on: `gpupool billing overage on`), `not_a_user` (an anonymous visitor or an app has no wallet; sign in).",
);

/** Whether credits may pay past the quota for this identity, and how much of the month's cap is used. */
export const Overage = z.object({
  available: describe(z.boolean(), "The operator offers overage to this identity's tier (and it is a signed-in user)."),
  enabled: describe(z.boolean(), "The user opted in: calls past the quota are paid from credits."),
  blocked_by: describe(
    z.nullable(OverageBlockerSchema),
    "Null when overage engages; else the first reason it does not.",
  ),
  price_per_gpu_minute_micros: describe(Micros, "The price of one GPU-minute at cost ×1."),
  monthly_cap_micros: describe(
    z.nullable(Micros),
    "The most overage may spend in a billing month; null when not opted in.",
  ),
  spent_micros: describe(Micros, "Spent on overage in this billing month."),
  held_micros: describe(Micros, "Held for overage by calls in flight."),
  month: describe(z.string(), "The billing month (`YYYY-MM`, UTC)."),
  month_ends_at: Time,
  currency: Currency,
  display: Display,
});
export type Overage = z.infer<typeof Overage>;

export const GRANT_CATEGORIES = ["included", "promotional", "purchased"] as const;
export const GrantCategory = z.enum(GRANT_CATEGORIES);

export const WalletGrant = z.object({
  id: describe(z.string(), "`cg_…`, or `inc_<month>_<user>` for a month's included credits."),
  category: describe(
    GrantCategory,
    "`included` (the tier's monthly credits), `promotional` (an admin's gift), `purchased` (a top-up).",
  ),
  amount_micros: Micros,
  remaining_micros: describe(Micros, "Not yet spent nor expired (what is held included)."),
  held_micros: describe(Micros, "Held of it by calls in flight."),
  priority: describe(Count, "Lower is spent first."),
  effective_at: Time,
  expires_at: describe(TimeOrNull, "Null: never expires."),
  source: describe(z.string(), "Where it came from (a payment reference, an operator's note, the tier's month)."),
  created_at: Time,
  currency: Currency,
  display: Display,
});
export type WalletGrant = z.infer<typeof WalletGrant>;

export const WALLET_TRANSACTION_KINDS = ["grant", "hold", "spend", "release", "expire"] as const;
export const WalletTransaction = z.object({
  id: describe(z.string(), "`wt_…`."),
  at: Time,
  kind: describe(
    z.enum(WALLET_TRANSACTION_KINDS),
    "`grant` (credits added), `hold` (a call's overage earmarked), `spend` (what the call used), `release` (the unused part of a hold), `expire` (a grant's rest at its end).",
  ),
  amount_micros: Micros,
  grant_id: z.string(),
  lease_id: describe(z.nullable(z.string()), "The call it belongs to (hold, spend, release)."),
  display: Display,
});
export type WalletTransaction = z.infer<typeof WalletTransaction>;

/** `GET /v1/me/wallet`, `GET /v1/admin/users/:id/wallet`. */
export const Wallet = z.object({
  user: describe(z.string(), "The user's id."),
  grants: describe(z.array(WalletGrant), "Every grant, in the spending order."),
  transactions: describe(z.array(WalletTransaction), "The most recent first (at most `limit`, default 100)."),
  balance_micros: Micros,
  held_micros: Micros,
  available_micros: Micros,
  currency: Currency,
  display: Display,
});
export type Wallet = z.infer<typeof Wallet>;

export const WalletQuery = z.strictObject({
  limit: describe(
    z.optional(z.string().check(matching(/^(?:[1-9][0-9]?|[1-4][0-9]{2}|500)$/, "a whole number from 1 to 500"))),
    "How many of the latest transactions: 1 to 500 (default 100).",
  ),
});

/** `PATCH /v1/me/billing`: at least one field. */
export const BillingSettingsRequest = z
  .strictObject({
    overage: describe(z.optional(z.boolean()), "Pay calls past the quota from credits (true), or not."),
    monthly_cap: describe(
      z.optional(z.nullable(Amount)),
      "The most overage may spend in a billing month; null: the operator's default cap.",
    ),
  })
  .check(
    z.refine((b) => b.overage !== undefined || b.monthly_cap !== undefined, {
      message: "name `overage` or `monthly_cap`",
    }),
  );
export type BillingSettingsRequest = z.infer<typeof BillingSettingsRequest>;

/** The answer of `PATCH /v1/me/billing`. */
export const BillingSettings = z.object({ overage: Overage });
export type BillingSettings = z.infer<typeof BillingSettings>;

/** `POST /v1/admin/users/:id/credits`. */
export const CreditGrantRequest = z.strictObject({
  amount: describe(Amount, "More than 0."),
  category: describe(
    z.enum(["promotional", "purchased"]),
    "`promotional` (a gift) or `purchased` (a top-up a payment recorded). Included credits come from the tier.",
  ),
  expires_at: describe(
    z.optional(z.nullable(Time)),
    "When what is left of it expires; absent or null: never. Must be in the future.",
  ),
  priority: describe(
    z.optional(z.int().check(z.minimum(0), z.maximum(1000))),
    "Lower is spent first (default 10; included credits are 0).",
  ),
  source: describe(
    z.optional(z.string().check(z.minLength(1), z.maxLength(200))),
    "Where it came from, e.g. a payment id.",
  ),
  idempotency_key: describe(
    z.string().check(z.minLength(1), z.maxLength(200), matching(/^[\x21-\x7e]+$/, "printable ASCII without spaces")),
    "The same key again returns the same grant (200) and adds nothing; with another amount or category it is a 409.",
  ),
});
export type CreditGrantRequest = z.infer<typeof CreditGrantRequest>;
