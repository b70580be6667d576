import type { LedgerState } from "./ledger.js";
import { quotaView } from "./ledger.js";
import type { Problem } from "../problem.js";
import { durationTooLongProblem, quotaExceededProblem, runsExceededProblem } from "./quota-refusals.js";
import type { RefusalInput } from "./quota-refusals.js";
import type { OverageBlocker, Split, WalletState } from "./overage.js";
import { overageRefusal, overageSplit } from "./overage.js";

export interface ReserveInput extends RefusalInput {
  readonly overrideMs: number | null;
  /** Rolled to `now`. */
  readonly ledger: LedgerState;
  /** Earliest time one of the identity's leases in flight ends (its deadline), if any. */
  readonly earliestInFlightEnd: number | null;
  /** Why credits may not pay past the quota (null: they may, from `wallet`; absent: overage is off). */
  readonly overageBlocker?: OverageBlocker | null;
  readonly wallet?: WalletState | null;
}

export type ReserveOutcome =
  | {
      readonly ok: true;
      readonly reservedMs: number;
      /** How it is paid: `quotaMs` is what the ledger reserves; the overage's hold is on the wallet. */
      readonly split: Split;
      readonly ledger: LedgerState;
    }
  | { readonly ok: false; readonly problem: Problem; readonly retryAfterS: number | null };

/**
 * The quota half of admission: can this identity reserve `duration × cost` now? Pure; the caller
 * persists the returned ledger in the same transaction it read it in.
 */
export function reserve(input: ReserveInput): ReserveOutcome {
  const { tier, ledger, size, durationMs, now } = input;
  const costMs = durationMs * size.cost;
  const view = quotaView(ledger, tier, input.overrideMs, input.policy.windowMs);
  // With overage, a call larger than the whole quota is paid partly from credits: it can fit.
  const blocker = input.overageBlocker === undefined ? "operator_disabled" : input.overageBlocker;
  const overage = blocker === null && input.wallet != null ? input.wallet : null;
  if (durationMs > tier.maxDurationMs || (overage === null && costMs > view.quotaMs)) {
    return { ok: false, problem: durationTooLongProblem(input, view, costMs, blocker), retryAfterS: null };
  }
  if (tier.maxRuns !== null && ledger.runs >= tier.maxRuns) {
    const retryAt = view.resetsAt;
    return {
      ok: false,
      problem: runsExceededProblem(input, view),
      retryAfterS: retryAt === null ? null : Math.max(1, Math.ceil((retryAt - now) / 1000)),
    };
  }
  if (costMs > view.leftMs && overage !== null) {
    const split = overageSplit(input.policy, costMs, view.leftMs);
    const refused = overageRefusal(input.policy, input.identity, overage, split);
    if (refused !== null) return { ok: false, ...refused };
    return {
      ok: true,
      reservedMs: costMs,
      split,
      ledger: { ...ledger, reservedMs: ledger.reservedMs + split.quotaMs, runs: ledger.runs + 1 },
    };
  }
  if (costMs > view.leftMs) {
    // If the finished usage alone leaves room, the only obstacle is the identity's own calls in
    // flight: the earliest could succeed when one of them ends. Otherwise only the reset helps.
    const blockedByInFlight = view.quotaMs - view.usedMs >= costMs;
    const retryAt = blockedByInFlight && input.earliestInFlightEnd !== null ? input.earliestInFlightEnd : view.resetsAt;
    return {
      ok: false,
      problem: quotaExceededProblem(input, view, costMs, retryAt, blocker),
      retryAfterS: retryAt === null ? null : Math.max(1, Math.ceil((retryAt - now) / 1000)),
    };
  }
  return {
    ok: true,
    reservedMs: costMs,
    split: { quotaMs: costMs, overageMs: 0, holdMicros: 0 },
    ledger: { ...ledger, reservedMs: ledger.reservedMs + costMs, runs: ledger.runs + 1 },
  };
}
