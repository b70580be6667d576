import { PROBLEM_STATUS, PROBLEM_TITLES, problemType } from "@gpupool/contract/problems";
import type { ProblemCode } from "@gpupool/contract/problems";

// The code → status table and the titles belong to the wire (`@gpupool/contract`): a code added
// there without a status or title does not compile. They are re-exported so core's API is unchanged.
export { PROBLEM_STATUS };
export type { ProblemCode };

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
  return {
    ...fields,
    type: problemType(code),
    title: PROBLEM_TITLES[code],
    status: PROBLEM_STATUS[code],
    detail,
    code,
  };
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
