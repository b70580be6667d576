import * as billing from "../billing.js";
import { Me } from "../me.js";
import * as usage from "../usage.js";
import { USER_REF } from "./operation-types.js";
import type { Operation } from "./operation-types.js";

/** Billing and the usage ledger (docs/billing.md). */
export const BILLING_OPERATIONS: readonly Operation[] = [
  {
    id: "getMe",
    method: "get",
    path: "/v1/me",
    tag: "Billing",
    summary: "Who I am: my quota, credits and overage",
    description:
      "Everything a signed-in person needs at a glance: the user, the quota now, the credits (balance, held, available) and whether credits pay for calls past the quota (and if not, why not). Reading it in a new billing month grants the tier's included credits for it.",
    auth: ["user"],
    responses: { 200: { description: "The user, quota, credits and overage.", json: Me } },
  },
  {
    id: "getMyWallet",
    method: "get",
    path: "/v1/me/wallet",
    tag: "Billing",
    summary: "My credits: grants and transactions",
    auth: ["user"],
    query: billing.WalletQuery,
    responses: { 200: { description: "The wallet.", json: billing.Wallet } },
  },
  {
    id: "updateMyBilling",
    method: "patch",
    path: "/v1/me/billing",
    tag: "Billing",
    summary: "Turn overage on or off; set the monthly cap",
    description:
      "With overage on, a call that needs more GPU time than the quota has left is split: the quota pays what is left and credits pay the rest (held at admission, settled at release), up to the monthly cap.",
    auth: ["user"],
    body: { schema: billing.BillingSettingsRequest },
    responses: { 200: { description: "The new settings.", json: billing.BillingSettings } },
    problems: ["overage_not_available"],
  },
  {
    id: "grantCredits",
    method: "post",
    path: "/v1/admin/users/{id}/credits",
    tag: "Billing",
    summary: "Add credits to a user's wallet",
    description:
      "`purchased` for a top-up a payment recorded (a payment provider's webhook handler calls this with the payment's id as `idempotency_key`), `promotional` for a gift. Idempotent by key.",
    auth: ["admin"],
    pathParams: [USER_REF],
    body: { schema: billing.CreditGrantRequest },
    responses: {
      200: { description: "The grant this key made before; nothing was added.", json: billing.WalletGrant },
      201: { description: "The new grant.", json: billing.WalletGrant },
    },
    problems: ["not_found", "idempotency_key_reused"],
  },
  {
    id: "getUserWallet",
    method: "get",
    path: "/v1/admin/users/{id}/wallet",
    tag: "Billing",
    summary: "A user's wallet",
    auth: ["admin"],
    pathParams: [USER_REF],
    query: billing.WalletQuery,
    responses: { 200: { description: "The wallet.", json: billing.Wallet } },
    problems: ["not_found"],
  },
  {
    id: "listUsage",
    method: "get",
    path: "/v1/usage",
    tag: "Usage",
    summary: "Usage records: one per ended lease",
    description:
      "A user sees the records charged to them and those of the apps they own; the admin sees all. `json` answers a page with `next_cursor`; `ndjson` (`application/x-ndjson`) and `csv` (`text/csv`, a header row with the record's fields, `identity` as `identity_kind`, `identity_id`, `tier`) stream the whole range.",
    auth: ["user", "admin"],
    query: usage.UsageQuery,
    responses: {
      200: {
        description: "A page of records (format `json`), or the whole range streamed (`ndjson`, `csv`).",
        json: usage.UsagePage,
        alsoText: ["application/x-ndjson", "text/csv"],
      },
    },
  },
  {
    id: "usageSummary",
    method: "get",
    path: "/v1/usage/summary",
    tag: "Usage",
    summary: "Usage totals by day, app, identity or tier",
    auth: ["user", "admin"],
    query: usage.UsageSummaryQuery,
    responses: { 200: { description: "The totals.", json: usage.UsageSummary } },
  },
];
