// The SDK's public shapes: the wire objects of @gpupool/contract with camelCased keys and Dates for
// times. They are derived from the contract's types, so a field added there shows up here (or
// fails to compile in wire.ts, which converts them) rather than drifting.
// Amounts are seconds unless the name says otherwise; times are Date objects.
import type * as wire from "@gpupool/contract";

type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** A wire object's fields camelCased and read-only; the fields named in `Times` become Dates. */
export type Camelized<T, Times extends keyof T = never> = {
  readonly [K in keyof T as CamelCase<K & string>]: K extends Times
    ? null extends T[K]
      ? Date | null
      : Date
    : T[K] extends readonly (infer E)[]
      ? readonly E[]
      : T[K];
};

/** Account tier of a charged identity (`anonymous`, `free`, `pro`, `team`, `enterprise`, or an operator-defined one). */
export type Tier = string;

export type IdentityKind = wire.IdentityKind;

/** Who a lease or a quota is charged to. */
export type Identity = Camelized<wire.Identity>;

/** GPU slice size: `large` is half a GPU, `xlarge` a whole one (operators may add more). */
export type Size = "large" | "xlarge" | (string & {});

export type LeaseStatus = wire.LeaseStatus;

/** Why a lease is waiting: no free slot on any node, or the app's concurrency limit. */
export type QueueReason = wire.QueueReason;

/** Every code the control plane sends (its problems' `code`). */
export type ProblemCode = wire.ProblemCode;

/**
 * An RFC 9457 problem exactly as the server sent it (snake_case fields included),
 * kept so callers can read fields the SDK does not model. `code` is one of the pool's codes,
 * or one the SDK reports in its own name (`server_unavailable`, `invalid_response`, …).
 */
export interface Problem extends Readonly<Pick<wire.Problem, "type" | "title" | "status" | "detail">> {
  readonly code: ProblemCode | (string & {});
  readonly [field: string]: unknown;
}

/** What paid for a call: the quota part, the overage part paid from credits, the hold and the charge (micro-units). */
export type LeaseBilling = Camelized<wire.LeaseBilling>;

/** A user's credits at a glance, in micro-units of `currency` (`display` has each amount for people). */
export type Credits = Camelized<wire.Credits>;

/** Why credits do not extend an identity's quota (`blockedBy`); a newer server may add reasons. */
export type OverageBlocker = wire.OverageBlocker | (string & {});

/** Whether credits pay for calls past the quota, and if not, why not (`blockedBy`); the month's cap, spent and held. */
export type Overage = Omit<Camelized<wire.Overage, "month_ends_at">, "blockedBy"> & {
  readonly blockedBy: OverageBlocker | null;
};

/**
 * GPU-time quota state of one identity for its current window (`left = quota − used − reserved`),
 * with the user's credits (null for an identity without a wallet) and whether overage engages.
 */
export type Quota = Omit<Camelized<wire.Quota, "window_started_at" | "resets_at">, "credits" | "overage"> & {
  readonly credits: Credits | null;
  /** Null only from a server older than billing. */
  readonly overage: Overage | null;
};

/** The GPU (or part of one) a lease was granted. */
export type Device = Camelized<wire.Device>;

type LeaseTimes = "queued_at" | "granted_at" | "deadline" | "ended_at";

export type Lease = Omit<Camelized<wire.Lease, LeaseTimes>, "size" | "problem" | "quota" | "billing" | "etaMaxS"> & {
  readonly size: Size;
  /** Which bucket pays: `quotaS` from the daily quota, `overageS` from credits (held, then charged at the end). */
  readonly billing: LeaseBilling | null;
  /** While queued: the bound on the wait (`etaS` is the expected wait); null when unknown or not queued. */
  readonly etaMaxS: number | null;
  /** Why it ended without a grant or failed, as a whole problem (status and title from the code). */
  readonly problem: Problem | null;
  /** Null in lists and in events. */
  readonly quota: Quota | null;
};

