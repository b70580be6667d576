// Which error class each problem code becomes: one table, typed against the contract's codes.
import {
  DurationTooLongError,
  ForbiddenError,
  GpupoolError,
  InvalidIpTokenError,
  InvalidRequestError,
  NoGpuAvailableError,
  NotFoundError,
  QueueTimeoutError,
  QuotaExceededError,
  RunsExceededError,
  ServerUnavailableError,
  UnauthorizedError,
} from "./errors.js";
import type { GpupoolErrorOptions } from "./errors.js";
import { CreditsExhaustedError, OverageNotAvailableError, SpendCapReachedError } from "./errors-billing.js";
import type { Problem, ProblemCode } from "./types.js";

type ErrorClass = new (
  problem: Problem,
  options?: GpupoolErrorOptions & { readonly url?: string | undefined },
) => GpupoolError;

/**
 * The error class of every code the pool sends. Typed against the contract's codes, so a new code
 * does not compile until it is given one here. `GpupoolError` itself for codes that carry no fields
 * of their own and need no branch of their own (branch on `code`).
 */
const ERROR_CLASSES = {
  invalid_request: InvalidRequestError,
  unauthorized: UnauthorizedError,
  invalid_ip_token: InvalidIpTokenError,
  invalid_session: UnauthorizedError,
  invalid_credentials: UnauthorizedError,
  credits_exhausted: CreditsExhaustedError,
  spend_cap_reached: SpendCapReachedError,
  forbidden: ForbiddenError,
  admin_disabled: ForbiddenError,
  csrf_failed: ForbiddenError,
  not_found: NotFoundError,
  queue_timeout: QueueTimeoutError,
  request_timeout: InvalidRequestError,
  conflict: GpupoolError,
  lease_not_active: GpupoolError,
  node_not_registered: GpupoolError,
  overage_not_available: OverageNotAvailableError,
  idempotency_key_reused: GpupoolError,
  payload_too_large: InvalidRequestError,
  uri_too_long: InvalidRequestError,
  unsupported_media_type: InvalidRequestError,
  duration_too_long: DurationTooLongError,
  quota_exceeded: QuotaExceededError,
  runs_exceeded: RunsExceededError,
  headers_too_large: InvalidRequestError,
  internal: ServerUnavailableError,
  upstream_unavailable: ServerUnavailableError,
  no_gpu_available: NoGpuAvailableError,
  storage_unavailable: ServerUnavailableError,
  control_plane_unavailable: ServerUnavailableError,
} as const satisfies Record<ProblemCode, ErrorClass>;

/** The class for a code the pool sends, or undefined for any other code. */
function errorClassOf(code: string): ErrorClass | undefined {
  return Object.hasOwn(ERROR_CLASSES, code) ? ERROR_CLASSES[code as ProblemCode] : undefined;
}

/**
 * Whether a problem with this code (answered with a 5xx) means the server or something it depends
 * on is unavailable, rather than a refusal of this request (internal: decides the error's message).
 */
export function meansUnavailable(code: string): boolean {
  const ErrorClass = errorClassOf(code);
  return (
    ErrorClass === undefined ||
    ErrorClass === ServerUnavailableError ||
    ErrorClass.prototype instanceof ServerUnavailableError
  );
}

/** A 5xx meaning unavailable: its code's class when that is a ServerUnavailableError, else a plain one. */
export function serverUnavailableError(
  problem: Problem,
  options: GpupoolErrorOptions & { readonly url: string },
): ServerUnavailableError {
  const ErrorClass = errorClassOf(problem.code);
  if (
    ErrorClass !== undefined &&
    (ErrorClass === ServerUnavailableError || ErrorClass.prototype instanceof ServerUnavailableError)
  ) {
    return new ErrorClass(problem, options) as ServerUnavailableError;
  }
  return new ServerUnavailableError(problem, options);
}

/** Turns a problem object into the matching typed error; unknown codes give a plain `GpupoolError`. */
export function problemToError(
  problem: Problem,
  options?: GpupoolErrorOptions & { readonly url?: string | undefined },
): GpupoolError {
  const ErrorClass = errorClassOf(problem.code);
  return ErrorClass === undefined ? new GpupoolError(problem, options) : new ErrorClass(problem, options);
}
