import type * as z from "zod/mini";
import * as admin from "../admin.js";
import * as diagnose from "../diagnose.js";
import * as health from "../health.js";
import * as identity from "../identity.js";
import * as leases from "../leases.js";
import * as nodes from "../nodes.js";
import { PoolView } from "../pool.js";
import type { ProblemCode } from "../problems.js";
import { Quota } from "../quota.js";

/** Who may call: the bearer credentials a route takes (`none`: no Authorization header). */
export type Principal = "app" | "user" | "admin" | "edge" | "node";

export const PRINCIPALS: Readonly<Record<Principal, { scheme: string; description: string }>> = {
  app: { scheme: "appKey", description: "An app key (`ak_…`, from `POST /v1/admin/apps`): leases are the app's, charged to the X-IP-Token's identity or else to the app." },
  user: { scheme: "userToken", description: "A user access token (`ut_…`, from `POST /v1/admin/users`): for a user's own scripts, charged to that user." },
  admin: { scheme: "adminToken", description: "The server's `GPUPOOL_ADMIN_TOKEN`. Without it set, admin routes answer 403 `admin_disabled`." },
  edge: { scheme: "edgeKey", description: "An edge key (`ek_…`, from `POST /v1/admin/edges`): the identity proxy's credential." },
  node: { scheme: "nodeKey", description: "A node key (`nk_…`, from `POST /v1/admin/nodes`): a node agent's credential." },
};

export interface HeaderParam {
  readonly name: string;
  readonly description: string;
}

export const IP_TOKEN_HEADER: HeaderParam = {
  name: "X-IP-Token",
  description:
    "The end user the call is for: a token the edge injected (or `POST /v1/ip-tokens` minted) for this app. Valid: its identity is charged. Absent: the app itself (or the user, for a user token). Present but invalid, expired, for another app, or sent with a user token: 401 `invalid_ip_token` with the reason — never a silent fallback. Send exactly one.",
};

const NODE_KEY_HEADER: HeaderParam = {
  name: "X-Gpupool-Node-Key",
  description: "Sent by a node agent asking on behalf of an app on its host: only that node's GPUs will do. Not a valid node key: 401.",
};

export type ResponseSpec =
  | { readonly description: string; readonly json: z.ZodMiniType; readonly headers?: readonly HeaderParam[] }
  | { readonly description: string; readonly events: Readonly<Record<string, z.ZodMiniType>> }
  | { readonly description: string; readonly text: string };

/** One route, written once: the OpenAPI document, the reference page and docs/wire.md come from here. */
export interface Operation {
  readonly id: string;
  readonly method: "get" | "post" | "patch" | "delete";
  /** OpenAPI path template (`{id}`). */
  readonly path: string;
  readonly tag: string;
  readonly summary: string;
  readonly description?: string;
  /** Credentials taken; empty for none. */
  readonly auth: readonly Principal[];
  readonly pathParams?: readonly HeaderParam[];
  readonly query?: z.ZodMiniObject;
  readonly headers?: readonly HeaderParam[];
  /** A JSON body; `optional`: an empty body (or none) is the same as `{}`. */
  readonly body?: { readonly schema: z.ZodMiniType; readonly optional?: boolean };
  /** Success answers by status. */
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  /**
   * The problem codes the route itself can answer with. Those of every route of its kind are
   * added by the document: `internal`; `storage_unavailable` unless `noStorage`; with `auth`,
   * `unauthorized` and `forbidden` (and `admin_disabled` for admin-only routes); with a body,
   * `invalid_request`, `payload_too_large` and `unsupported_media_type`; with a query,
   * `invalid_request`.
   */
  readonly problems?: readonly ProblemCode[];
  /** The route never touches the database. */
  readonly noStorage?: boolean;
}

const RETRY_AFTER: HeaderParam = { name: "Retry-After", description: "Seconds to wait before retrying." };
const LOCATION: HeaderParam = { name: "Location", description: "`/v1/leases/<id>`." };
const LEASE_ID: HeaderParam = { name: "id", description: "The lease id (`ls_…`). A lease is visible to the app that made it, the user it is charged to, and the admin." };
const USER_REF: HeaderParam = { name: "id", description: "The user's id (`u_…`) or name." };

/** Headers sent with problems of these codes (the rest of a route's problems carry none). */
export const PROBLEM_HEADERS: Partial<Record<ProblemCode, HeaderParam>> = {
  quota_exceeded: RETRY_AFTER,
  runs_exceeded: RETRY_AFTER,
  no_gpu_available: RETRY_AFTER,
  storage_unavailable: RETRY_AFTER,
};

