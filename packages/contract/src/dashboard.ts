import * as z from "zod/mini";
import { Count, Seconds, Time, describe, matching } from "./common.js";
import { SessionUser } from "./identity.js";
import { PoolQueueEntry } from "./pool.js";
import { ProblemCodeSchema } from "./problem-objects.js";

// The dashboard's own routes (docs/dashboard.md): its browser session, sign-in links, and the reads the
// operator's and app owners' pages need beyond the rest of the API.

const Secret = z.string().check(z.minLength(1), z.maxLength(512));

/** `POST /v1/dashboard/session`: exactly one of `token` and `code`. */
export const DashboardSignIn = z
  .strictObject({
    token: describe(z.optional(Secret), "A user token (`gpu_u_…`) or the admin token, pasted once."),
    code: describe(
      z.optional(Secret),
      "A one-time sign-in code (from `gpupool dashboard`: the link's `#signin=` part).",
    ),
  })
  .check(z.meta({ minProperties: 1, maxProperties: 1 }));
export type DashboardSignIn = z.infer<typeof DashboardSignIn>;

export const DASHBOARD_ROLES = ["user", "admin"] as const;

/** The signed-in dashboard session (the secret itself is only in the HttpOnly cookie). */
export const DashboardSession = z.object({
  role: describe(z.enum(DASHBOARD_ROLES), "`user`: a user's pages; `admin`: the operator's."),
  user: describe(z.optional(SessionUser), "The user signed in (absent for the operator)."),
  csrf_token: describe(
    z.string(),
    "Send it as `X-CSRF-Token` on every request that changes something (any method but GET, HEAD, OPTIONS).",
  ),
  expires_at: Time,
});
export type DashboardSession = z.infer<typeof DashboardSession>;

/** `POST /v1/dashboard/links` takes no fields. */
export const DashboardLinkRequest = z.strictObject({});
export type DashboardLinkRequest = z.infer<typeof DashboardLinkRequest>;

/** `POST /v1/dashboard/links`: a one-time sign-in link for the caller (user or admin). */
export const DashboardLink = z.object({
  url: describe(
    z.string(),
    "`<server>/#signin=<code>`: the code is in the fragment (never sent to a server); used once, within 5 minutes.",
  ),
  expires_at: Time,
});
export type DashboardLink = z.infer<typeof DashboardLink>;

const Limit = z.string().check(matching(/^(?:[1-9][0-9]{0,2}|1000)$/, "a whole number from 1 to 1000"));
const Cursor = describe(z.optional(z.string().check(z.maxLength(200))), "`next_cursor` of the previous page.");

/** `GET /v1/admin/users` query: a page of users by name (the first without `cursor`). */
export const UserListQuery = z.strictObject({
  q: describe(
    z.optional(z.string().check(z.maxLength(100))),
    "Only users whose name or id contains this (case-insensitive).",
  ),
  limit: describe(z.optional(Limit), "Users per page: 1 to 1000 (default 100)."),
  cursor: Cursor,
});
export type UserListQuery = z.infer<typeof UserListQuery>;

/** `GET /v1/admin/apps` query: a page of apps by name (the first without `cursor`). */
export const AppListQuery = z.strictObject({
  limit: describe(z.optional(Limit), "Apps per page: 1 to 1000 (default 100)."),
  cursor: Cursor,
});
export type AppListQuery = z.infer<typeof AppListQuery>;

export const QueueTier = z.object({
  tier: z.string(),
  depth: describe(Count, "Calls of this tier waiting now."),
  oldest_wait_s: describe(z.nullable(Seconds), "How long the oldest of them has waited; null when none waits."),
});
export type QueueTier = z.infer<typeof QueueTier>;

/** `GET /v1/admin/queue` (also the `queue` event of `GET /v1/admin/pool/events`). */
export const QueueView = z.object({
  leader: describe(z.boolean(), "Whether this replica leads (else the queue is read from the database)."),
  depth: describe(Count, "Calls waiting now."),
  oldest_wait_s: describe(z.nullable(Seconds), "The longest wait now; null when none waits."),
  tiers: describe(z.array(QueueTier), "Every configured tier, by name."),
  last_hour: z.object({
    granted: describe(Count, "Calls granted in the last hour that have ended (the waits counted)."),
    wait_p50_s: describe(z.nullable(Seconds), "Median wait from arrival to grant; null without calls."),
    wait_p95_s: describe(z.nullable(Seconds), "95th percentile of the same."),
  }),
});
export type QueueView = z.infer<typeof QueueView>;

