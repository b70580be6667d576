import { dateOrNull, isRecord, num, numOrNull, str, strOrNull } from "./decode.js";
import type { Problem } from "./types.js";

/** Why an `X-IP-Token` was refused (docs/wire.md). */
export type InvalidIpTokenReason =
  | "malformed"
  | "expired"
  | "wrong_app"
  | "bad_signature"
  | "alg_not_allowed"
  | "unknown_key"
  | "wrong_issuer"
  | "bad_subject"
  | "not_accepted"
  | (string & {});

export type NoGpuAvailableReason = "queue_disabled" | "queue_full" | "no_capacity" | (string & {});

export interface FieldError {
  readonly field: string;
  readonly message: string;
}

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
  /** What to do next for this tier (sign in, upgrade, enable overage…). */
  readonly nextStep: string | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.requested = num(problem["requested"]);
    this.left = num(problem["left"]);
    this.quota = num(problem["quota"]);
    this.used = num(problem["used"]);
    this.reserved = num(problem["reserved"]);
    this.tier = str(problem["tier"]);
    this.identity = str(problem["identity"]);
    this.resetsAt = dateOrNull(problem["resets_at"]);
    this.retryAt = dateOrNull(problem["retry_at"]);
    this.nextStep = strOrNull(problem["next_step"]);
  }
}

/** The call can never fit: longer than the tier's `maxDuration`, or costlier than the whole quota. */
export class DurationTooLongError extends GpupoolError {
  override readonly name: string = "DurationTooLongError";
  readonly duration: number;
  readonly maxDuration: number;
  readonly cost: number;
  readonly quota: number;
  readonly tier: string;
  readonly identity: string;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.duration = num(problem["duration"]);
    this.maxDuration = num(problem["max_duration"]);
    this.cost = num(problem["cost"]);
    this.quota = num(problem["quota"]);
    this.tier = str(problem["tier"]);
    this.identity = str(problem["identity"]);
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
    this.runs = num(problem["runs"]);
    this.maxRuns = num(problem["max_runs"]);
    this.tier = str(problem["tier"]);
    this.identity = str(problem["identity"]);
    this.resetsAt = dateOrNull(problem["resets_at"]);
  }
}

/** An `X-IP-Token` was sent but refused; the server never falls back to another identity. */
export class InvalidIpTokenError extends GpupoolError {
  override readonly name: string = "InvalidIpTokenError";
  readonly reason: InvalidIpTokenReason;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.reason = str(problem["reason"]);
  }
}

/** The lease waited in the queue longer than the server's queue timeout; nothing was charged. */
export class QueueTimeoutError extends GpupoolError {
  override readonly name: string = "QueueTimeoutError";
  /** Seconds spent waiting. */
  readonly waited: number | null;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.waited = numOrNull(problem["waited"]);
  }
}

/** No slot now and the request may not wait (queue disabled or full, or no capacity at all). */
export class NoGpuAvailableError extends GpupoolError {
  override readonly name: string = "NoGpuAvailableError";
  readonly reason: NoGpuAvailableReason;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    this.reason = str(problem["reason"]);
  }
}

/** Missing or unknown app key, user token or admin token. */
export class UnauthorizedError extends GpupoolError {
  override readonly name: string = "UnauthorizedError";
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
    const errors = problem["errors"];
    this.errors = Array.isArray(errors)
      ? errors.filter(isRecord).map((e) => ({ field: str(e["field"]), message: str(e["message"]) }))
      : [];
  }
}

/** The control plane could not be reached, did not answer in time, or failed (5xx). */
export class ServerUnavailableError extends GpupoolError {
  override readonly name: string = "ServerUnavailableError";
  /** The URL that was requested. */
  readonly url: string;

  constructor(problem: Problem, options: GpupoolErrorOptions & { readonly url: string }) {
    super(problem, options);
    this.url = options.url;
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

type ErrorClass = new (problem: Problem, options?: GpupoolErrorOptions) => GpupoolError;

const errorClasses: Readonly<Record<string, ErrorClass>> = {
  quota_exceeded: QuotaExceededError,
  duration_too_long: DurationTooLongError,
  runs_exceeded: RunsExceededError,
  invalid_ip_token: InvalidIpTokenError,
  queue_timeout: QueueTimeoutError,
  no_gpu_available: NoGpuAvailableError,
  unauthorized: UnauthorizedError,
  not_found: NotFoundError,
  invalid_request: InvalidRequestError,
};

/** Whether `code` has a dedicated error class (internal: decides if a 5xx is "server unavailable"). */
export function hasErrorClass(code: string): boolean {
  return Object.hasOwn(errorClasses, code);
}

/** Turns a problem object into the matching typed error; unknown codes give a plain `GpupoolError`. */
export function problemToError(problem: Problem, options?: GpupoolErrorOptions): GpupoolError {
  const ErrorClass = Object.hasOwn(errorClasses, problem.code) ? errorClasses[problem.code] : undefined;
  return ErrorClass === undefined ? new GpupoolError(problem, options) : new ErrorClass(problem, options);
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
