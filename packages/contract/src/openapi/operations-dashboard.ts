import { Me } from "../me.js";
import * as dashboard from "../dashboard.js";
import { PoolView } from "../pool.js";
import type { Operation } from "./operation-types.js";

/** The media types of the dashboard's built files, by their extension. */
const FILE_TYPES = [
  "text/javascript",
  "text/css",
  "application/json",
  "image/svg+xml",
  "image/png",
  "image/jpeg",
  "image/x-icon",
  "image/webp",
  "font/woff2",
  "font/woff",
  "text/plain",
  "application/manifest+json",
  "text/html",
  "application/octet-stream",
] as const;

/** The dashboard's pages (docs/dashboard.md): the single-page app and its assets. */
export const DASHBOARD_PAGE_OPERATIONS: readonly Operation[] = [
  {
    id: "dashboardPage",
    method: "get",
    path: "/",
    tag: "Dashboard",
    summary: "The dashboard (a single-page app)",
    description:
      "The built page (`npm run build`), `Cache-Control: no-cache`, under a strict Content-Security-Policy, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`. Any other path outside `/v1/` asked for as text/html gets the same page (the app routes in the browser). Before the dashboard is built: a short page saying so.",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "The page.", text: "text/html" } },
  },
  {
    id: "dashboardAsset",
    method: "get",
    path: "/assets/{file}",
    tag: "Dashboard",
    summary: "The dashboard's scripts, styles and fonts",
    description: "Names carry a content hash: `Cache-Control: public, max-age=31536000, immutable`.",
    auth: [],
    noStorage: true,
    pathParams: [{ name: "file", description: "The asset's file name, as the page names it." }],
    responses: {
      200: {
        description: "The file, typed by its extension.",
        text: FILE_TYPES,
      },
    },
    problems: ["not_found"],
  },
  {
    id: "dashboardFile",
    method: "get",
    path: "/{file}",
    tag: "Dashboard",
    summary: "A file the dashboard's build put at its root (an icon, a manifest)",
    description:
      "`Cache-Control: no-cache`. A name that is not such a file, asked for as text/html, gets the dashboard's page (`GET /`); otherwise a 404 problem.",
    auth: [],
    noStorage: true,
    pathParams: [{ name: "file", description: "The file's name." }],
    responses: { 200: { description: "The file, typed by its extension.", text: FILE_TYPES } },
    problems: ["not_found"],
  },
];

/** The dashboard's session (a cookie) and its one-time sign-in links. */
export const DASHBOARD_SESSION_OPERATIONS: readonly Operation[] = [
  {
    id: "openDashboardSession",
    method: "post",
    path: "/v1/dashboard/session",
    tag: "Dashboard",
    summary: "Sign in to the dashboard",
    description:
      "Trades a user token, the admin token or a one-time sign-in code for a session: `Set-Cookie: gpupool_dashboard=<secret>; HttpOnly; SameSite=Strict; Path=/` (`__Host-gpupool_dashboard` and `Secure` over https). Only a hash of the secret is stored; the session expires (`dashboard.session_ttl`, default 12 h) and can be revoked. The cookie then stands for that user (or the operator) on every `/v1` route a user token (or the admin token) may call; requests that change something must also send `X-CSRF-Token`.",
    auth: [],
    body: { schema: dashboard.DashboardSignIn },
    responses: {
      201: { description: "The session (the secret is only in the cookie).", json: dashboard.DashboardSession },
    },
    problems: ["invalid_credentials", "csrf_failed"],
  },
  {
    id: "getDashboardSession",
    method: "get",
    path: "/v1/dashboard/session",
    tag: "Dashboard",
    summary: "The dashboard session of this browser",
    description:
      "So a reloaded page learns who is signed in and its CSRF token. No cookie, or an expired or revoked one: 401.",
    auth: [],
    responses: { 200: { description: "The session.", json: dashboard.DashboardSession } },
    problems: ["invalid_session"],
  },
  {
    id: "closeDashboardSession",
    method: "delete",
    path: "/v1/dashboard/session",
    tag: "Dashboard",
    summary: "Sign out of the dashboard",
    description:
      "Revokes the session in the store (the cookie is no good anywhere after) and clears the cookie. Needs `X-CSRF-Token`. Without a live session: 204 all the same.",
    auth: [],
    responses: { 204: { description: "Signed out; the cookie is cleared.", empty: true } },
    problems: ["csrf_failed"],
  },
  {
    id: "createDashboardLink",
    method: "post",
    path: "/v1/dashboard/links",
    tag: "Dashboard",
    summary: "A one-time sign-in link (`gpupool dashboard`)",
    description:
      "For the caller — a user token's user, or the operator for the admin token. The code is in the URL's fragment, which browsers never send; it is stored hashed, works once, and expires in 5 minutes.",
    auth: ["user", "admin"],
    body: { schema: dashboard.DashboardLinkRequest, optional: true },
    responses: { 201: { description: "The link.", json: dashboard.DashboardLink } },
  },
];

