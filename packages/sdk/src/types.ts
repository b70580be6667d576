// Public, camelCased shapes of the v1 wire objects (docs/wire.md).
// Amounts are seconds unless the name says otherwise; times are Date objects.

/** Account tier of a charged identity (`anonymous`, `free`, `pro`, `team`, `enterprise`, or an operator-defined one). */
export type Tier = string;

export type IdentityKind = "user" | "ip" | "app";

/** Who a lease or a quota is charged to. */
export interface Identity {
  readonly kind: IdentityKind;
  readonly id: string;
  readonly tier: Tier;
}

/** GPU slice size: `large` is half a GPU, `xlarge` a whole one (operators may add more). */
export type Size = "large" | "xlarge" | (string & {});

export type LeaseStatus = "queued" | "active" | "released" | "expired" | "cancelled" | "failed";

/** Why a lease is waiting: no free slot on any node, or the app's concurrency limit. */
export type QueueReason = "node" | "concurrency";

/**
 * An RFC 9457 problem exactly as the server sent it (snake_case fields included),
 * kept so callers can read fields the SDK does not model.
 */
export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
  readonly [field: string]: unknown;
}

/** GPU-time quota state of one identity for its current window. */
export interface Quota {
  readonly identity: Identity;
  readonly quota: number;
  readonly used: number;
  readonly reserved: number;
  /** `quota − used − reserved`. */
  readonly left: number;
  readonly bonus: number;
  readonly window: number;
  /** Null until the identity's first grant opens a window. */
  readonly windowStartedAt: Date | null;
  /** Null until the identity's first grant opens a window. */
  readonly resetsAt: Date | null;
  readonly priority: number;
  readonly maxDuration: number;
  readonly runs: number | null;
  readonly maxRuns: number | null;
}

/** The GPU (or part of one) a lease was granted. */
export interface Device {
  readonly node: string;
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly slots: readonly number[];
}

export interface Lease {
  readonly id: string;
  readonly status: LeaseStatus;
  readonly app: string | null;
  readonly identity: Identity;
  readonly size: Size;
  readonly duration: number;
  readonly reserved: number;
  readonly cost: number;
  /** Null while queued and after the GPU was reclaimed. */
  readonly device: Device | null;
  readonly queuedAt: Date | null;
  readonly grantedAt: Date | null;
  readonly deadline: Date | null;
  readonly endedAt: Date | null;
  readonly position: number | null;
  readonly reason: QueueReason | null;
  readonly heldMs: number | null;
  readonly charged: number;
  readonly refunded: number;
  readonly problem: Problem | null;
  readonly quota: Quota | null;
}

/** Progress of a queued lease, passed to `onQueue`. */
export interface QueueUpdate {
  readonly leaseId: string;
  readonly position: number;
  readonly reason: QueueReason;
  /** Server's estimate of the wait in seconds, when it has one. */
  readonly etaS: number | null;
}

export interface ReleaseResult {
  readonly id: string;
  readonly status: LeaseStatus;
  readonly heldMs: number | null;
  readonly charged: number;
  readonly refunded: number;
  readonly quota: Quota | null;
}

export interface DiagnosisStep {
  readonly step: string;
  readonly outcome: string;
  readonly detail: string;
}

export interface DiagnosisVerdict {
  /** `admitted`: the quota allows it; this control-plane replica does not run the scheduler, so whether a GPU is free now is not known here. */
  readonly outcome: "granted" | "admitted" | "queued" | "rejected";
  readonly position: number | null;
  /** Why it would wait, when queued. */
  readonly reason: "node" | "concurrency" | null;
  /** Estimated seconds to the grant, when queued (an upper-bound style estimate); null if unknown. */
  readonly etaS: number | null;
  readonly problem: Problem | null;
}

/** A billing bucket and whether it applies to this call (credits never extend the GPU quota). */
export interface DiagnosisBucket {
  readonly bucket: string;
  readonly applies: boolean;
  readonly detail: string;
}

/** The call being diagnosed: its duration and size, and what it would reserve. */
export interface DiagnosisRequest {
  readonly duration: number;
  readonly size: string;
  readonly cost: number;
  readonly reserves: number;
}

export interface DiagnosisCause {
  readonly rank: number;
  readonly cause: string;
  readonly fix: string;
}

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

export interface IpToken {
  readonly token: string;
  readonly expiresAt: Date | null;
  /** `user:<id>` or `ip:<address>`. */
  readonly subject: string;
}

export interface User {
  readonly id: string;
  readonly name: string;
  readonly tier: Tier;
  /** Per-user quota in seconds replacing the tier default, or null. */
  readonly quotaOverride: number | null;
  readonly quota: Quota | null;
}

export interface CreatedUser {
  readonly id: string;
  readonly name: string;
  readonly tier: Tier;
  /** The user's access token; the server shows it only once. */
  readonly token: string;
}

export interface App {
  readonly id: string;
  readonly name: string;
  readonly owner: string;
  readonly maxConcurrency: number | null;
}

export interface CreatedApp extends App {
  /** The app key; the server shows it only once. */
  readonly key: string;
}

/** A node or edge credential; `key` is shown only once. */
export interface CreatedPrincipal {
  readonly id: string;
  readonly name: string;
  readonly key: string;
}

/** Snapshot of nodes, devices, slots, active leases and the queue, keys camelCased from the wire. */
export type PoolState = Readonly<Record<string, unknown>>;
