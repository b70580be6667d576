import * as z from "zod/mini";
import {
  Count,
  Identity,
  LeaseStatus,
  QueueReason,
  Seconds,
  Size,
  Time,
  TimeOrNull,
  describe,
  matching,
} from "./common.js";
import { Problem, ProblemCodeSchema } from "./problem-objects.js";
import { LeaseBilling } from "./billing.js";
import { Quota } from "./quota.js";

/** The longest duration a lease request may name, in seconds (tiers allow less). */
export const MAX_LEASE_DURATION_S = 86_400;

/** `POST /v1/leases`; every field is optional, and an empty body is the same as `{}`. */
export const LeaseRequest = z.strictObject({
  duration: describe(
    z.optional(z.number().check(z.minimum(0.001), z.maximum(MAX_LEASE_DURATION_S))),
    "Seconds: the longest the call may hold the GPU (default 60, at most the tier's `max_duration`). Reserved at admission; the unused part is refunded at release.",
  ),
  size: describe(
    z.optional(z.string()),
    "`large` (default) or `xlarge`, or a size the operator configured; anything else is a 400 naming the sizes.",
  ),
  queue: describe(
    z.optional(z.boolean()),
    "Wait for a slot when none is free (default true); false fails at once with 503 `no_gpu_available`.",
  ),
  max_wait: describe(
    z.optional(z.number().check(z.minimum(0), z.maximum(MAX_LEASE_DURATION_S))),
    "Seconds the caller is willing to wait for a slot (default and cap: the tier's queue timeout). A call expected to wait longer — or, when its `eta_max` promises no start in time and it is not anonymous, to start in the last tenth of it (`queue.predicted_wait_headroom`) — is refused at once with 503 `no_gpu_available` (`reason: predicted_wait`, `eta_s`, `Retry-After`); one that is queued fails with `queue_timeout` once it has waited this long.",
  ),
});
export type LeaseRequest = z.infer<typeof LeaseRequest>;

/** The GPU (or part of one) a lease was granted. */
export const Device = z.object({
  node: describe(z.string(), "The node (host) of the GPU."),
  index: describe(Count, "The GPU's index on its node."),
  uuid: describe(z.string(), "The GPU's UUID (`CUDA_VISIBLE_DEVICES` takes it)."),
  name: describe(z.string(), "The GPU model, e.g. `NVIDIA H200`."),
  slots: describe(z.array(Count), "The GPU's slots the lease holds (`large` one, `xlarge` both)."),
});
export type Device = z.infer<typeof Device>;

/** What a lease that ended without a grant (or was failed) says about why: its problem's code and detail. */
export const LeaseProblem = z.object({
  code: ProblemCodeSchema,
  detail: z.nullable(z.string()),
});
export type LeaseProblem = z.infer<typeof LeaseProblem>;

export const Lease = z.object({
  id: describe(z.string(), "`ls_…`."),
  status: describe(LeaseStatus, "`queued → active → released | expired | cancelled | failed`."),
  app: describe(z.nullable(z.string()), "The app that asked (`a_…`), or null for a user's own script."),
  identity: Identity,
  size: Size,
  duration: describe(Seconds, "The duration asked for."),
  reserved: describe(Seconds, "`duration × cost`, held from the quota from admission to release."),
  cost: describe(z.number(), "The size's cost multiplier."),
  node: describe(
    z.nullable(z.string()),
    "The node of the GPU, set at grant; a lease made through a node's agent names that node while it waits.",
  ),
  device: describe(z.nullable(Device), "Null until granted."),
  queued_at: describe(Time, "When the request was admitted."),
  granted_at: describe(TimeOrNull, "Null until granted."),
  deadline: describe(
    TimeOrNull,
    "`granted_at + duration`: past it the GPU is reclaimed and the whole reservation charged.",
  ),
  ended_at: describe(TimeOrNull, "Null until released, expired, cancelled or failed."),
  position: describe(z.nullable(z.int()), "Place in the queue (1 is next) while queued, else null."),
  reason: describe(
    z.nullable(QueueReason),
    "While queued: `node` (no slot fits) or `concurrency` (the app is at its limit); else null.",
  ),
  eta_s: describe(
    z.nullable(Count),
    "While queued: the expected seconds to the grant, from what calls of each app actually hold of their reservations (never above `eta_max_s`); null when unknown.",
  ),
  eta_max_s: describe(
    z.optional(z.nullable(Count)),
    "While queued: the bound on the wait, from the slots' deadlines and the whole durations of the calls ahead (later only if calls of a higher class arrive); null when unknown. Absent from servers before it existed.",
  ),
  held_ms: describe(
    z.nullable(Count),
    "Milliseconds from grant to release; null until the lease ends (and for one never granted).",
  ),
  charged: describe(
    Seconds,
    "`min(reserved, ceil(held_ms / 1000) × cost)`; the whole reservation when it expired. Time queued is never charged.",
  ),
  refunded: describe(Seconds, "`reserved − charged` once it ended, else 0."),
  failed: describe(z.boolean(), "True when released with `failed: true` (the app's call failed)."),
  billing: describe(
    z.optional(LeaseBilling),
    "Which bucket pays: the quota part, the overage part paid from credits, the hold and the charge.",
  ),
  problem: describe(
    z.nullable(LeaseProblem),
    "Why a lease ended without a grant or was failed (e.g. `queue_timeout`, `no_gpu_available`): the problem's code and detail. Null otherwise.",
  ),
  quota: describe(
    z.nullable(Quota),
    "The charged identity's quota after this change; null in lists, and in events that happen while a stream is open.",
  ),
});
export type Lease = z.infer<typeof Lease>;

