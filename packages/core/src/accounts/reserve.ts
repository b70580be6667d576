import type { LedgerState } from "./ledger.js";
import { quotaView } from "./ledger.js";
import type { Problem } from "../problem.js";
import { durationTooLongProblem, quotaExceededProblem, runsExceededProblem } from "./quota-refusals.js";
import type { RefusalInput } from "./quota-refusals.js";

export interface ReserveInput extends RefusalInput {
  readonly overrideMs: number | null;
  /** Rolled to `now`. */
  readonly ledger: LedgerState;
  /** Earliest time one of the identity's leases in flight ends (its deadline), if any. */
  readonly earliestInFlightEnd: number | null;
}

export type ReserveOutcome =
  | { readonly ok: true; readonly reservedMs: number; readonly ledger: LedgerState }
  | { readonly ok: false; readonly problem: Problem; readonly retryAfterS: number | null };

/**
 * The quota half of admission: can this identity reserve `duration × cost` now? Pure; the caller
 * persists the returned ledger in the same transaction it read it in.
 */
export function reserve(input: ReserveInput): ReserveOutcome {
  const { tier, ledger, size, durationMs, now } = input;
  const costMs = durationMs * size.cost;
  const view = quotaView(ledger, tier, input.overrideMs, input.policy.windowMs);
  if (durationMs > tier.maxDurationMs || costMs > view.quotaMs) {
    return { ok: false, problem: durationTooLongProblem(input, view, costMs), retryAfterS: null };
  }
  if (tier.maxRuns !== null && ledger.runs >= tier.maxRuns) {
    const retryAt = view.resetsAt;
    return {
      ok: false,
      problem: runsExceededProblem(input, view),
      retryAfterS: retryAt === null ? null : Math.max(1, Math.ceil((retryAt - now) / 1000)),
    };
  }
  if (costMs > view.leftMs) {
    // If the finished usage alone leaves room, the only obstacle is the identity's own calls in
    // flight: the earliest could succeed when one of them ends. Otherwise only the reset helps.
    const blockedByInFlight = view.quotaMs - view.usedMs >= costMs;
    const retryAt = blockedByInFlight && input.earliestInFlightEnd !== null ? input.earliestInFlightEnd : view.resetsAt;
    return {
      ok: false,
      problem: quotaExceededProblem(input, view, costMs, retryAt),
      retryAfterS: retryAt === null ? null : Math.max(1, Math.ceil((retryAt - now) / 1000)),
    };
  }
  return {
    ok: true,
    reservedMs: costMs,
    ledger: { ...ledger, reservedMs: ledger.reservedMs + costMs, runs: ledger.runs + 1 },
  };
}