/** What the dashboard's views read beyond the rest of the API: live streams, the queue, refusals, the audit log, app stats. */
export const DASHBOARD_READ_OPERATIONS: readonly Operation[] = [
  {
    id: "meEvents",
    method: "get",
    path: "/v1/me/events",
    tag: "Dashboard",
    summary: "My quota, credits and overage, live",
    description:
      "Server-Sent Events: `me` (the body of `GET /v1/me`) on connect and within a second of a change (a call granted, ended or refused, credits granted, settings changed), on any replica. Comments keep the stream open.",
    auth: ["user"],
    responses: { 200: { description: "The stream.", events: { me: Me } } },
  },
  {
    id: "poolEvents",
    method: "get",
    path: "/v1/admin/pool/events",
    tag: "Dashboard",
    summary: "The pool and its queue, live",
    description:
      "Server-Sent Events: `pool` (the body of `GET /v1/admin/pool`: the first 200 in line, every queued call counted) and `queue` (of `GET /v1/admin/queue`), on connect and within a second of a change, at most about four a second, on any replica.",
    auth: ["admin"],
    responses: { 200: { description: "The stream.", events: { pool: PoolView, queue: dashboard.QueueView } } },
  },
  {
    id: "getQueue",
    method: "get",
    path: "/v1/admin/queue",
    tag: "Dashboard",
    summary: "The queue: depth by tier, oldest wait, waits over the last hour",
    auth: ["admin"],
    responses: { 200: { description: "The queue now.", json: dashboard.QueueView } },
  },
  {
    id: "getQueueEntries",
    method: "get",
    path: "/v1/admin/queue/entries",
    tag: "Dashboard",
    summary: "The queue's calls in line order, a page at a time",
    description:
      "The pool view and its `pool` event list only the first 200 in line (with every call counted in `queued`); this pages through all of them.",
    auth: ["admin"],
    query: dashboard.QueueEntriesQuery,
    responses: { 200: { description: "A page of the line.", json: dashboard.QueueEntriesPage } },
  },
  {
    id: "getRefusals",
    method: "get",
    path: "/v1/admin/refusals",
    tag: "Dashboard",
    summary: "Refusals by code, per hour",
    description:
      "Calls refused at admission (`quota_exceeded`, `no_gpu_available`, …) and calls that ended without a GPU (`queue_timeout`), per hour.",
    auth: ["admin"],
    query: dashboard.RefusalsQuery,
    responses: { 200: { description: "Per hour, oldest first.", json: dashboard.RefusalsView } },
  },
  {
    id: "getAudit",
    method: "get",
    path: "/v1/admin/audit",
    tag: "Dashboard",
    summary: "The audit log of operator actions",
    description: "Every change of a tier, quota override or bonus, credit grant and sessions revoked, with who did it.",
    auth: ["admin"],
    query: dashboard.AuditQuery,
    responses: { 200: { description: "Newest first.", json: dashboard.AuditPage } },
  },
  {
    id: "getAppStats",
    method: "get",
    path: "/v1/apps/stats",
    tag: "Dashboard",
    summary: "Per app: calls, GPU time, refusals, waits, and the duration advisor",
    description:
      "For a user, the apps they own; for the admin, every app. `suggested_duration_s` is the p95 of the time calls actually held a GPU, rounded up to 5 s: asking for that instead of more is what lets more visitors in.",
    auth: ["user", "admin"],
    query: dashboard.AppStatsQuery,
    responses: { 200: { description: "One entry per app.", json: dashboard.AppStatsList } },
  },
];
