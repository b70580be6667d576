import * as z from "zod/mini";
import { Count, Identity, LeaseStatus, Seconds, Size, Time, TimeOrNull, describe, matching } from "./common.js";
import { Micros } from "./billing.js";
import { ProblemCodeSchema } from "./problem-objects.js";

export const PAYERS = ["quota", "credits", "quota_and_credits", "nothing"] as const;

/** What a call cost and which bucket paid (docs/billing.md): the money and, for people, its display. */
export const UsageCost = z.object({
  paid_by: describe(
    z.enum(PAYERS),
    "`quota`: the daily quota paid every charged second; `credits`: credits (overage) paid them all; `quota_and_credits`: both; `nothing`: nothing was charged (cancelled, timed out in the queue, or refunded in full).",
  ),
  amount_micros: describe(
    Micros,
    "Money spent: the credits of `overage_s` (= `charged_micros`); 0 when the quota paid.",
  ),
  currency: z.string(),
  display: describe(
    z.object({ amount: z.string(), gpu: z.string() }),
    '`amount`: the money for people (`"$0.02"`); `gpu`: the charged GPU seconds by bucket (`"12 s quota + 3 s credits"`).',
  ),
});
export type UsageCost = z.infer<typeof UsageCost>;

/** One ended lease, as the usage ledger keeps it (docs/billing.md): written once, in the transaction that ended it. */
export const UsageRecord = z.object({
  id: describe(z.string(), "The lease's id."),
  identity: Identity,
  app: describe(z.nullable(z.string()), "The app that asked, or null for a user's own script."),
  app_name: describe(
    z.nullable(z.string()),
    "The app's name (only its name, whoever owns it); null for a user's own script or an app since deleted.",
  ),
  node: z.nullable(z.string()),
  size: Size,
  status: describe(LeaseStatus, "How it ended: `released`, `expired`, `cancelled` or `failed`."),
  queued_at: Time,
  granted_at: TimeOrNull,
  ended_at: Time,
  held_ms: describe(Count, "Milliseconds on the GPU (0 if never granted)."),
  reserved_s: describe(Seconds, "`duration × cost` reserved at admission."),
  charged_s: describe(Seconds, "GPU seconds charged: `quota_s + overage_s`."),
  quota_s: describe(Seconds, "Of `charged_s`, what the daily quota paid."),
  overage_s: describe(Seconds, "Of `charged_s`, what credits paid (overage)."),
  charged_micros: describe(Micros, "Credits spent for `overage_s`."),
  refunded_s: describe(Seconds, "`reserved_s − charged_s`."),
  problem: describe(z.nullable(ProblemCodeSchema), "Why it ended without a grant or failed, e.g. `queue_timeout`."),
  currency: z.string(),
  cost: UsageCost,
});
export type UsageRecord = z.infer<typeof UsageRecord>;

export const USAGE_FORMATS = ["json", "ndjson", "csv"] as const;
export const USAGE_GROUPS = ["day", "app", "identity", "tier"] as const;

const Limit = z.string().check(matching(/^(?:[1-9][0-9]{0,2}|1000)$/, "a whole number from 1 to 1000"));
const IdentityFilter = z
  .string()
  .check(z.maxLength(200), matching(/^(user|ip|app):[^\s]+$/, "`<kind>:<id>`, e.g. `user:u_…`"));

const Range = {
  from: describe(z.optional(Time), "Records that ended at or after this instant (default: 30 days ago)."),
  to: describe(z.optional(Time), "Records that ended before this instant (default: now)."),
  app: describe(z.optional(z.string().check(z.maxLength(100))), "Only this app's (its id)."),
  identity: describe(z.optional(IdentityFilter), "Only this identity's, `<kind>:<id>`."),
};

/** `GET /v1/usage` query. */
export const UsageQuery = z.strictObject({
  ...Range,
  status: z.optional(LeaseStatus),
  format: describe(
    z.optional(z.enum(USAGE_FORMATS)),
    "`json` (default): pages with `next_cursor`; `ndjson` and `csv`: the whole range, streamed.",
  ),
  order: describe(
    z.optional(z.enum(["asc", "desc"])),
    "`asc` (default): oldest first; `desc`: newest first. Either way pages by keyset (`next_cursor`), so records that end meanwhile neither shift nor repeat a page.",
  ),
  cursor: describe(
    z.optional(z.string().check(z.maxLength(200))),
    "`next_cursor` of the previous page (of the same `order`).",
  ),
  limit: describe(z.optional(Limit), "Records per json page: 1 to 1000 (default 100)."),
});
export type UsageQuery = z.infer<typeof UsageQuery>;

export const UsagePage = z.object({
  records: describe(z.array(UsageRecord), "Oldest first, or newest first with `order=desc`."),
  next_cursor: describe(z.nullable(z.string()), "Pass as `cursor` for the next page; null on the last one."),
});
export type UsagePage = z.infer<typeof UsagePage>;

/** `GET /v1/usage/summary` query. */
export const UsageSummaryQuery = z.strictObject({
  ...Range,
  group_by: describe(z.optional(z.enum(USAGE_GROUPS)), "`day` (default, UTC), `app`, `identity` or `tier`."),
});
export type UsageSummaryQuery = z.infer<typeof UsageSummaryQuery>;

export const UsageTotals = z.object({
  calls: describe(Count, "Leases that ended."),
  granted: describe(Count, "Of them, how many held a GPU."),
  held_s: describe(Seconds, "GPU seconds held (wall time on a GPU)."),
  charged_s: Seconds,
  quota_s: Seconds,
  overage_s: Seconds,
  charged_micros: Micros,
  refusals: describe(
    z.partialRecord(ProblemCodeSchema, Count),
    "Leases that ended without a grant, by problem code (`queue_timeout`, `no_gpu_available`, …), and admissions refused (`quota_exceeded`, `credits_exhausted`, …) counted by the pool.",
  ),
});
export type UsageTotals = z.infer<typeof UsageTotals>;

export const UsageSummary = z.object({
  from: Time,
  to: Time,
  group_by: z.enum(USAGE_GROUPS),
  currency: z.string(),
  groups: describe(
    z.array(
      z.object({
        key: describe(z.string(), "The day (`YYYY-MM-DD`), app id, `<kind>:<id>` or tier."),
        name: describe(
          z.nullable(z.string()),
          "With `group_by=app`: the app's name (null for own scripts); else null.",
        ),
        ...UsageTotals.shape,
      }),
    ),
    "One per key, in key order.",
  ),
  total: UsageTotals,
});
export type UsageSummary = z.infer<typeof UsageSummary>;
