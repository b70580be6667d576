import type { Via } from "../identity/attribution.js";
import type { Identity } from "../identity/identity.js";
import {
  noCapacityProblem,
  nodeNotRegisteredProblem,
  queueDisabledProblem,
  queueFullProblem,
  expectedWaitLimitMs,
  predictedWaitHeadroomOf,
  predictedWaitProblem,
  predictedWaitRetryS,
} from "./pool-refusals.js";
import type { Policy, SizePolicy, TierPolicy } from "../policy.js";
import { queueTimeoutOf } from "../policy.js";
import type { QueuePlace } from "../scheduling/priority-scheduler.js";
import type { Problem } from "../problem.js";
import type { LedgerState } from "../accounts/ledger.js";
import { quotaView } from "../accounts/ledger.js";
import type { ReserveOutcome } from "../accounts/reserve.js";
import { reserve } from "../accounts/reserve.js";
import type { Split, WalletState } from "../accounts/overage.js";
import { overageBlocker } from "../accounts/overage.js";

/**
 * The one admission decision: whether a GPU call is admitted, and if not, the refusal a person
 * reads. The leader, a replica that does not lead, `diagnose` and the simulator all call
 * `decideAdmission`; nothing else decides admission or writes a refusal's text. Pure: the
 * account and where the pool would put the call come in as values.
 */

/** Who would be charged, as admission sees them. */
export interface AdmissionAccount {
  readonly identity: Identity;
  readonly tier: TierPolicy;
  /** A per-user quota (ms) replacing the tier's; null: the tier's. */
  readonly overrideMs: number | null;
  /** The identity's ledger, rolled to `request.now`. */
  readonly ledger: LedgerState;
  /**
   * When one of the identity's calls in flight is certain to have ended (null: none, or not
   * looked up). Only a quota refusal uses it, for an honest retry time: look it up when
   * `needsInFlightEnd` says so, never on the way to a grant.
   */
  readonly inFlightEnd: number | null;
  /** The user's wallet and billing settings (null or absent: no wallet — not a user, or billing is off). */
  readonly wallet?: WalletState | null;
}

export interface AdmissionRequest {
  readonly durationMs: number;
  readonly size: SizePolicy;
  /** False: refuse rather than wait for a slot. */
  readonly queue: boolean;
  /** How the call named its identity (the refusal says why this identity was charged). */
  readonly via: Via;
  /** Only this node's GPUs may take the call (a call through its agent); null: any shared GPU. */
  readonly node: string | null;
  readonly now: number;
  /**
   * How long the caller will wait for a slot (ms; capped at the tier's queue timeout). A call
   * expected to wait longer is refused at once (`predicted_wait`). Null: as long as the queue
   * timeout, with the same refusal. Absent: as long as the queue timeout, never refused for its
   * expected wait (the device API's behaviour unless configured).
   */
  readonly maxWaitMs?: number | null;
}

/** How long a call may wait in the queue: the caller's `maxWaitMs`, at most the tier's queue timeout. */
export function waitLimitMs(
  policy: Policy,
  tier: TierPolicy | undefined,
  maxWaitMs: number | null | undefined,
): number {
  const timeout = queueTimeoutOf(policy, tier);
  return maxWaitMs === null || maxWaitMs === undefined ? timeout : Math.min(timeout, Math.max(0, maxWaitMs));
}

/** Where the pool would put the call now, as whoever decides can tell. */
export type Placement =
  /** A free slot takes it at once. */
  | { readonly kind: "now" }
  /** It would wait in the queue: its place there, and the queue's length before it. */
  | { readonly kind: "wait"; readonly place: QueuePlace | null; readonly queued: number }
  /** Placed after admission by the scheduler (a replica that does not lead; the simulator's FIFO-or-not queue). */
  | { readonly kind: "later" }
  /** The call's node has no GPUs in the pool (its agent never registered or went silent). */
  | { readonly kind: "node_missing" }
  /** No GPU the call may use could ever take its size; `onlyAgents`: the pool's GPUs are all agents' and the call did not come through one. */
  | { readonly kind: "never"; readonly onlyAgents: boolean };

export type AdmissionDecision =
  | { readonly kind: "refused"; readonly problem: Problem; readonly retryAfterS: number | null }
  | {
      readonly kind: "admitted";
      /** granted: on a slot now; queued: waits in the queue; pending: the scheduler places it later. */
      readonly outcome: "granted" | "queued" | "pending";
      readonly reservedMs: number;
      /** What the quota reserves and what credits pay (the hold to place on the wallet with the lease). */
      readonly split: Split;
      /** The ledger with the reservation (and the run) added: write it with the lease. */
      readonly ledger: LedgerState;
    };

/** What the quota side allows: the reservation, or the refusal (see `reserve`). */
export function allowance(policy: Policy, account: AdmissionAccount, request: AdmissionRequest): ReserveOutcome {
  return reserve({
    policy,
    identity: account.identity,
    tier: account.tier,
    overrideMs: account.overrideMs,
    ledger: account.ledger,
    durationMs: request.durationMs,
    size: request.size,
    now: request.now,
    via: request.via,
    earliestInFlightEnd: account.inFlightEnd,
    overageBlocker: overageBlocker(policy, account.identity, account.wallet ?? null),
    wallet: account.wallet ?? null,
  });
}

