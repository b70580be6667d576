import { formatSeconds, msToSeconds } from "../duration.js";
import type { Identity } from "../identity/identity.js";
import { identityKey } from "../identity/identity.js";
import type { BillingPolicy, Policy } from "../policy.js";
import { NO_BILLING } from "../policy.js";
import type { Problem } from "../problem.js";
import { problem } from "../problem.js";
import { displayMoney, priceOf } from "./money.js";

/**
 * Overage (docs/billing.md): past its quota, a call of a user who opted in is paid from their credits.
 * Pure: the caller loads the wallet's totals and the month's spend in the same transaction as the
 * ledger and writes the hold admission decides beside the quota reservation.
 */

export function billingOf(policy: Policy): BillingPolicy {
  return policy.billing ?? NO_BILLING;
}

/** What admission needs of a user's wallet and settings, as of now. */
export interface WalletState {
  readonly optedIn: boolean;
  /** Credits not held by other calls. */
  readonly availableMicros: number;
  /** The user's cap, or the operator's default. */
  readonly capMicros: number;
  /** Overage spent in this billing month, and held by calls in flight. */
  readonly monthSpentMicros: number;
  readonly monthHeldMicros: number;
  readonly monthEndsAt: number;
}

export type OverageBlocker = "operator_disabled" | "not_a_user" | "tier_without_overage" | "not_opted_in";

/** Why credits do not pay past the quota for this identity, or null when they do. */
export function overageBlocker(policy: Policy, identity: Identity, wallet: WalletState | null): OverageBlocker | null {
  const billing = billingOf(policy);
  if (!billing.overage.enabled) return "operator_disabled";
  if (identity.kind !== "user") return "not_a_user";
  if (!billing.overage.tiers.includes(identity.tier)) return "tier_without_overage";
  if (wallet === null || !wallet.optedIn) return "not_opted_in";
  return null;
}

/** One sentence for a refusal: why credits did not pay for the rest, and what to do. */
export function blockerText(blocker: OverageBlocker, tier: string): string {
  switch (blocker) {
    case "operator_disabled":
      return "Credits do not extend the GPU quota on this pool: its operator has not enabled overage.";
    case "not_a_user":
      return "Credits cannot pay for this call: it is not charged to a signed-in user (only a user has a wallet).";
    case "tier_without_overage":
      return `Credits do not extend the GPU quota of the ${tier} tier: this pool offers overage to other tiers only.`;
    case "not_opted_in":
      return "Your credits could pay for the rest, but overage is off for you: turn it on with `gpupool billing overage on` (or PATCH /v1/me/billing).";
  }
}

/** How a call is paid: what the quota reserves, what credits pay, and the hold for it. */
export interface Split {
  readonly quotaMs: number;
  readonly overageMs: number;
  readonly holdMicros: number;
}

/** The hold a call's overage needs (the whole overage at the price, rounded up to a micro-unit). */
export function overageSplit(policy: Policy, costMs: number, leftMs: number): Split {
  const quotaMs = Math.max(0, Math.min(costMs, leftMs));
  const overageMs = costMs - quotaMs;
  return { quotaMs, overageMs, holdMicros: priceOf(overageMs, billingOf(policy).overage.pricePerMinuteMicros) };
}

/** The refusal when the wallet or the cap cannot take the hold, or null when they can. */
export function overageRefusal(
  policy: Policy,
  identity: Identity,
  wallet: WalletState,
  split: Split,
): { problem: Problem; retryAfterS: number | null } | null {
  const currency = billingOf(policy).currency;
  const money = (m: number): string => displayMoney(m, currency);
  const parts =
    split.quotaMs === 0
      ? `${formatSeconds(split.overageMs / 1000)} of overage (your quota has nothing left)`
      : `${formatSeconds(split.quotaMs / 1000)} from your quota and ${formatSeconds(split.overageMs / 1000)} of overage`;
  if (split.holdMicros > wallet.availableMicros) {
    return {
      retryAfterS: null,
      problem: problem(
        "credits_exhausted",
        `This call needs ${parts}, for which ${money(split.holdMicros)} of credits must be held, but ${identityKey(identity)} has ` +
          `${money(wallet.availableMicros)} available (credits held by calls in progress are not). Add credits, wait for your quota to reset, or ask for a shorter call.`,
        {
          needed_micros: split.holdMicros,
          available_micros: wallet.availableMicros,
          quota_s: msToSeconds(split.quotaMs),
          overage_s: msToSeconds(split.overageMs),
          currency,
        },
      ),
    };
  }
  if (wallet.monthSpentMicros + wallet.monthHeldMicros + split.holdMicros > wallet.capMicros) {
    return {
      retryAfterS: null,
      problem: problem(
        "spend_cap_reached",
        `This call needs ${parts}, which would hold ${money(split.holdMicros)}, but your monthly overage cap is ` +
          `${money(wallet.capMicros)} and ${money(wallet.monthSpentMicros)} is spent and ${money(wallet.monthHeldMicros)} held this month. ` +
          `Raise the cap (gpupool billing overage on --cap AMOUNT) or wait for the month to end at ${new Date(wallet.monthEndsAt).toISOString()}.`,
        {
          needed_micros: split.holdMicros,
          cap_micros: wallet.capMicros,
          spent_micros: wallet.monthSpentMicros,
          held_micros: wallet.monthHeldMicros,
          month_ends_at: new Date(wallet.monthEndsAt).toISOString(),
          currency,
        },
      ),
    };
  }
  return null;
}
