import * as z from "zod/mini";
import { Count, IdentityKey, Seconds, TimeOrNull, describe } from "./common.js";
import { OverageBlockerSchema } from "./billing.js";
import { PROBLEM_CODES, PROBLEM_MEANINGS, PROBLEM_STATUS, PROBLEM_TITLES, problemType } from "./problems.js";
import type { ProblemCode } from "./problems.js";

export const ProblemCodeSchema = z.enum(PROBLEM_CODES as [ProblemCode, ...ProblemCode[]]);

/**
 * RFC 9457 problem details with gpupool's stable `code`, as any of them is sent
 * (`Content-Type: application/problem+json`). Each code may add fields of its own (below);
 * a client keeps the fields it does not know.
 */
export const Problem = z.looseObject({
  type: describe(z.string(), "`urn:gpupool:problem:<code>`."),
  title: describe(z.string(), "A short summary of the code (its title in the table)."),
  status: describe(z.int(), "The HTTP status."),
  detail: describe(z.string(), "One or two sentences a person can act on."),
  code: describe(ProblemCodeSchema, "Stable and machine-readable: branch on this."),
});
export type Problem = z.infer<typeof Problem>;

export const FieldError = z.object({
  field: describe(
    z.string(),
    "The invalid field (dotted path, e.g. `devices.0.uuid`), `body` / `querystring` for the whole of it, or a header's name (`Authorization`).",
  ),
  message: describe(z.string(), "What is wrong with it, e.g. `must be one of large, xlarge`."),
});
export type FieldError = z.infer<typeof FieldError>;

export const INVALID_IP_TOKEN_REASONS = [
  "malformed",
  "expired",
  "wrong_app",
  "bad_signature",
  "alg_not_allowed",
  "unknown_key",
  "wrong_issuer",
  "bad_subject",
  "unknown_user",
  "not_accepted",
] as const;
export type InvalidIpTokenReason = (typeof INVALID_IP_TOKEN_REASONS)[number];

export const NO_GPU_REASONS = [
  "node_not_registered",
  "node_lost",
  "device_removed",
  "no_capacity",
  "queue_full",
  "queue_disabled",
  "predicted_wait",
] as const;
export type NoGpuAvailableReason = (typeof NO_GPU_REASONS)[number];

export const STORAGE_UNAVAILABLE_REASONS = [
  "unreachable",
  "timeout",
  "contention",
  "stalled",
  "leadership_lost",
  "outcome_unknown",
  "disk_full",
  "database_missing",
  "write_failed",
  "starting",
] as const;
export type StorageUnavailableReason = (typeof STORAGE_UNAVAILABLE_REASONS)[number];

export const NEXT_STEPS = [
  "sign_in",
  "upgrade",
  "forward_identity",
  "wait_for_reset",
  "wait_for_calls",
  "enable_overage",
  "add_credits",
  "raise_cap",
] as const;
export type NextStep = (typeof NEXT_STEPS)[number];

const agentUrl = describe(z.nullable(z.string()), "The device API URL the other agent reported, or null.");

