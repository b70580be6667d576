import type { TierPolicy } from "../policy.js";

/**
 * One identity's ledger, as stored. `reservedMs` is held by its queued and active leases;
 * `usedMs` is what its finished leases were charged in the current window.
 */
export interface LedgerState {
  readonly windowStartedAt: number | null;
  readonly usedMs: number;
  readonly reservedMs: number;
  /** Extra seconds an operator granted for the current window only. */
  readonly bonusMs: number;
  /** Admissions counted against the tier's runs limit in the current window. */
  readonly runs: number;
}

export const EMPTY_LEDGER: LedgerState = { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 };

/**
 * The ledger as of `now`: a window that started `windowMs` or more ago is over, so usage, bonus
 * and runs start again from zero. Reservations of leases still in flight carry over — they are
 * real claims on the GPU and dropping them would let the identity over-admit.
 */
export function rollWindow(state: LedgerState, now: number, windowMs: number): LedgerState {
  if (state.windowStartedAt === null || now < state.windowStartedAt + windowMs) return state;
  return { windowStartedAt: null, usedMs: 0, reservedMs: state.reservedMs, bonusMs: 0, runs: 0 };
}

export interface QuotaView {
  readonly quotaMs: number;
  readonly usedMs: number;
  readonly reservedMs: number;
  readonly leftMs: number;
  readonly bonusMs: number;
  readonly windowMs: number;
  readonly windowStartedAt: number | null;
  readonly resetsAt: number | null;
  readonly runs: number;
  readonly maxRuns: number | null;
  readonly priority: number;
  readonly maxDurationMs: number;
}

/** Quota of an identity: the per-user override if set, else the tier's, plus any bonus. */
export function quotaOf(tier: TierPolicy, overrideMs: number | null, bonusMs: number): number {
  return (overrideMs ?? tier.quotaMs) + bonusMs;
}

/** `state` must already be rolled to now. */
export function quotaView(
  state: LedgerState,
  tier: TierPolicy,
  overrideMs: number | null,
  windowMs: number,
): QuotaView {
  const quotaMs = quotaOf(tier, overrideMs, state.bonusMs);
  return {
    quotaMs,
    usedMs: state.usedMs,
    reservedMs: state.reservedMs,
    leftMs: Math.max(0, quotaMs - state.usedMs - state.reservedMs),
    bonusMs: state.bonusMs,
    windowMs,
    windowStartedAt: state.windowStartedAt,
    resetsAt: state.windowStartedAt === null ? null : state.windowStartedAt + windowMs,
    runs: state.runs,
    maxRuns: tier.maxRuns,
    priority: tier.priority,
    maxDurationMs: tier.maxDurationMs,
  };
}

/** Time held is rounded up to whole seconds, times the size's cost, never above the reservation. */
export function chargeMs(reservedMs: number, heldMs: number, cost: number): number {
  return Math.min(reservedMs, Math.ceil(Math.max(0, heldMs) / 1000) * 1000 * cost);
}

/** At grant: the first grant of a window starts it. `ledger` rolled to now. */
export function startWindow(ledger: LedgerState, now: number): LedgerState {
  return ledger.windowStartedAt === null ? { ...ledger, windowStartedAt: now } : ledger;
}

/**
 * At release or expiry: the reservation goes away and the charge is added — to the window the
 * lease was granted in. If that window has since reset, the charge stays on the lease's record
 * but does not count against the new window (it was earned in the old one).
 */
export function settle(
  ledger: LedgerState,
  reservedMs: number,
  chargedMs: number,
  grantWindowStartedAt: number | null,
): LedgerState {
  const sameWindow = grantWindowStartedAt !== null && ledger.windowStartedAt === grantWindowStartedAt;
  return {
    ...ledger,
    reservedMs: Math.max(0, ledger.reservedMs - reservedMs),
    usedMs: sameWindow ? ledger.usedMs + chargedMs : ledger.usedMs,
  };
}

/**
 * A queued lease that never got a GPU gives back its reservation, and its run if that run was
 * counted in the current window (a run counted before a reset was already wiped by it).
 */
export function unreserve(ledger: LedgerState, reservedMs: number, runCountedInThisWindow = true): LedgerState {
  return {
    ...ledger,
    reservedMs: Math.max(0, ledger.reservedMs - reservedMs),
    runs: runCountedInThisWindow ? Math.max(0, ledger.runs - 1) : ledger.runs,
  };
}

/**
 * Whether an admission made at `admittedAt`, when the identity's window had started at
 * `windowAtAdmission` (null: not started yet), belongs to the window `ledger` (rolled to `now`)
 * is in. A window that had not started at admission is the one that started first after it, and
 * any later window starts at least `windowMs` after the admission.
 */
export function admittedInCurrentWindow(
  admittedAt: number,
  windowAtAdmission: number | null,
  ledger: LedgerState,
  now: number,
  windowMs: number,
): boolean {
  const current = ledger.windowStartedAt;
  if (windowAtAdmission !== null) return current === windowAtAdmission;
  if (current === null) return now < admittedAt + windowMs;
  return current >= admittedAt && current < admittedAt + windowMs;
}
