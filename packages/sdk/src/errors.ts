import { problemFields } from "@gpupool/contract";
import type * as wire from "@gpupool/contract";
import { isRecord, str } from "./json.js";
import type { Problem } from "./types.js";

/** Why an `X-IP-Token` was refused (docs/wire.md); a newer server may add reasons. */
export type InvalidIpTokenReason = wire.InvalidIpTokenReason | (string & {});

/** Why no GPU could be had (docs/wire.md); a newer server may add reasons. */
export type NoGpuAvailableReason = wire.NoGpuAvailableReason | (string & {});

export type FieldError = Readonly<wire.FieldError>;

const dateOrNull = (iso: string | null | undefined): Date | null =>
  iso === null || iso === undefined ? null : new Date(iso);
/** A code's own field that the contract leaves open to new values (a reason): whatever string was sent. */
const openString = (problem: Problem, field: string): string => str(problem[field]);

export interface GpupoolErrorOptions {
  /** Replaces the server's `detail` as the message (the SDK adds context such as the URL). */
  readonly message?: string;
  readonly cause?: unknown;
}

/**
 * Any failure the gpupool control plane reported, or that the SDK reports in its name.
 * `message` is the server's `detail`, written for a person; branch on `code`.
 */
export class GpupoolError extends Error {
  override readonly name: string = "GpupoolError";
  /** Stable, machine-readable problem code, e.g. `quota_exceeded`. */
  readonly code: string;
  /** HTTP status of the problem; 0 when no HTTP response was received. */
  readonly status: number;
  readonly detail: string;
  /** The whole problem object as sent, for fields the SDK does not model. */
  readonly problem: Problem;

  constructor(problem: Problem, options: GpupoolErrorOptions = {}) {
    super(
      options.message ?? (problem.detail || problem.title || problem.code),
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.code = problem.code;
    this.status = problem.status;
    this.detail = problem.detail;
    this.problem = problem;
  }
}

/** The charged identity has not enough GPU quota left in its window for this call. */
export class QuotaExceededError extends GpupoolError {
  override readonly name: string = "QuotaExceededError";
  readonly requested: number;
  readonly left: number;
  readonly quota: number;
  readonly used: number;
  readonly reserved: number;
  readonly tier: string;
  /** `<kind>:<id>`, e.g. `ip:203.0.113.7`. */
  readonly identity: string;
  readonly resetsAt: Date | null;
  /** Earliest time the same request could be admitted. */
  readonly retryAt: Date | null;
  /** What to do next for this tier (sign in, upgrade, forward the viewer's identity, wait, turn overage on…). */
  readonly nextStep: wire.NextStep | null;
  /**
   * Why credits did not pay for the rest of the call: `operator_disabled`, `tier_without_overage`,
   * `not_opted_in` or `not_a_user`; null from a server older than billing.
   */
  readonly overageBlockedBy: wire.OverageBlocker | (string & {}) | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    // Each field as the contract reads it; one missing (NaN / null) does not lose the others.
    const f = problemFields("quota_exceeded", problem);
    this.requested = f.requested ?? Number.NaN;
    this.left = f.left ?? Number.NaN;
    this.quota = f.quota ?? Number.NaN;
    this.used = f.used ?? Number.NaN;
    this.reserved = f.reserved ?? Number.NaN;
    this.tier = f.tier ?? "";
    this.identity = f.identity ?? "";
    this.resetsAt = dateOrNull(f.resets_at);
    this.retryAt = dateOrNull(f.retry_at);
    this.nextStep = f.next_step ?? null;
    this.overageBlockedBy = f.overage_blocked_by ?? (openString(problem, "overage_blocked_by") || null);
  }
}

/** The call can never fit: longer than the tier's `maxDuration`, or costlier than the whole quota. */
export class DurationTooLongError extends GpupoolError {
  override readonly name: string = "DurationTooLongError";
  readonly duration: number;
  readonly maxDuration: number;
  readonly cost: number;
  /** What the call would reserve: `duration × cost`. */
  readonly requested: number;
  readonly quota: number;
  readonly tier: string;
  readonly identity: string;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    const f = problemFields("duration_too_long", problem);
    this.duration = f.duration ?? Number.NaN;
    this.maxDuration = f.max_duration ?? Number.NaN;
    this.cost = f.cost ?? Number.NaN;
    this.requested = f.requested ?? Number.NaN;
    this.quota = f.quota ?? Number.NaN;
    this.tier = f.tier ?? "";
    this.identity = f.identity ?? "";
  }
}

/** The identity used up its tier's daily number of runs. */
export class RunsExceededError extends GpupoolError {
  override readonly name: string = "RunsExceededError";
  readonly runs: number;
  readonly maxRuns: number;
  readonly tier: string;
  readonly identity: string;
  readonly resetsAt: Date | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    const f = problemFields("runs_exceeded", problem);
    this.runs = f.runs ?? Number.NaN;
    this.maxRuns = f.max_runs ?? Number.NaN;
    this.tier = f.tier ?? "";
    this.identity = f.identity ?? "";
    this.resetsAt = dateOrNull(f.resets_at);
  }
}