/** The fields each code adds to the problem, with what they mean. */
export const PROBLEM_FIELDS = {
  invalid_request: {
    errors: describe(
      z.optional(z.array(FieldError)),
      "Every invalid field, when the server can tell which (not for malformed JSON alone, or a device listed twice).",
    ),
  },
  unauthorized: {},
  invalid_ip_token: {
    reason: describe(
      z.enum(INVALID_IP_TOKEN_REASONS),
      "Why the token was refused: `malformed` (not a token as this pool issues them: unparseable, a claim missing, issued more than 30 s ahead of the pool's clock, or living longer than `identity.ip_token_ttl` + 30 s), `expired`, `wrong_app` (minted for another app), `bad_signature`, `alg_not_allowed` (not EdDSA, e.g. `alg: none`), `unknown_key` (no such `kid`), `wrong_issuer`, `bad_subject` (not `user:` or `ip:`), `unknown_user` (the token names a user who does not exist, also when re-issuing), `not_accepted` (sent with a user token, which already says who you are).",
    ),
  },
  invalid_session: {},
  invalid_credentials: {},
  credits_exhausted: {
    needed_micros: describe(z.int(), "The hold the call's overage needs: `ceil(overage_s × price)`."),
    available_micros: describe(z.int(), "Credits not held by other calls."),
    quota_s: describe(Seconds, "The part of the call the quota would have paid (what was left)."),
    overage_s: describe(Seconds, "The part credits would have had to pay."),
    currency: z.string(),
  },
  spend_cap_reached: {
    needed_micros: describe(z.int(), "The hold the call's overage needs."),
    cap_micros: describe(z.int(), "The user's monthly cap."),
    spent_micros: describe(z.int(), "Spent on overage this billing month."),
    held_micros: describe(z.int(), "Held for overage by calls in flight."),
    month_ends_at: describe(z.iso.datetime(), "When the billing month ends and the cap's count starts again."),
    currency: z.string(),
  },
  forbidden: {},
  admin_disabled: {},
  csrf_failed: {},
  not_found: {},
  request_timeout: {},
  queue_timeout: {
    waited: describe(
      z.optional(Seconds),
      "Seconds the lease waited in the queue (one decimal). Absent when a replica that does not lead reports a lease that timed out.",
    ),
  },
  conflict: {
    reason: describe(
      z.optional(z.enum(["node_in_use"])),
      "`node_in_use`: another agent registered this node and still heartbeats (two agents cannot share a node key). Absent for a name that is taken.",
    ),
    node: describe(z.optional(z.string()), "With `node_in_use`: the node."),
    agent_url: z.optional(agentUrl),
    retry_after_s: describe(
      z.optional(Seconds),
      "With `node_in_use`: when this agent may register if the other one is gone (the node's heartbeat timeout).",
    ),
  },
  idempotency_key_reused: {
    lease: describe(
      z.optional(z.string()),
      "A lease request's key: the lease the key was first used for (`GET /v1/leases/{id}`).",
    ),
    grant: describe(z.optional(z.string()), "A credit grant's key: the grant it made."),
  },
  lease_not_active: {},
  overage_not_available: {
    blocked_by: OverageBlockerSchema,
    tier: z.string(),
  },
  node_not_registered: {
    reason: describe(
      z.optional(z.enum(["replaced"])),
      "`replaced`: another agent registered the node since, and this agent's registration is no longer current. Absent when the node was lost (missed heartbeats) or never registered: register again.",
    ),
    node: describe(z.optional(z.string()), "With `replaced`: the node."),
    agent_url: z.optional(agentUrl),
  },
  payload_too_large: {},
  uri_too_long: {},
  unsupported_media_type: {},
  duration_too_long: {
    duration: describe(Seconds, "The duration asked for."),
    max_duration: describe(Seconds, "The tier's longest single call."),
    cost: describe(z.number(), "The size's cost multiplier."),
    requested: describe(Seconds, "What the call would reserve: `duration × cost`."),
    quota: describe(Seconds, "The identity's whole quota for a window."),
    tier: z.string(),
    identity: IdentityKey,
    overage_blocked_by: describe(
      z.optional(OverageBlockerSchema),
      "When the call is larger than the whole quota: why credits did not pay for the rest.",
    ),
  },
  quota_exceeded: {
    requested: describe(Seconds, "What the call would reserve: `duration × cost`."),
    left: describe(Seconds, "`quota − used − reserved`."),
    quota: Seconds,
    used: describe(Seconds, "Charged in the current window."),
    reserved: describe(Seconds, "Held by the identity's calls in flight (queued or active)."),
    tier: z.string(),
    identity: IdentityKey,
    resets_at: describe(TimeOrNull, "When the window resets; null before the identity's first grant."),
    retry_at: describe(
      TimeOrNull,
      "The earliest time the same call could be admitted (when calls in flight end, or the window resets).",
    ),
    next_step: describe(
      z.enum(NEXT_STEPS),
      "The one next step that helps for this tier: `sign_in`, `upgrade`, `forward_identity` (the app sent no X-IP-Token), `wait_for_reset`, `wait_for_calls` (the identity's own calls hold the rest), `enable_overage` (the user's tier offers overage and they have not opted in).",
    ),
    overage_blocked_by: describe(
      z.optional(OverageBlockerSchema),
      "Why credits did not pay for the rest of this call. Absent only from servers older than billing.",
    ),
  },
  runs_exceeded: {
    runs: describe(Count, "GPU calls made in this window."),
    max_runs: describe(z.nullable(Count), "The tier's limit."),
    tier: z.string(),
    identity: IdentityKey,
    resets_at: TimeOrNull,
    retry_at: describe(TimeOrNull, "When the window resets (the same as `resets_at`)."),
  },
  headers_too_large: {},
  internal: {},
  upstream_unavailable: {},
  no_gpu_available: {
    reason: describe(
      z.optional(z.enum(NO_GPU_REASONS)),
      "`no_capacity` (no GPU of the pool, or of the agent's node, can ever take this size; or every GPU is an agent's and the call did not come through one), `queue_full`, `queue_disabled` (`queue: false` and no free slot), `node_not_registered` (the call came through a node's agent and that node has no GPUs in the pool now), `node_lost` (the node stopped heartbeating while the call waited or ran), `device_removed` (the GPU left the pool), `predicted_wait` (every slot that fits is busy and the call is not expected to start in time: it would wait longer than it may — its `max_wait`, or its tier's queue timeout — or, when its `eta_max` promises no start in time and it is not anonymous, into the last tenth of that (`queue.predicted_wait_headroom`); refused at once instead of timing out in the queue). Absent when a replica that does not lead reports a lease that ended before it was granted.",
    ),
    eta_s: describe(
      z.optional(Count),
      "With `predicted_wait`: the expected seconds until a slot would have been granted (from what calls actually hold).",
    ),
    eta_max_s: describe(
      z.optional(Count),
      "With `predicted_wait`: the bound on that wait, were every call to hold its whole reservation.",
    ),
    max_wait_s: describe(
      z.optional(Count),
      "With `predicted_wait`: how long the call could wait (its `max_wait`, at most the tier's queue timeout).",
    ),
  },
  storage_unavailable: {
    reason: describe(
      z.optional(z.enum(STORAGE_UNAVAILABLE_REASONS)),
      '`unreachable` (the database cannot be reached), `timeout` (it did not answer in time), `contention` (another request for the same person or lease held what this one needed; retry in a second), `stalled` (this server stalled mid-transaction and the database ended it), `leadership_lost` (the replica lost its leader session mid-request), `outcome_unknown` (the connection to the database broke while the request was being committed, on any replica: whether it took effect is not known, so this is never "nothing was changed"; retry with the same `Idempotency-Key`, which returns the lease if it was made, or look the lease up), `disk_full` (the database\'s disk is full or nearly: readiness says so before writes fail), `database_missing` (the SQLite file was deleted or replaced while the server ran, or is damaged: it writes nothing more until restarted), `write_failed` (another I/O error), `starting` (the server is still restoring its state). With `Retry-After`.',
    ),
  },
  control_plane_unavailable: {
    reason: describe(
      z.optional(z.string()),
      "From a node agent: `foreign_node` or `foreign_device` when the pool granted a GPU that is not on its host.",
    ),
  },
} as const satisfies Record<ProblemCode, Readonly<Record<string, z.ZodMiniType>>>;

