import type { LeaseRecord } from "../../storage/store.js";
import type { AdmitInput, AdmitResult, RequestTrace } from "./leases.js";

export type { RequestTrace } from "./leases.js";

/** One admission's span, started when the request reaches the decision and ended with its answer. */
export interface AdmissionTrace {
  /**
   * The answer (returned as is): ends the span; an admitted lease keeps its trace for what follows
   * (queue wait, grant, end). Only the first call counts.
   */
  answered<R extends AdmitResult>(result: R): R;
  /** It failed (storage, a bug): ends the span as an error. */
  failed(err: unknown): void;
}

/**
 * What the lease use cases tell tracing (main/lease-spans.ts records OpenTelemetry spans; off:
 * `noLeaseTracing`, which does nothing). Called after the change is durable, never inside a
 * transaction; each call is cheap and never throws.
 */
export interface LeaseTracing {
  /** Admission begins, under its request's trace context (`input.trace`). */
  admission(input: AdmitInput): AdmissionTrace;
  /** A queued lease was granted (by the scheduler, after a change). */
  granted(lease: LeaseRecord): void;
  /** A release or cancel request for this lease arrived (its request's trace context is noted). */
  releasing(leaseId: string, trace: RequestTrace): void;
  /** The lease ended: released, expired, cancelled or failed, and settled. */
  ended(lease: LeaseRecord): void;
}

const noAdmission: AdmissionTrace = { answered: (result) => result, failed: () => undefined };

/** Tracing off: nothing is recorded, nothing is kept. */
export const noLeaseTracing: LeaseTracing = {
  admission: () => noAdmission,
  granted: () => undefined,
  releasing: () => undefined,
  ended: () => undefined,
};