export const LeaseList = z.object({
  leases: describe(z.array(Lease), "Newest first; `quota` is null in each."),
  next_cursor: describe(
    z.optional(z.nullable(z.string())),
    "Pass as `cursor` for the next (older) page; null on the last one. Always present from this server; absent only from servers older than pages.",
  ),
});
export type LeaseList = z.infer<typeof LeaseList>;

/** `GET /v1/leases` query. */
export const LeaseListQuery = z.strictObject({
  status: z.optional(LeaseStatus),
  limit: describe(
    z.optional(z.string().check(matching(/^(?:[1-9][0-9]?|[1-4][0-9]{2}|500)$/, "a whole number from 1 to 500"))),
    "At most this many, newest first: 1 to 500 (default 50). 0, more than 500 or anything but digits is a 400 naming `limit`.",
  ),
  cursor: describe(
    z.optional(z.string().check(z.maxLength(200))),
    "`next_cursor` of the previous page (absent: the newest). A cursor this server did not give out is a 400 naming `cursor`.",
  ),
});
export type LeaseListQuery = z.infer<typeof LeaseListQuery>;

/** `POST /v1/leases/:id/release`; an empty body is `{}`. */
export const ReleaseRequest = z.strictObject({
  failed: describe(z.optional(z.boolean()), "The app's call failed (recorded; the charge is the same)."),
});
export type ReleaseRequest = z.infer<typeof ReleaseRequest>;

export const ReleaseResult = z.object({
  id: z.string(),
  status: describe(
    LeaseStatus,
    "`released` (or `failed` when released with `failed: true`), `cancelled` for a lease released while queued, or the status it had already ended with.",
  ),
  held_ms: describe(z.nullable(Count), "Null for a lease that was never granted."),
  charged: Seconds,
  refunded: Seconds,
  billing: describe(
    z.optional(LeaseBilling),
    "Which bucket paid; always sent (absent only from servers older than billing).",
  ),
  quota: Quota,
});
export type ReleaseResult = z.infer<typeof ReleaseResult>;

export const QueuedEvent = describe(
  z.object({
    position: describe(z.int(), "1 is next."),
    reason: QueueReason,
    eta_s: describe(z.nullable(Count), "Expected seconds to the grant (see the lease's `eta_s`); null when unknown."),
    eta_max_s: describe(
      z.optional(z.nullable(Count)),
      "The bound on the wait (see the lease's `eta_max_s`); null when unknown. Absent from servers before it existed.",
    ),
  }),
  "SSE `queued`: the place in line, sent first and whenever it changes.",
);
export type QueuedEvent = z.infer<typeof QueuedEvent>;

export const GrantedEvent = describe(
  z.object({ lease: Lease }),
  "SSE `granted`: the lease is active; the stream ends. The lease's `quota` is set when the stream opened on a lease already granted, null when the grant happened while it was open.",
);
export type GrantedEvent = z.infer<typeof GrantedEvent>;

export const FailedEvent = describe(
  z.object({ problem: Problem }),
  "SSE `failed`: the lease ended before a grant (`queue_timeout`, `no_gpu_available`, …); the stream ends. The problem carries its code's own fields (e.g. `waited`) only when the failure happens while the stream is open; when the stream opens on a lease that already failed, it has `type`, `title`, `status`, `code` and `detail` only, and today's server labels it 408 \"Queue timeout\" whatever its code.",
);
export type FailedEvent = z.infer<typeof FailedEvent>;

export const EndedEvent = describe(
  z.object({ lease: Lease }),
  "SSE `ended`: released, expired or cancelled, or failed after its grant; the stream ends. The lease's `quota` is set when the stream opened on a lease already ended, null when it ended while the stream was open.",
);
export type EndedEvent = z.infer<typeof EndedEvent>;

/** The events of `GET /v1/leases/:id/events`, by event name. */
export const LEASE_EVENTS = {
  queued: QueuedEvent,
  granted: GrantedEvent,
  failed: FailedEvent,
  ended: EndedEvent,
} as const;
export type LeaseEventName = keyof typeof LEASE_EVENTS;

/** The longest `Idempotency-Key` a server takes on `POST /v1/leases`. */
export const IDEMPOTENCY_KEY_MAX_LENGTH = 255;
/** What an `Idempotency-Key` may contain: 1 to 255 printable ASCII characters, no spaces. */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
