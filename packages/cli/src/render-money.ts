// Money and the reasons credits do not engage, in words: shared by the quota and billing renderings.
import { displayMoney } from "@gpupool/core";
import type { OverageBlocker } from "@gpupool/sdk";

/** Micro-units for people: "$1.25", "$0.083334". */
export function money(micros: number | null | undefined, currency: string): string {
  if (micros === null || micros === undefined || !Number.isSafeInteger(micros)) return "?";
  return displayMoney(micros, currency === "" ? "USD" : currency);
}

/** Why credits do not pay past the quota, and what to do about it, in words (`tier` "": "your tier"). */
export function blockerWords(blocker: OverageBlocker, tier: string): string {
  switch (blocker) {
    case "operator_disabled":
      return "this pool does not offer overage (the operator has not enabled billing.overage): credits never extend the GPU quota here, and a call past the quota waits for the reset.";
    case "tier_without_overage":
      return `${tier === "" ? "your tier" : `the ${tier} tier`} has no overage: credits do not extend its quota. A tier that has it (ask the operator) lets credits pay past the quota.`;
    case "not_opted_in":
      return "you have not turned it on: credits do not pay for calls past your quota until you run `gpupool billing overage on` (optionally with --cap 5.00).";
    case "not_a_user":
      return "only a signed-in user has a wallet: an anonymous visitor or an app cannot pay past the quota. Sign in.";
    default:
      return `overage does not engage (${blocker}).`;
  }
}
