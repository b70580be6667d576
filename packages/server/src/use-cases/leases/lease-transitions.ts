import { admittedInCurrentWindow, chargeMs, priceOf, settle, startWindow, unreserve } from "@gpupool/core";
import type { LedgerState, Problem, SlotAssignment, Split } from "@gpupool/core";
import type { Identity, SizePolicy } from "@gpupool/core";
import type { HeldShare, LeaseRecord, NewLease } from "../../storage/store.js";

/**
 * What a lease and its identity's ledger become at each step of the lifecycle. Pure: the engine
 * reads the ledger (rolled to `now`), calls one of these, and writes both results in the same
 * transaction.
 */
export interface Transition<L extends NewLease = LeaseRecord> {
  readonly lease: L;
  readonly ledger: LedgerState;
}

/**
 * A newly admitted lease, queued. `windowStartedAt` is the identity's window at admission (its run
 * was counted there); a grant replaces it with the window its charge will count in.
 */
export function admitted(input: {
  id: string;
  appId: string | null;
  identity: Identity;
  size: SizePolicy;
  durationMs: number;
  reservedMs: number;
  now: number;
  windowStartedAt: number | null;
  node?: string | null;
  /** How it is paid (absent: all from the quota) and the hold's shares of grants. */
  split?: Split;
  holdShares?: readonly HeldShare[];
  /** The max_wait its caller named (ms); null or absent: none (its tier's queue timeout). */
  maxWaitMs?: number | null;
}): NewLease {
  const split = input.split ?? { quotaMs: input.reservedMs, overageMs: 0, holdMicros: 0 };
  return {
    id: input.id,
    appId: input.appId,
    identityKind: input.identity.kind,
    identityId: input.identity.id,
    tier: input.identity.tier,
    size: input.size.name,
    slots: input.size.slots,
    cost: input.size.cost,
    durationMs: input.durationMs,
    reservedMs: input.reservedMs,
    status: "queued",
    // A request through an agent waits for that node; the grant sets the node it runs on.
    node: input.node ?? null,
    deviceIndex: null,
    deviceUuid: null,
    deviceName: null,
    slotIndexes: null,
    queuedAt: input.now,
    grantedAt: null,
    deadline: null,
    endedAt: null,
    heldMs: null,
    chargedMs: 0,
    refundedMs: 0,
    failed: false,
    windowStartedAt: input.windowStartedAt,
    problemCode: null,
    problemDetail: null,
    quotaMs: split.quotaMs,
    overageMs: split.overageMs,
    holdMicros: split.holdMicros,
    holdShares: input.holdShares ?? null,
    chargedMicros: 0,
    maxWaitMs: input.maxWaitMs ?? null,
  };
}

/**
 * How a charge of `chargedMs` (≤ the reservation) is paid: the quota part first, the rest is
 * overage at the price (rounded up to a micro-unit, never more than the hold; all of the overage
 * costs exactly the hold).
 */
export function chargeSplit(
  lease: Pick<LeaseRecord, "quotaMs" | "overageMs" | "holdMicros">,
  chargedMs: number,
  pricePerMinuteMicros: number,
): { quotaMs: number; overageMs: number; micros: number } {
  const quotaMs = Math.min(chargedMs, lease.quotaMs);
  const overageMs = chargedMs - quotaMs;
  const micros =
    overageMs >= lease.overageMs
      ? lease.holdMicros
      : Math.min(lease.holdMicros, priceOf(overageMs, pricePerMinuteMicros));
  return { quotaMs, overageMs, micros };
}

/** queued → active on `assignment`: the deadline starts now, and so may the identity's window. */
export function grant<L extends NewLease>(
  lease: L,
  assignment: SlotAssignment,
  ledger: LedgerState,
  now: number,
): Transition<L> {
  const started = startWindow(ledger, now);
  return {
    ledger: started,
    lease: {
      ...lease,
      status: "active",
      node: assignment.node,
      deviceIndex: assignment.index,
      deviceUuid: assignment.uuid,
      deviceName: assignment.name,
      slotIndexes: [...assignment.slots],
      grantedAt: now,
      deadline: now + lease.durationMs,
      windowStartedAt: started.windowStartedAt,
    },
  };
}

/**
 * active → released | expired | failed: held time (grant to now, never past the deadline) is
 * charged, rounded up to whole seconds × cost and capped by the reservation; an expiry is charged
 * the whole reservation. The rest is refunded.
 */
export function endActive(
  lease: LeaseRecord,
  ledger: LedgerState,
  status: "released" | "expired" | "failed",
  now: number,
  why: Problem | null,
  failed: boolean,
  pricePerMinuteMicros: number,
): Transition {
  const grantedAt = lease.grantedAt ?? now;
  const heldMs = Math.max(0, Math.min(now, lease.deadline ?? now) - grantedAt);
  const charged = status === "expired" ? lease.reservedMs : chargeMs(lease.reservedMs, heldMs, lease.cost);
  const paid = chargeSplit(lease, charged, pricePerMinuteMicros);
  return {
    // The ledger holds and counts only the quota part; the overage is the wallet's (settled with the lease).
    ledger: settle(ledger, lease.quotaMs, paid.quotaMs, lease.windowStartedAt),
    lease: {
      ...lease,
      status,
      endedAt: now,
      heldMs: status === "expired" ? lease.durationMs : heldMs,
      chargedMs: charged,
      refundedMs: lease.reservedMs - charged,
      chargedMicros: paid.micros,
      failed: failed || status === "failed",
      problemCode: why?.code ?? null,
      problemDetail: why?.detail ?? null,
    },
  };
}

/** queued → cancelled | failed: it never held a GPU, so everything is refunded (and its run, if counted in this window). */
export function endQueued(
  lease: LeaseRecord,
  ledger: LedgerState,
  status: "cancelled" | "failed",
  now: number,
  why: Problem | null,
  windowMs: number,
): Transition {
  return {
    ledger: unreserve(
      ledger,
      lease.quotaMs,
      admittedInCurrentWindow(lease.queuedAt, lease.windowStartedAt, ledger, now, windowMs),
    ),
    lease: {
      ...lease,
      status,
      endedAt: now,
      heldMs: 0,
      chargedMs: 0,
      refundedMs: lease.reservedMs,
      chargedMicros: 0,
      failed: status === "failed",
      problemCode: why?.code ?? null,
      problemDetail: why?.detail ?? null,
    },
  };
}
