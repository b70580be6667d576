import type { Problem, QueuePlace, SizePolicy, Via } from "@gpupool/core";
import type { LeaseRecord } from "../../storage/store.js";
import type { ChargedParty, IdentityQuota } from "../accounts/accounts.js";
import type { IdempotencyKey } from "./idempotency.js";

/**
 * The trace context of the request that asks (opaque here: main/http-tracing.ts makes it), handed
 * down explicitly from the route; undefined when tracing is off or the call came from no request.
 */
export type RequestTrace = { readonly __requestTrace: unique symbol } | undefined;

export interface AdmitInput {
  readonly appId: string | null;
  readonly charged: ChargedParty;
  readonly via: Via;
  readonly durationMs: number;
  readonly size: SizePolicy;
  readonly queue: boolean;
  /** Only devices of this node may be granted (a request through the node's agent); null: any. */
  readonly node: string | null;
  /** The request's Idempotency-Key, scoped (a retry returns the lease its first request made); null without one. */
  readonly idempotency: IdempotencyKey | null;
  /** How long the caller will wait for a slot (ms); null or absent: its tier's queue timeout. */
  readonly maxWaitMs?: number | null;
  /** Refuse it at once if it is expected to wait longer than that (predicted_wait); absent: false. */
  readonly refuseLongWait?: boolean;
  /** The asking request's trace context (spans of the lease's life nest under it); absent: none. */
  readonly trace?: RequestTrace;
}

export type AdmitResult =
  | { readonly kind: "granted"; readonly lease: LeaseRecord; readonly quota: IdentityQuota }
  | { readonly kind: "queued"; readonly lease: LeaseRecord; readonly place: QueuePlace; readonly quota: IdentityQuota }
  | { readonly kind: "denied"; readonly problem: Problem; readonly retryAfterS: number | null }
  /** Only for a retry (same Idempotency-Key) of a request whose lease has ended without a GPU. */
  | { readonly kind: "ended"; readonly lease: LeaseRecord; readonly quota: IdentityQuota };

export interface Released {
  readonly lease: LeaseRecord;
  readonly quota: IdentityQuota;
}

/**
 * The lease lifecycle as the rest of the server uses it, whichever replica serves the call: the
 * leader runs these itself (LeaderLeases), a replica that does not lead through the database and
 * the leader (replication/FollowerLeases). The composition root hands routes the replica's
 * current choice (replication/Replica).
 */
export interface LeaseLifecycle {
  admit(input: AdmitInput): Promise<AdmitResult>;
  /** Release, or cancel a queued lease. Idempotent. */
  release(leaseId: string, failed: boolean, trace?: RequestTrace): Promise<Released>;
  /** A queued lease's place in line (null: not queued, or not known here yet). */
  position(leaseId: string): QueuePlace | null;
  /** Someone here follows a queued lease's events: its place must reach this replica. */
  watch(leaseId: string): void;
  /** A live lease as this replica last wrote it, when its memory is the truth (else null: read the store). */
  liveLease(leaseId: string): LeaseRecord | null;
}