/** `GET /v1/admin/queue/entries` query. */
export const QueueEntriesQuery = z.strictObject({
  limit: describe(z.optional(Limit), "Entries per page: 1 to 1000 (default 200)."),
  cursor: Cursor,
});
export type QueueEntriesQuery = z.infer<typeof QueueEntriesQuery>;

/** `GET /v1/admin/queue/entries`: the queue in line order, a page at a time. */
export const QueueEntriesPage = z.object({
  total: describe(Count, "Calls waiting now."),
  entries: describe(
    z.array(PoolQueueEntry),
    "In line order (the leader's priority order; arrival order on a replica that does not lead).",
  ),
  next_cursor: describe(
    z.nullable(z.string()),
    "Pass as `cursor` for the entries after the last position listed. The line moves: a call granted between two pages moves everyone behind it one place forward, so a page may skip or repeat a call that moved. Null on the last page.",
  ),
});
export type QueueEntriesPage = z.infer<typeof QueueEntriesPage>;

export const RefusalsQuery = z.strictObject({
  hours: describe(
    z.optional(
      z.string().check(matching(/^(?:[1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])$/, "a whole number from 1 to 168")),
    ),
    "How many hours back (default 24).",
  ),
});
export type RefusalsQuery = z.infer<typeof RefusalsQuery>;

/** `GET /v1/admin/refusals`: calls refused or ended without a GPU, by code, per hour. */
export const RefusalsView = z.object({
  from: Time,
  to: Time,
  hours: describe(
    z.array(
      z.object({
        hour: describe(Time, "The hour's start (UTC)."),
        refusals: describe(z.partialRecord(ProblemCodeSchema, Count), "By problem code."),
      }),
    ),
    "Every hour of the range, oldest first (empty hours too).",
  ),
  total: z.partialRecord(ProblemCodeSchema, Count),
});
export type RefusalsView = z.infer<typeof RefusalsView>;

export const AuditQuery = z.strictObject({
  limit: describe(z.optional(Limit), "Entries per page: 1 to 1000 (default 100)."),
  cursor: Cursor,
});
export type AuditQuery = z.infer<typeof AuditQuery>;

export const AuditEntry = z.object({
  id: z.string(),
  at: Time,
  action: describe(
    z.string(),
    "`user.update` (tier, quota override, bonus), `credits.grant`, `sessions.revoke`, `user.create`, `app.create`, `app.update` (max concurrency).",
  ),
  target: describe(z.string(), "The user's (or app's) id."),
  actor: describe(z.enum(["admin_token", "dashboard"]), "How the operator was signed in."),
  detail: describe(z.record(z.string(), z.unknown()), "What changed (never a secret)."),
});
export type AuditEntry = z.infer<typeof AuditEntry>;

export const AuditPage = z.object({
  entries: describe(z.array(AuditEntry), "Newest first."),
  next_cursor: describe(z.nullable(z.string()), "Pass as `cursor` for the next page; null on the last one."),
});
export type AuditPage = z.infer<typeof AuditPage>;

const Percentiles = z.object({
  p50_s: z.nullable(Seconds),
  p95_s: z.nullable(Seconds),
});

export const AppStatsQuery = z.strictObject({
  days: describe(
    z.optional(z.string().check(matching(/^(?:[1-9]|[1-8][0-9]|90)$/, "a whole number from 1 to 90"))),
    "How many days back (default 30).",
  ),
});
export type AppStatsQuery = z.infer<typeof AppStatsQuery>;

export const AppStats = z.object({
  app: describe(z.string(), "The app's id."),
  name: z.string(),
  owner: describe(z.string(), "The owning user's id."),
  calls: describe(Count, "Calls that ended in the range."),
  granted: describe(Count, "Of them, how many held a GPU."),
  gpu_s: describe(Seconds, "GPU seconds held."),
  charged_s: Seconds,
  refusals: describe(z.partialRecord(ProblemCodeSchema, Count), "Refused or ended without a GPU, by code."),
  wait: describe(Percentiles, "Arrival to grant, of the granted calls."),
  requested: describe(Percentiles, "The duration the calls asked for (granted calls)."),
  held: describe(Percentiles, "How long they actually held the GPU."),
  suggested_duration_s: describe(
    z.nullable(z.int()),
    "The p95 of actual use rounded up to 5 s: asking for this instead of more lets more visitors in. Null without granted calls.",
  ),
});
export type AppStats = z.infer<typeof AppStats>;

export const AppStatsList = z.object({
  from: Time,
  to: Time,
  apps: describe(z.array(AppStats), "The caller's apps (the admin: every app), by name."),
});
export type AppStatsList = z.infer<typeof AppStatsList>;