/** Progress of a queued lease, passed to `onQueue`. */
export type QueueUpdate = Omit<Camelized<wire.QueuedEvent>, "etaMaxS"> & {
  readonly leaseId: string;
  /** The bound on the wait (`etaS` is the expected wait); null when unknown. */
  readonly etaMaxS: number | null;
};

export type ReleaseResult = Omit<Camelized<wire.ReleaseResult>, "quota" | "billing"> & {
  readonly quota: Quota;
  readonly billing: LeaseBilling | null;
};

export type DiagnosisStep = Camelized<wire.DiagnosisStep>;

type VerdictOf<O extends wire.DiagnosisVerdict["outcome"]> = Extract<wire.DiagnosisVerdict, { outcome: O }>;

/** The verdict flattened: the fields a verdict of another outcome has not are null. */
export interface DiagnosisVerdict {
  /** `admitted`: the quota allows it; this control-plane replica does not run the scheduler, so whether a GPU is free now is not known here. */
  readonly outcome: wire.DiagnosisVerdict["outcome"];
  readonly position: VerdictOf<"queued">["position"] | null;
  /** Why it would wait, when queued. */
  readonly reason: VerdictOf<"queued">["reason"] | null;
  /** Expected seconds to the grant, when queued; null if unknown. */
  readonly etaS: VerdictOf<"queued">["eta_s"];
  /** The bound on that wait (every call holding its whole reservation); null if unknown. */
  readonly etaMaxS: number | null;
  readonly problem: Problem | null;
}

/** A billing bucket and whether it applies to this call (credits never extend the GPU quota). */
export type DiagnosisBucket = Camelized<wire.DiagnosisBucket>;

/** The call being diagnosed: its duration and size, and what it would reserve. */
export type DiagnosisRequest = Camelized<wire.DiagnosisRequest>;

export type DiagnosisCause = Camelized<wire.DiagnosisCause>;

/** What a lease request would be charged to, why, and what it would get now. */
export interface Diagnosis {
  /** Who the call would be charged to; null when it would be refused before attribution (a bad X-IP-Token). */
  readonly identity: Identity | null;
  readonly steps: readonly DiagnosisStep[];
  readonly request: DiagnosisRequest | null;
  readonly quota: Quota | null;
  readonly buckets: readonly DiagnosisBucket[];
  readonly verdict: DiagnosisVerdict;
  readonly causes: readonly DiagnosisCause[];
}

export type IpToken = Pick<Camelized<wire.IpToken, "expires_at">, "token" | "expiresAt" | "subject">;

export type User = Pick<Camelized<wire.User>, "id" | "name" | "tier" | "quotaOverride"> & {
  /** The user's quota now; null in lists. */
  readonly quota: Quota | null;
};

export type CreatedUser = Pick<Camelized<wire.CreatedUser>, "id" | "name" | "tier" | "token">;

export type App = Pick<Camelized<wire.App>, "id" | "name" | "owner" | "maxConcurrency">;

export type CreatedApp = App & Pick<Camelized<wire.CreatedApp>, "key">;

/** A node or edge credential; `key` is shown only once. */
export type CreatedPrincipal = Camelized<wire.CreatedKey>;

export type PoolNode = Camelized<wire.PoolNode, "heartbeat_at">;
export type PoolDevice = Camelized<wire.PoolDevice>;
export type PoolActiveLease = Camelized<wire.PoolActiveLease, "deadline">;
export type PoolQueueEntry = Camelized<wire.PoolQueueEntry>;

/** The pool as an operator sees it: nodes, GPUs and who holds each slot, active leases, the queue. */
export type PoolState = Omit<Camelized<wire.PoolView>, "nodes" | "devices" | "active" | "queue" | "queued"> & {
  readonly nodes: readonly PoolNode[];
  readonly devices: readonly PoolDevice[];
  readonly active: readonly PoolActiveLease[];
  /** The first in line (at most 200); `queued` counts them all. */
  readonly queue: readonly PoolQueueEntry[];
  readonly queued: QueueCounts;
};

/** Every queued call counted: in all, listed in `queue`, by why they wait and by kind of identity. */
export type QueueCounts = Camelized<wire.QueueCounts>;
