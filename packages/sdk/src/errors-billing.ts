// The refusals of billing (docs/billing.md): a call whose overage credits cannot pay (402), and overage
// asked for where it is not offered (409). Amounts are whole micro-units of `currency`.
import { problemFields } from "@gpupool/contract";
import type * as wire from "@gpupool/contract";
import { GpupoolError } from "./errors.js";
import type { GpupoolErrorOptions } from "./errors.js";
import { str } from "./json.js";
import type { Problem } from "./types.js";

/**
 * The call needs more GPU time than the quota has left, overage is on, and the credits available
 * do not cover the hold for the rest (`neededMicros > availableMicros`). Nothing was reserved or
 * held: add credits, or ask for a shorter call.
 */
export class CreditsExhaustedError extends GpupoolError {
  override readonly name: string = "CreditsExhaustedError";
  /** The hold the call's overage needs: `ceil(overage seconds × price)`. */
  readonly neededMicros: number;
  /** Credits not held by other calls. */
  readonly availableMicros: number;
  /** GPU seconds (× cost) of the call the quota would have paid: what was left. */
  readonly quotaS: number;
  /** GPU seconds (× cost) credits would have had to pay. */
  readonly overageS: number;
  readonly currency: string;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    const f = problemFields("credits_exhausted", problem);
    this.neededMicros = f.needed_micros ?? Number.NaN;
    this.availableMicros = f.available_micros ?? Number.NaN;
    this.quotaS = f.quota_s ?? Number.NaN;
    this.overageS = f.overage_s ?? Number.NaN;
    this.currency = f.currency ?? "";
  }
}

/**
 * The call's overage hold would take this month's overage spending past the user's monthly cap
 * (`spentMicros + heldMicros + neededMicros > capMicros`). Nothing was reserved or held: raise
 * the cap, wait for calls in flight to settle, or for the month to end (`monthEndsAt`).
 */
export class SpendCapReachedError extends GpupoolError {
  override readonly name: string = "SpendCapReachedError";
  readonly neededMicros: number;
  readonly capMicros: number;
  /** Spent on overage this billing month. */
  readonly spentMicros: number;
  /** Held for overage by calls in flight. */
  readonly heldMicros: number;
  /** When the billing month ends and the cap's count starts again. */
  readonly monthEndsAt: Date | null;
  readonly currency: string;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    const f = problemFields("spend_cap_reached", problem);
    this.neededMicros = f.needed_micros ?? Number.NaN;
    this.capMicros = f.cap_micros ?? Number.NaN;
    this.spentMicros = f.spent_micros ?? Number.NaN;
    this.heldMicros = f.held_micros ?? Number.NaN;
    this.monthEndsAt = f.month_ends_at === undefined ? null : new Date(f.month_ends_at);
    this.currency = f.currency ?? "";
  }
}

/**
 * Overage was turned on where it is not offered: the operator has not enabled it, or the user's
 * tier is not among those it is offered to (`blockedBy`). Nothing was changed.
 */
export class OverageNotAvailableError extends GpupoolError {
  override readonly name: string = "OverageNotAvailableError";
  readonly blockedBy: wire.OverageBlocker | (string & {});
  readonly tier: string;

  constructor(problem: Problem, options?: GpupoolErrorOptions) {
    super(problem, options);
    const f = problemFields("overage_not_available", problem);
    this.blockedBy = f.blocked_by ?? str(problem["blocked_by"]);
    this.tier = f.tier ?? str(problem["tier"]);
  }
}