/**
 * Whether the decision would refuse the call for quota while the identity has calls in flight,
 * so that `account.inFlightEnd` changes the refusal's retry time and must be looked up.
 */
export function needsInFlightEnd(policy: Policy, account: AdmissionAccount, request: AdmissionRequest): boolean {
  if (account.ledger.reservedMs === 0) return false;
  const first = allowance(policy, { ...account, inFlightEnd: null }, request);
  return !first.ok && first.problem.code === "quota_exceeded";
}

/** The share of its quota the identity has left before this call (the scheduler ranks by it). */
export function quotaLeftShare(policy: Policy, account: Omit<AdmissionAccount, "inFlightEnd" | "wallet">): number {
  const view = quotaView(account.ledger, account.tier, account.overrideMs, policy.windowMs);
  return view.quotaMs > 0 ? Math.min(1, view.leftMs / view.quotaMs) : 0;
}

/**
 * The decision, in this order: the call's duration and size against the tier, the runs limit,
 * the quota; then the pool — the call's node, whether any GPU could ever take it, and whether it
 * may or can wait for one.
 */
export function decideAdmission(
  policy: Policy,
  account: AdmissionAccount,
  request: AdmissionRequest,
  placement: Placement,
): AdmissionDecision {
  const quota = allowance(policy, account, request);
  if (!quota.ok) return { kind: "refused", problem: quota.problem, retryAfterS: quota.retryAfterS };
  const refused = placementRefusal(policy, request, placement, account.tier);
  if (refused !== null) return refused;
  const outcome = placement.kind === "now" ? "granted" : placement.kind === "wait" ? "queued" : "pending";
  return { kind: "admitted", outcome, reservedMs: quota.reservedMs, split: quota.split, ledger: quota.ledger };
}

/**
 * The pool's half of the decision, alone: for a call whose quota is already reserved and that is
 * placed only now (the leader placing what another replica admitted). Null: it may go on. A call
 * that would wait is refused at once when its expected wait (the bound when no expectation is
 * known) is longer than it may wait (see `maxWaitMs`).
 */
export function placementRefusal(
  policy: Policy,
  request: Pick<AdmissionRequest, "size" | "node" | "queue" | "maxWaitMs">,
  placement: Placement,
  tier?: TierPolicy,
): (AdmissionDecision & { kind: "refused" }) | null {
  switch (placement.kind) {
    case "node_missing":
      return { kind: "refused", problem: nodeNotRegisteredProblem(request.node ?? ""), retryAfterS: 5 };
    case "never":
      return {
        kind: "refused",
        problem: noCapacityProblem(request.size, request.node, placement.onlyAgents),
        retryAfterS: null,
      };
    case "wait":
      if (placement.queued >= policy.queueMaxLength)
        return { kind: "refused", problem: queueFullProblem(policy.queueMaxLength), retryAfterS: 60 };
      if (!request.queue)
        return { kind: "refused", problem: queueDisabledProblem(placement.place?.reason), retryAfterS: 5 };
      return predictedWaitRefusal(policy, request, placement.place, tier);
    case "now":
    case "later":
      return null;
  }
}

/**
 * The refusal of a call not expected to start in time (see `placementRefusal`), or null. A call
 * given a soonest likely start (the lowest class) is refused only when even that is later than it
 * may wait. Any other call is refused when its expected wait is longer than it may wait, or — when
 * nothing promises it a start in time (its bound, eta_max, is later) — when it is expected to start
 * in the last part of it its policy keeps as headroom (Policy.predictedWaitHeadroom, a tenth by
 * default): on the November trace a third to a half of such calls expected in the last tenth end in
 * nothing, after waiting nearly all of their time (docs/scheduling.md §5).
 */
function predictedWaitRefusal(
  policy: Policy,
  request: Pick<AdmissionRequest, "maxWaitMs">,
  place: QueuePlace | null,
  tier: TierPolicy | undefined,
): (AdmissionDecision & { kind: "refused" }) | null {
  if (request.maxWaitMs === undefined || place === null || place.etaMs === null) return null;
  const expectedMs = place.expectedMs ?? place.etaMs;
  const limitMs = waitLimitMs(policy, tier, request.maxWaitMs);
  const soonest = place.soonestMs ?? null;
  const headroom = predictedWaitHeadroomOf(policy);
  if (soonest !== null ? soonest <= limitMs : expectedMs <= expectedWaitLimitMs(limitMs, place.etaMs, headroom))
    return null;
  const limitBy =
    request.maxWaitMs !== null && request.maxWaitMs < queueTimeoutOf(policy, tier) ? "max_wait" : "queue_timeout";
  const refusal = predictedWaitProblem({
    expectedMs,
    boundMs: place.etaMs,
    limitMs,
    limitBy,
    tier: tier?.name ?? null,
    headroom,
  });
  return {
    kind: "refused",
    problem: refusal,
    retryAfterS: predictedWaitRetryS(refusal["eta_s"] as number, refusal["max_wait_s"] as number, headroom),
  };
}
