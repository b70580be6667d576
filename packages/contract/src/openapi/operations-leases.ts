import * as diagnose from "../diagnose.js";
import * as leases from "../leases.js";
import { Quota } from "../quota.js";
import { IDEMPOTENCY_KEY_HEADER, IP_TOKEN_HEADER, LEASE_ID, LOCATION, NODE_KEY_HEADER } from "./operation-types.js";
import type { Operation } from "./operation-types.js";

/** Leases, quota and diagnose. */
export const LEASE_OPERATIONS: readonly Operation[] = [
  {
    id: "createLease",
    method: "post",
    path: "/v1/leases",
    tag: "Leases",
    summary: "Request a GPU lease",
    description:
      "Admits the call against the charged identity's quota (reserving `duration × cost`) and grants a GPU slot now (201) or queues it (202: follow `GET /v1/leases/{id}/events`). Refusals say exactly why and what to do. Through a node's agent (`X-Gpupool-Node-Key`), only that node's GPUs are used. On a replica that does not lead (PostgreSQL), a lease that ended before its grant answers with the problem it ended with (e.g. 408 `queue_timeout`).",
    auth: ["app", "user"],
    headers: [IP_TOKEN_HEADER, NODE_KEY_HEADER, IDEMPOTENCY_KEY_HEADER],
    body: { schema: leases.LeaseRequest, optional: true },
    responses: {
      200: {
        description:
          "Only for a retry with an `Idempotency-Key`: the lease the key's first request made ended without a GPU (cancelled, or failed in the queue: its `problem` says why).",
        json: leases.Lease,
        headers: [LOCATION],
      },
      201: {
        description: "Granted now: an `active` lease with its `device` and `deadline`.",
        json: leases.Lease,
        headers: [LOCATION],
      },
      202: {
        description: "Waiting for a slot: a `queued` lease with `position`, `reason` and `eta_s`.",
        json: leases.Lease,
        headers: [LOCATION],
      },
    },
    problems: [
      "invalid_ip_token",
      "duration_too_long",
      "quota_exceeded",
      "credits_exhausted",
      "spend_cap_reached",
      "runs_exceeded",
      "no_gpu_available",
      "queue_timeout",
      "idempotency_key_reused",
    ],
  },
  {
    id: "listLeases",
    method: "get",
    path: "/v1/leases",
    tag: "Leases",
    summary: "List leases",
    description:
      "An app key sees its own leases; a user token, the leases charged to the user; the admin, all. Newest first, a page at a time: pass `next_cursor` as `cursor` for the next (older) page.",
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
      "Sends the current state first: `queued` while it waits (again when its place or reason changed: batched, at most once a second, and less often — up to every 8 s — while the queue keeps moving), then exactly one of `granted`, `failed` or `ended`, and closes. A comment line `: ping` keeps the connection alive every 15 s. A server that shuts down closes the stream; reconnect (the state is sent again).",
    auth: ["app", "user", "admin"],
    pathParams: [LEASE_ID],
    responses: {
      200: {
        description: "`text/event-stream`: each event is `event: <name>` and one `data:` line of JSON.",
        events: {
          queued: leases.QueuedEvent,
          granted: leases.GrantedEvent,
          failed: leases.FailedEvent,
          ended: leases.EndedEvent,
        },
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
    responses: {
      200: { description: "What was charged and refunded, and the quota after it.", json: leases.ReleaseResult },
    },
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
    responses: {
      200: { description: "What was charged and refunded, and the quota after it.", json: leases.ReleaseResult },
    },
    problems: ["not_found"],
  },
  {
    id: "getQuota",
    method: "get",
    path: "/v1/quota",
    tag: "Quota",
    summary: "Quota of the charged identity",
    description:
      "For a user token: that user. For an app key: the X-IP-Token's identity, or the app itself without one.",
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
];
