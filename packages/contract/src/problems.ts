/**
 * Every error a caller can cause has a stable code. The wire owns them: the HTTP status of each,
 * its title and when it is sent live here, in tables keyed by the code, so adding a code without
 * deciding its status, title and meaning does not compile. (No zod here: `@gpupool/core` takes
 * the table from this file alone.) The extra fields of each code are in problem-objects.ts.
 */
export const PROBLEM_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  invalid_ip_token: 401,
  invalid_session: 401,
  invalid_credentials: 401,
  credits_exhausted: 402,
  spend_cap_reached: 402,
  forbidden: 403,
  admin_disabled: 403,
  csrf_failed: 403,
  not_found: 404,
  queue_timeout: 408,
  request_timeout: 408,
  conflict: 409,
  idempotency_key_reused: 409,
  lease_not_active: 409,
  node_not_registered: 409,
  overage_not_available: 409,
  payload_too_large: 413,
  uri_too_long: 414,
  unsupported_media_type: 415,
  duration_too_long: 422,
  quota_exceeded: 429,
  runs_exceeded: 429,
  headers_too_large: 431,
  internal: 500,
  upstream_unavailable: 502,
  no_gpu_available: 503,
  storage_unavailable: 503,
  control_plane_unavailable: 503,
} as const satisfies Record<string, number>;

export type ProblemCode = keyof typeof PROBLEM_STATUS;

/** Every code, in the table's order (by status). */
export const PROBLEM_CODES = Object.keys(PROBLEM_STATUS) as readonly ProblemCode[];

export const PROBLEM_TITLES: Readonly<Record<ProblemCode, string>> = {
  invalid_request: "Invalid request",
  unauthorized: "Not authenticated",
  invalid_ip_token: "Invalid X-IP-Token",
  invalid_session: "Invalid session",
  invalid_credentials: "Invalid credentials",
  credits_exhausted: "Not enough credits",
  spend_cap_reached: "Monthly spend cap reached",
  forbidden: "Not allowed",
  admin_disabled: "Admin API disabled",
  csrf_failed: "Cross-site request refused",
  not_found: "Not found",
  queue_timeout: "Queue timeout",
  request_timeout: "Request timeout",
  conflict: "Conflict",
  idempotency_key_reused: "Idempotency key already used",
  lease_not_active: "Lease not active",
  node_not_registered: "Node not registered",
  overage_not_available: "Overage not available",
  payload_too_large: "Request body too large",
  uri_too_long: "Request URL too long",
  unsupported_media_type: "Unsupported media type",
  duration_too_long: "Requested duration can never fit",
  quota_exceeded: "GPU quota exceeded",
  runs_exceeded: "Daily runs limit reached",
  headers_too_large: "Request headers too large",
  internal: "Internal error",
  upstream_unavailable: "App not answering",
  no_gpu_available: "No GPU available",
  storage_unavailable: "Storage unavailable",
  control_plane_unavailable: "Pool not answering",
};

/** When each code is sent, for people reading docs/wire.md and the API reference. */
export const PROBLEM_MEANINGS: Readonly<Record<ProblemCode, string>> = {
  invalid_request:
    "The body, query, a parameter or a header is invalid (e.g. `Authorization` sent twice); `errors` names every invalid field when the server can tell which. Also sent before any route for a request that is not well-formed HTTP/1.1 (bad chunking, a bare CR, `Content-Length` with `Transfer-Encoding`). Nothing was changed.",
  unauthorized: "No bearer credential, or one this server does not know (revoked, mistyped, from another pool).",
  invalid_ip_token:
    "An X-IP-Token was sent but cannot be used; `reason` says why. Never a silent fallback to another identity.",
  invalid_session: "Edge sessions: the session is unknown, expired or revoked, or its user no longer exists.",
  invalid_credentials: "Sign-in with a user token that is not valid, or not the named user's.",
  credits_exhausted:
    "The call needs more GPU time than the quota has left, overage is on, and the credits available do not cover the hold for the rest (`needed_micros` > `available_micros`). Nothing was reserved or held.",
  spend_cap_reached:
    "The call's overage hold would take this month's overage spending past the user's monthly cap (`spent_micros + held_micros + needed_micros > cap_micros`). Nothing was reserved or held.",
  forbidden: "A valid credential of a kind this route does not take (the detail names the kinds it takes).",
  admin_disabled: "The admin API is off: the server was started without GPUPOOL_ADMIN_TOKEN.",
  csrf_failed:
    "A state-changing request signed in by the dashboard's session cookie (not a bearer token) without the session's `X-CSRF-Token` header, with another one, or sent from another origin (`Origin` / `Sec-Fetch-Site`). Nothing was changed; the page gets its token from `GET /v1/dashboard/session`.",
  not_found: "No such route, or no such lease or user visible to this caller.",
  queue_timeout:
    "The lease waited in the queue longer than the queue timeout; nothing was charged. Sent as the SSE `failed` event (and stored as the lease's `problem`); 408 when returned over HTTP.",
  request_timeout:
    "The request was not received in time (its headers or body arrived too slowly); it was not read and nothing was changed. Sent before any route, so no route lists it.",
  conflict: "The name is taken, or the node is in use by another agent (`reason: node_in_use`).",
  idempotency_key_reused:
    "A key already used for a different request: `POST /v1/leases` with an `Idempotency-Key` this caller used (within 24 h) for another duration, size, `queue` or node (`lease` names the lease it made), or `POST /v1/admin/users/{id}/credits` with an `idempotency_key` that granted another amount or category (`grant` names that grant). Nothing was changed; use a new key for a new request.",
  lease_not_active: "Reserved for operations that need an active lease; today's server does not send it.",
  node_not_registered:
    "A node's heartbeat, when its agent must register again (lost after missed heartbeats) or another agent registered the node since (`reason: replaced`).",
  overage_not_available:
    "`PATCH /v1/me/billing` turning overage on when the operator has not enabled overage or the user's tier is not among those it is offered to (`blocked_by` says which). Nothing was changed.",
  payload_too_large: "The request body is larger than the server accepts. Nothing was changed.",
  uri_too_long:
    "The request's path has a segment longer than any id or name (100 characters), so it names nothing; nothing was changed. The detail quotes at most the path's first characters.",
  unsupported_media_type: "A body that is not `application/json` in UTF-8 (another `charset` is refused too).",
  duration_too_long:
    "The call can never be granted: `duration` is over the tier's `max_duration`, or its cost is more than the whole quota.",
  quota_exceeded:
    "Not enough GPU quota left in the identity's window for this call; with `Retry-After` (seconds). The detail names the tier, both numbers, when to retry and the next step.",
  runs_exceeded: "The identity made its tier's number of GPU calls in this window; with `Retry-After`.",
  headers_too_large:
    "The request line and headers together are larger than the server reads (16 KiB); it was not read and nothing was changed. Sent before any route, so no route lists it.",
  internal: "A bug on the server; logged there. Nothing secret is shown.",
  upstream_unavailable: "From the edge: the app behind it does not answer.",
  no_gpu_available: "No GPU can take the call now and it may not wait, or none ever could; `reason` says which.",
  storage_unavailable:
    "The pool's database could not do the work; nothing was changed. With `Retry-After` when `reason` is set. (A lease request that was stored before a later step failed is answered with the lease, never with this.)",
  control_plane_unavailable: "From the edge or a node agent: it cannot reach the pool (nothing was forwarded).",
};

/** The `type` URI of a code's problems. */
export function problemType(code: ProblemCode): string {
  return `urn:gpupool:problem:${code}`;
}
