/**
 * Every error a caller can cause has a stable code. The HTTP status of each lives here, in one
 * table, so adding a code without deciding its status does not compile.
 */
export const PROBLEM_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  invalid_ip_token: 401,
  invalid_session: 401,
  invalid_credentials: 401,
  forbidden: 403,
  admin_disabled: 403,
  not_found: 404,
  queue_timeout: 408,
  conflict: 409,
  lease_not_active: 409,
  node_not_registered: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  duration_too_long: 422,
  quota_exceeded: 429,
  runs_exceeded: 429,
  internal: 500,
  upstream_unavailable: 502,
  no_gpu_available: 503,
  storage_unavailable: 503,
  control_plane_unavailable: 503,
} as const satisfies Record<string, number>;

export type ProblemCode = keyof typeof PROBLEM_STATUS;

const TITLES: Record<ProblemCode, string> = {
  invalid_request: "Invalid request",
  unauthorized: "Not authenticated",
  invalid_ip_token: "Invalid X-IP-Token",
  invalid_session: "Invalid session",
  invalid_credentials: "Invalid credentials",
  forbidden: "Not allowed",
  admin_disabled: "Admin API disabled",
  not_found: "Not found",
  queue_timeout: "Queue timeout",
  conflict: "Conflict",
  lease_not_active: "Lease not active",
  node_not_registered: "Node not registered",
  payload_too_large: "Request body too large",
  unsupported_media_type: "Unsupported media type",
  duration_too_long: "Requested duration can never fit",
  quota_exceeded: "GPU quota exceeded",
  runs_exceeded: "Daily runs limit reached",
  internal: "Internal error",
  upstream_unavailable: "App not answering",
  no_gpu_available: "No GPU available",
  storage_unavailable: "Storage unavailable",
  control_plane_unavailable: "Pool not answering",
};

/** RFC 9457 problem details with gpupool's stable `code`. */
export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: ProblemCode;
  readonly [field: string]: unknown;
}

export function problem(code: ProblemCode, detail: string, fields: Record<string, unknown> = {}): Problem {
  return { ...fields, type: `urn:gpupool:problem:${code}`, title: TITLES[code], status: PROBLEM_STATUS[code], detail, code };
}

/** A broken rule, carrying the problem to show. Bugs stay plain Errors. */
export class DomainError extends Error {
  readonly problem: Problem;
  constructor(p: Problem) {
    super(p.detail);
    this.name = "DomainError";
    this.problem = p;
  }
  get code(): ProblemCode {
    return this.problem.code;
  }
}

export function fail(code: ProblemCode, detail: string, fields?: Record<string, unknown>): never {
  throw new DomainError(problem(code, detail, fields));
}