/** An `X-IP-Token` was sent but refused; the server never falls back to another identity. */
export class InvalidIpTokenError extends GpupoolError {
  override readonly name: string = "InvalidIpTokenError";
  readonly reason: InvalidIpTokenReason;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.reason = openString(problem, "reason");
  }
}

/** The lease waited in the queue longer than the server's queue timeout; nothing was charged. */
export class QueueTimeoutError extends GpupoolError {
  override readonly name: string = "QueueTimeoutError";
  /** Seconds spent waiting. */
  readonly waited: number | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.waited = problemFields("queue_timeout", problem).waited ?? null;
  }
}

/** No slot now and the request may not wait (queue disabled or full, or no capacity at all). */
export class NoGpuAvailableError extends GpupoolError {
  override readonly name: string = "NoGpuAvailableError";
  readonly reason: NoGpuAvailableReason;
  /** With `predicted_wait`: the expected seconds until a slot would have been granted; else null. */
  readonly etaS: number | null;
  /** With `predicted_wait`: the bound on that wait; else null. */
  readonly etaMaxS: number | null;
  /** With `predicted_wait`: how long the call could wait (its `maxWait`, at most the tier's queue timeout); else null. */
  readonly maxWaitS: number | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.reason = openString(problem, "reason");
    const f = problemFields("no_gpu_available", problem);
    this.etaS = f.eta_s ?? null;
    this.etaMaxS = f.eta_max_s ?? null;
    this.maxWaitS = f.max_wait_s ?? null;
  }
}

/**
 * Missing or unknown app key, user token or admin token (`unauthorized`); also an edge session
 * or sign-in refused (`invalid_session`, `invalid_credentials`): branch on `code`.
 */
export class UnauthorizedError extends GpupoolError {
  override readonly name: string = "UnauthorizedError";
}

/** A valid credential of a kind the route does not take (`forbidden`), or the admin API is off (`admin_disabled`). */
export class ForbiddenError extends GpupoolError {
  override readonly name: string = "ForbiddenError";
}

export class NotFoundError extends GpupoolError {
  override readonly name: string = "NotFoundError";
}

/** The request was malformed; `errors` names every invalid field. */
export class InvalidRequestError extends GpupoolError {
  override readonly name: string = "InvalidRequestError";
  readonly errors: readonly FieldError[];

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.errors = problemFields("invalid_request", problem).errors ?? [];
  }
}

/**
 * The control plane could not be reached, did not answer in time, or failed (5xx): also
 * `storage_unavailable` (its database; `problem.reason` says why, `Retry-After` when to retry).
 */
export class ServerUnavailableError extends GpupoolError {
  override readonly name: string = "ServerUnavailableError";
  /** The URL that was requested. */
  readonly url: string;

  constructor(problem: Problem, options: GpupoolErrorOptions & { readonly url?: string | undefined } = {}) {
    super(problem, options);
    this.url = options.url ?? "";
  }
}

/**
 * Abort reason of the `signal` given to a `gpu()` function when the lease reaches its
 * deadline; past it the agent stops the process and the full reservation is charged.
 */
export class LeaseDeadlineError extends GpupoolError {
  override readonly name: string = "LeaseDeadlineError";
  readonly leaseId: string;
  readonly deadline: Date | null;

  constructor(leaseId: string, deadline: Date | null) {
    const when = deadline === null ? "" : ` (${deadline.toISOString()})`;
    super(
      sdkProblem(
        "lease_deadline",
        "Lease deadline reached",
        0,
        `Lease ${leaseId} reached its deadline${when}: the GPU is being reclaimed. ` +
          "Ask for a longer duration or split the work into shorter calls.",
      ),
    );
    this.leaseId = leaseId;
    this.deadline = deadline;
  }
}

/** A problem the SDK reports in its own name (no server response to quote). */
export function sdkProblem(code: string, title: string, status: number, detail: string): Problem {
  return { type: `urn:gpupool:problem:${code}`, title, status, detail, code };
}

/**
 * Fills in what a server (or proxy in front of it) left out of an error body, so every
 * error has a code, a status and a sentence.
 */
export function normalizeProblem(value: unknown, status: number, fallbackDetail: string): Problem {
  const body = isRecord(value) ? value : {};
  const code = str(body["code"]) || codeForStatus(status);
  return {
    ...body,
    type: str(body["type"]) || `urn:gpupool:problem:${code}`,
    title: str(body["title"]) || fallbackDetail,
    status: typeof body["status"] === "number" ? body["status"] : status,
    detail: str(body["detail"]) || fallbackDetail,
    code,
  };
}

function codeForStatus(status: number): string {
  switch (status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 415:
      return "unsupported_media_type";
    default:
      return status >= 500 ? "server_unavailable" : "http_error";
  }
}
