import * as z from "zod/mini";
import { Count, Identity, QueueReason, Seconds, Size, describe, matching } from "./common.js";
import { Problem } from "./problem-objects.js";
import { Quota } from "./quota.js";

/** `GET /v1/diagnose` query: the call to diagnose (as strings, since they are query parameters). */
export const DiagnoseQuery = z.strictObject({
  duration: describe(
    z.optional(
      z
        .string()
        .check(
          matching(/^[0-9]{1,6}(\.[0-9]{1,3})?$/, "a number of seconds (digits, at most 3 decimals), e.g. 60 or 1.5"),
        ),
    ),
    "Seconds, more than 0 (default 60).",
  ),
  size: describe(z.optional(z.string()), "A configured size (default `large`)."),
  max_wait: describe(
    z.optional(
      z
        .string()
        .check(
          matching(/^[0-9]{1,6}(\.[0-9]{1,3})?$/, "a number of seconds (digits, at most 3 decimals), e.g. 30 or 1.5"),
        ),
    ),
    "Seconds the call would be willing to wait for a slot, as `max_wait` in the lease request (default and cap: the tier's queue timeout): a call not expected to start in time gets the `predicted_wait` refusal it would get.",
  ),
});
export type DiagnoseQuery = z.infer<typeof DiagnoseQuery>;

export const DIAGNOSIS_STEP_OUTCOMES = ["ok", "fallback", "rejected", "info"] as const;

/** One step of deciding who is charged: each header seen, each fallback taken. */
export const DiagnosisStep = z.object({
  step: describe(z.string(), "`authorization`, `x-ip-token` or `charged_identity`."),
  outcome: z.enum(DIAGNOSIS_STEP_OUTCOMES),
  detail: z.string(),
});
export type DiagnosisStep = z.infer<typeof DiagnosisStep>;

/** The call being diagnosed and what it would reserve. */
export const DiagnosisRequest = z.object({
  duration: Seconds,
  size: Size,
  cost: describe(z.number(), "The size's cost multiplier."),
  reserves: describe(Seconds, "`duration × cost`."),
});
export type DiagnosisRequest = z.infer<typeof DiagnosisRequest>;

/** A billing bucket and whether it applies to this call (credits never extend the GPU quota). */
export const DiagnosisBucket = z.object({
  bucket: describe(z.string(), "`gpu_quota`, `credits` or `overage`."),
  applies: z.boolean(),
  detail: z.string(),
});
export type DiagnosisBucket = z.infer<typeof DiagnosisBucket>;

/** What `POST /v1/leases` would answer now. */
export const DiagnosisVerdict = z.discriminatedUnion("outcome", [
  z.object({ outcome: z.literal("granted") }),
  describe(
    z.object({ outcome: z.literal("admitted") }),
    "The quota allows it; a replica that does not lead cannot tell whether a GPU is free now.",
  ),
  z.object({
    outcome: z.literal("queued"),
    position: describe(z.int(), "Where it would wait (1 is next)."),
    reason: QueueReason,
    eta_s: describe(z.nullable(Count), "Expected seconds to the grant (see the lease's `eta_s`); null when unknown."),
    eta_max_s: describe(
      z.optional(z.nullable(Count)),
      "The bound on the wait (see the lease's `eta_max_s`); null when unknown. Absent from servers before it existed.",
    ),
  }),
  describe(
    z.object({ outcome: z.literal("rejected"), problem: Problem }),
    "`problem`: the exact problem the lease request would get.",
  ),
]);
export type DiagnosisVerdict = z.infer<typeof DiagnosisVerdict>;

export const DiagnosisCause = z.object({
  rank: describe(z.int(), "1 is the most likely."),
  cause: z.string(),
  fix: z.string(),
});
export type DiagnosisCause = z.infer<typeof DiagnosisCause>;

/** Who a lease request would be charged to and why, and what it would get now, without reserving anything. */
export const Diagnosis = z.object({
  identity: describe(
    z.nullable(Identity),
    "Who would be charged; null when the request is refused before attribution (a bad X-IP-Token).",
  ),
  steps: z.array(DiagnosisStep),
  request: DiagnosisRequest,
  quota: describe(z.nullable(Quota), "The identity's quota now; null with `identity`."),
  buckets: describe(z.array(DiagnosisBucket), "Each billing bucket, whether it applies to this call and why."),
  verdict: DiagnosisVerdict,
  causes: describe(
    z.array(DiagnosisCause),
    "Likely causes and fixes, most likely first: why it is charged where it is, or refused.",
  ),
});
export type Diagnosis = z.infer<typeof Diagnosis>;