function codedProblem<C extends ProblemCode>(code: C) {
  const schema = z.object({
    type: z.literal(problemType(code)),
    title: describe(z.string(), `"${PROBLEM_TITLES[code]}"`),
    status: z.literal(PROBLEM_STATUS[code]),
    detail: describe(z.string(), "One or two sentences a person can act on."),
    code: z.literal(code),
    ...PROBLEM_FIELDS[code],
  });
  return describe(schema, PROBLEM_MEANINGS[code]);
}

/** One schema per code: the problem exactly as that code is sent, extra fields included. */
export const PROBLEMS = {
  invalid_request: codedProblem("invalid_request"),
  unauthorized: codedProblem("unauthorized"),
  invalid_ip_token: codedProblem("invalid_ip_token"),
  invalid_session: codedProblem("invalid_session"),
  invalid_credentials: codedProblem("invalid_credentials"),
  credits_exhausted: codedProblem("credits_exhausted"),
  spend_cap_reached: codedProblem("spend_cap_reached"),
  forbidden: codedProblem("forbidden"),
  admin_disabled: codedProblem("admin_disabled"),
  csrf_failed: codedProblem("csrf_failed"),
  not_found: codedProblem("not_found"),
  queue_timeout: codedProblem("queue_timeout"),
  request_timeout: codedProblem("request_timeout"),
  conflict: codedProblem("conflict"),
  idempotency_key_reused: codedProblem("idempotency_key_reused"),
  lease_not_active: codedProblem("lease_not_active"),
  node_not_registered: codedProblem("node_not_registered"),
  overage_not_available: codedProblem("overage_not_available"),
  payload_too_large: codedProblem("payload_too_large"),
  uri_too_long: codedProblem("uri_too_long"),
  unsupported_media_type: codedProblem("unsupported_media_type"),
  duration_too_long: codedProblem("duration_too_long"),
  quota_exceeded: codedProblem("quota_exceeded"),
  runs_exceeded: codedProblem("runs_exceeded"),
  headers_too_large: codedProblem("headers_too_large"),
  internal: codedProblem("internal"),
  upstream_unavailable: codedProblem("upstream_unavailable"),
  no_gpu_available: codedProblem("no_gpu_available"),
  storage_unavailable: codedProblem("storage_unavailable"),
  control_plane_unavailable: codedProblem("control_plane_unavailable"),
} satisfies { [C in ProblemCode]: ReturnType<typeof codedProblem<C>> };

