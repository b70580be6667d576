import * as z from "zod/mini";
import { Credits, Overage } from "./billing.js";
import { Count, Identity, Seconds, TimeOrNull, describe } from "./common.js";

/** GPU-time quota state of one identity for its current window. */
export const Quota = z.object({
  identity: Identity,
  quota: describe(Seconds, "GPU seconds per window: the tier's (or the user's override), plus any bonus."),
  used: describe(Seconds, "Charged in the current window."),
  reserved: describe(
    Seconds,
    "Held by the identity's calls in flight (queued or active); the unused part is refunded at release.",
  ),
  left: describe(Seconds, "`quota − used − reserved`."),
  bonus: describe(Seconds, "Seconds an admin added to the current window only."),
  window: describe(
    Seconds,
    "Length of a window (default 86400). A window starts at the identity's first grant, not at midnight.",
  ),
  window_started_at: describe(TimeOrNull, "Null before the identity's first grant."),
  resets_at: describe(TimeOrNull, "`window_started_at + window`; null before the first grant."),
  priority: describe(z.int(), "The tier's queue priority class (higher goes first)."),
  max_duration: describe(Seconds, "The tier's longest single call."),
  runs: describe(Count, "GPU calls granted in this window."),
  max_runs: describe(z.nullable(Count), "The tier's daily runs limit, or null for none."),
  credits: describe(
    z.optional(z.nullable(Credits)),
    "The user's credits (docs/billing.md); null for an identity that has no wallet (an IP address or an app).",
  ),
  overage: describe(
    z.optional(Overage),
    "Whether credits pay for calls past the quota, and if not, why not. Always sent (absent only from servers older than billing).",
  ),
});
export type Quota = z.infer<typeof Quota>;