export const OPERATIONS: readonly Operation[] = [
  {
    id: "createLease",
    method: "post",
    path: "/v1/leases",
    tag: "Leases",
    summary: "Request a GPU lease",
    description:
      "Admits the call against the charged identity's quota (reserving `duration × cost`) and grants a GPU slot now (201) or queues it (202: follow `GET /v1/leases/{id}/events`). Refusals say exactly why and what to do. Through a node's agent (`X-Gpupool-Node-Key`), only that node's GPUs are used. On a replica that does not lead (PostgreSQL), a lease that ended before its grant answers with the problem it ended with (e.g. 408 `queue_timeout`).",
    auth: ["app", "user"],
    headers: [IP_TOKEN_HEADER, NODE_KEY_HEADER],
    body: { schema: leases.LeaseRequest, optional: true },
    responses: {
      201: { description: "Granted now: an `active` lease with its `device` and `deadline`.", json: leases.Lease, headers: [LOCATION] },
      202: { description: "Waiting for a slot: a `queued` lease with `position`, `reason` and `eta_s`.", json: leases.Lease, headers: [LOCATION] },
    },
    problems: ["invalid_ip_token", "duration_too_long", "quota_exceeded", "runs_exceeded", "no_gpu_available", "queue_timeout"],
  },
  {
    id: "listLeases",
    method: "get",
    path: "/v1/leases",
    tag: "Leases",
    summary: "List leases",
    description: "An app key sees its own leases; a user token, the leases charged to the user; the admin, all. Newest first.",
    auth: ["app", "user", "admin"],
    query: leases.LeaseListQuery,
    responses: { 200: { description: "The leases (`quota` null in each).", json: leases.LeaseList } },
  },
  {
    id: "getLease",
    method: "get",
    path: "/v1/leases/{id}",
    tag: "Leases",
    summary: "A lease's current state",
    auth: ["app", "user", "admin"],
    pathParams: [LEASE_ID],
    responses: { 200: { description: "The lease, with the charged identity's quota.", json: leases.Lease } },
    problems: ["not_found"],
  },
  {
    id: "leaseEvents",
    method: "get",
    path: "/v1/leases/{id}/events",
    tag: "Leases",
    summary: "Follow a lease (Server-Sent Events)",
    description:
      "Sends the current state first: `queued` while it waits (again each time its place or reason changes), then exactly one of `granted`, `failed` or `ended`, and closes. A comment line `: ping` keeps the connection alive every 15 s. A server that shuts down closes the stream; reconnect (the state is sent again).",
    auth: ["app", "user", "admin"],
    pathParams: [LEASE_ID],
    responses: {
      200: {
        description: "`text/event-stream`: each event is `event: <name>` and one `data:` line of JSON.",
        events: { queued: leases.QueuedEvent, granted: leases.GrantedEvent, failed: leases.FailedEvent, ended: leases.EndedEvent },
      },
    },
    problems: ["not_found"],
  },
  {
    id: "releaseLease",
    method: "post",
    path: "/v1/leases/{id}/release",
    tag: "Leases",
    summary: "Release a lease",
    description:
      "Ends an active lease: it is charged the time held (rounded up to whole seconds × cost), the rest of the reservation is refunded. Releasing a queued lease cancels it and refunds everything. Idempotent: releasing again returns the same result. A user token may release only its own leases made without an app.",
    auth: ["app", "user", "admin"],
    pathParams: [LEASE_ID],
    body: { schema: leases.ReleaseRequest, optional: true },
    responses: { 200: { description: "What was charged and refunded, and the quota after it.", json: leases.ReleaseResult } },
    problems: ["not_found"],
  },
  {
    id: "cancelLease",
    method: "delete",
    path: "/v1/leases/{id}",
    tag: "Leases",
    summary: "Cancel (queued) or release (active) a lease",
    description: "The same as `POST /v1/leases/{id}/release` with `failed: false`.",
    auth: ["app", "user", "admin"],
    pathParams: [LEASE_ID],
    responses: { 200: { description: "What was charged and refunded, and the quota after it.", json: leases.ReleaseResult } },
    problems: ["not_found"],
  },
  {
    id: "getQuota",
    method: "get",
    path: "/v1/quota",
    tag: "Quota",
    summary: "Quota of the charged identity",
    description: "For a user token: that user. For an app key: the X-IP-Token's identity, or the app itself without one.",
    auth: ["app", "user"],
    headers: [IP_TOKEN_HEADER],
    responses: { 200: { description: "The quota object.", json: Quota } },
    problems: ["invalid_ip_token"],
  },
  {
    id: "diagnose",
    method: "get",
    path: "/v1/diagnose",
    tag: "Quota",
    summary: "Explain what a lease request would be charged and get",
    description:
      "Takes the same headers as `POST /v1/leases` and reserves nothing: which identity the request is charged to and why (each header seen, each fallback taken), the quota state, which billing buckets apply, the verdict a lease would get now, and ranked likely causes with fixes. A refused X-IP-Token is reported in the verdict, not as a 401.",
    auth: ["app", "user"],
    headers: [IP_TOKEN_HEADER],
    query: diagnose.DiagnoseQuery,
    responses: { 200: { description: "The diagnosis.", json: diagnose.Diagnosis } },
  },
  {
    id: "mintIpToken",
    method: "post",
    path: "/v1/ip-tokens",
    tag: "Identity",
    summary: "Mint an X-IP-Token",
    description: "The edge calls this for every proxied request. Name exactly one viewer: `user` or `ip`; an unknown app, user or address is a 400.",
    auth: ["edge", "admin"],
    body: { schema: identity.IpTokenRequest },
    responses: { 201: { description: "The token.", json: identity.IpToken } },
  },
  {
    id: "reissueIpToken",
    method: "post",
    path: "/v1/ip-tokens/reissue",
    tag: "Identity",
    summary: "Re-issue an X-IP-Token for another app",
    description:
      "App-to-app calls: the edge presents the token the calling app forwarded; if this pool signed it and it has not expired (for any app), the same subject gets a token for the app called, so the end user — not the calling app — is charged.",
    auth: ["edge"],
    body: { schema: identity.IpTokenReissueRequest },
    responses: { 201: { description: "A token for the same subject and the app called.", json: identity.IpToken } },
    problems: ["invalid_ip_token"],
  },
  {
    id: "jwks",
    method: "get",
    path: "/.well-known/jwks.json",
    tag: "Identity",
    summary: "Public keys of X-IP-Tokens",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "JWKS (`Cache-Control: public, max-age=300`).", json: identity.Jwks } },
  },
  {
    id: "openSession",
    method: "post",
    path: "/v1/sessions",
    tag: "Sessions",
    summary: "Open a browser session (edge sign-in)",
    description: "Sessions are kept by the control plane so they survive edge restarts and can be revoked centrally.",
    auth: ["edge"],
    body: { schema: identity.SessionOpenRequest },
    responses: { 201: { description: "The session.", json: identity.SessionOpened } },
    problems: ["invalid_credentials"],
  },
  {
    id: "resolveSession",
    method: "post",
    path: "/v1/sessions/resolve",
    tag: "Sessions",
    summary: "Who a session belongs to",
    auth: ["edge"],
    body: { schema: identity.SessionRequest },
    responses: { 200: { description: "The session's user.", json: identity.SessionResolved } },
    problems: ["invalid_session"],
  },
  {
    id: "revokeSession",
    method: "post",
    path: "/v1/sessions/revoke",
    tag: "Sessions",
    summary: "Sign a session out",
    auth: ["edge"],
    body: { schema: identity.SessionRequest },
    responses: { 200: { description: "Whether a session was revoked.", json: identity.SessionRevoked } },
  },
  {
    id: "revokeUserSessions",
    method: "delete",
    path: "/v1/admin/users/{id}/sessions",
    tag: "Sessions",
    summary: "Sign a user out everywhere",
    auth: ["admin"],
    pathParams: [USER_REF],
    responses: { 200: { description: "How many sessions were revoked.", json: admin.UserSessionsRevoked } },
    problems: ["not_found"],
  },
  {
    id: "createUser",
    method: "post",
    path: "/v1/admin/users",
    tag: "Admin",
    summary: "Create a user",
    auth: ["admin"],
    body: { schema: admin.CreateUserRequest },
    responses: { 201: { description: "The user and their token (shown only this once).", json: admin.CreatedUser } },
    problems: ["conflict"],
  },
  {
    id: "listUsers",
    method: "get",
    path: "/v1/admin/users",
    tag: "Admin",
    summary: "List users",
    auth: ["admin"],
    responses: { 200: { description: "Every user.", json: admin.UserList } },
  },
  {
    id: "getUser",
    method: "get",
    path: "/v1/admin/users/{id}",
    tag: "Admin",
    summary: "A user and their quota",
    auth: ["admin"],
    pathParams: [USER_REF],
    responses: { 200: { description: "The user with their quota now.", json: admin.UserWithQuota } },
    problems: ["not_found"],
  },
  {
    id: "updateUser",
    method: "patch",
    path: "/v1/admin/users/{id}",
    tag: "Admin",
    summary: "Change a user's tier, quota override or bonus",
    description: "A changed tier applies to the user's token at once.",
    auth: ["admin"],
    pathParams: [USER_REF],
    body: { schema: admin.UpdateUserRequest },
    responses: { 200: { description: "The user with their quota now.", json: admin.UserWithQuota } },
    problems: ["not_found"],
  },
  {
    id: "createApp",
    method: "post",
    path: "/v1/admin/apps",
    tag: "Admin",
    summary: "Register an app",
    auth: ["admin"],
    body: { schema: admin.CreateAppRequest },
    responses: { 201: { description: "The app and its key (shown only this once).", json: admin.CreatedApp } },
    problems: ["conflict"],
  },
  {
    id: "listApps",
    method: "get",
    path: "/v1/admin/apps",
    tag: "Admin",
    summary: "List apps",
    auth: ["admin"],
    responses: { 200: { description: "Every app.", json: admin.AppList } },
  },
  {
    id: "createNode",
    method: "post",
    path: "/v1/admin/nodes",
    tag: "Admin",
    summary: "Create a node (a GPU host's agent credential)",
    auth: ["admin"],
    body: { schema: admin.CreateKeyRequest },
    responses: { 201: { description: "The node and its key (shown only this once).", json: admin.CreatedKey } },
    problems: ["conflict"],
  },
  {
    id: "createEdge",
    method: "post",
    path: "/v1/admin/edges",
    tag: "Admin",
    summary: "Create an edge (an identity proxy's credential)",
    auth: ["admin"],
    body: { schema: admin.CreateKeyRequest },
    responses: { 201: { description: "The edge and its key (shown only this once).", json: admin.CreatedKey } },
    problems: ["conflict"],
  },
  {
    id: "pool",
    method: "get",
    path: "/v1/admin/pool",
    tag: "Admin",
    summary: "The pool: nodes, GPUs and their slots, active leases, the queue",
    auth: ["admin"],
    responses: { 200: { description: "The pool view.", json: PoolView } },
  },
  {
    id: "registerNode",
    method: "post",
    path: "/v1/nodes/register",
    tag: "Nodes",
    summary: "Register a node's GPUs (node agent)",
    description:
      "Replaces what the node registered before. 409 `conflict` when the node name is also one of the server's configured nodes, or another agent holds the node (`reason: node_in_use`); 400 when a device index or UUID is listed twice.",
    auth: ["node"],
    body: { schema: nodes.NodeRegisterRequest },
    responses: { 200: { description: "The registration and the heartbeat timing.", json: nodes.NodeRegistered } },
    problems: ["conflict"],
  },
  {
    id: "heartbeat",
    method: "post",
    path: "/v1/nodes/heartbeat",
    tag: "Nodes",
    summary: "Heartbeat (node agent)",
    description: "A node that stops heartbeating for `heartbeat_timeout_s` has its leases failed and its GPUs removed; it must register again (409 `node_not_registered`).",
    auth: ["node"],
    body: { schema: nodes.HeartbeatRequest, optional: true },
    responses: { 200: { description: "The heartbeat timing.", json: nodes.Heartbeat } },
    problems: ["node_not_registered"],
  },
  {
    id: "healthz",
    method: "get",
    path: "/healthz",
    tag: "Health",
    summary: "Liveness",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "The process answers.", json: health.Health } },
  },
  {
    id: "readyz",
    method: "get",
    path: "/readyz",
    tag: "Health",
    summary: "Readiness",
    description: "503 `storage_unavailable` (without `reason`) when the database does not answer.",
    auth: [],
    responses: { 200: { description: "Ready.", json: health.Readiness } },
  },
  {
    id: "metrics",
    method: "get",
    path: "/metrics",
    tag: "Health",
    summary: "Prometheus metrics",
    description: "Queue depth, grants, denials by code, slot utilization, lease durations, ledger latency.",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "Prometheus text exposition format.", text: "text/plain" } },
  },
];