/** The problem of code `C` with its own fields typed. */
export type ProblemOf<C extends ProblemCode> = z.infer<(typeof PROBLEMS)[C]>;
export type QuotaExceededProblem = ProblemOf<"quota_exceeded">;
export type CreditsExhaustedProblem = ProblemOf<"credits_exhausted">;
export type SpendCapReachedProblem = ProblemOf<"spend_cap_reached">;
export type DurationTooLongProblem = ProblemOf<"duration_too_long">;
export type RunsExceededProblem = ProblemOf<"runs_exceeded">;
export type InvalidIpTokenProblem = ProblemOf<"invalid_ip_token">;
export type NoGpuAvailableProblem = ProblemOf<"no_gpu_available">;
export type StorageUnavailableProblem = ProblemOf<"storage_unavailable">;
export type QueueTimeoutProblem = ProblemOf<"queue_timeout">;
export type InvalidRequestProblem = ProblemOf<"invalid_request">;

/**
 * The code's own fields, each optional: for a client reading whatever a problem carries (one
 * relayed by a proxy, or from a server a version apart) without refusing the whole of it.
 */
export function problemFields<C extends ProblemCode>(
  code: C,
  problem: unknown,
): Partial<z.infer<z.ZodMiniObject<(typeof PROBLEM_FIELDS)[C]>>> {
  const shape = PROBLEM_FIELDS[code];
  const out: Record<string, unknown> = {};
  if (typeof problem !== "object" || problem === null) return {};
  for (const [key, schema] of Object.entries(shape) as [string, z.ZodMiniType][]) {
    const value = (problem as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const parsed = schema.safeParse(value);
    if (parsed.success) out[key] = parsed.data;
  }
  return out as Partial<z.infer<z.ZodMiniObject<(typeof PROBLEM_FIELDS)[C]>>>;
}
