import { formatSeconds, msToSeconds } from "../duration.js";
import { identityKey } from "../identity/identity.js";
import { ANONYMOUS_TIER, nextTierUp, signedInTier } from "../policy.js";
import type { Problem } from "../problem.js";
import { problem } from "../problem.js";
import type { QuotaView } from "./ledger.js";
import type { Policy, SizePolicy, TierPolicy } from "../policy.js";
import type { Identity } from "../identity/identity.js";
import type { Via } from "../identity/attribution.js";
import type { OverageBlocker } from "./overage.js";
import { blockerText } from "./overage.js";

/** What a quota refusal's text is about: the call, who it is charged to, and how that identity was named. */
export interface RefusalInput {
  readonly policy: Policy;
  readonly identity: Identity;
  readonly tier: TierPolicy;
  readonly durationMs: number;
  readonly size: SizePolicy;
  readonly now: number;
  /** How the call reached us, so the message can say why this identity was charged. */
  readonly via: Via;
}

/**
 * The texts people read when a call is refused. Each names who was charged and why, both
 * numbers, when to retry, and the one next step that helps for that person's tier — the
 * questions users of hosted GPU pools keep having to ask on forums.
 */

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function when(ms: number, now: number): string {
  return `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC (in ${formatSeconds((ms - now) / 1000)})`;
}

export type NextStep =
  "sign_in" | "upgrade" | "forward_identity" | "wait_for_reset" | "wait_for_calls" | "enable_overage";

/** Why this identity, in words — the part of the message that catches wrong attribution. */
function chargedAs(input: RefusalInput): string {
  const who = identityKey(input.identity);
  switch (input.identity.kind) {
    case "app":
      return `${who} (the app sent no X-IP-Token, so the call was charged to the app itself, as anonymous)`;
    case "ip":
      return `${who} (no signed-in viewer, so the call was charged to the client's IP address)`;
    case "user":
      return input.via === "user-token" ? `${who} (your user token)` : `${who}`;
  }
}

function nextStepFor(
  input: RefusalInput,
  blockedByInFlight: boolean,
  blocker: OverageBlocker | null,
): { step: NextStep; text: string } {
  const { policy, identity, tier } = input;
  if (blocker === "not_opted_in") return { step: "enable_overage", text: blockerText(blocker, tier.name) };
  if (blockedByInFlight) {
    return {
      step: "wait_for_calls",
      text: "Your own calls in progress hold the rest as reservations; unused time is refunded when they finish.",
    };
  }
  if (identity.kind === "app") {
    return {
      step: "forward_identity",
      text: "If you are the app's developer, forward the viewer's X-IP-Token (open the app through the gpupool edge, or pass ipToken in the SDK) so each person is charged to their own quota.",
    };
  }
  if (tier.name === ANONYMOUS_TIER) {
    const signedIn = signedInTier(policy);
    return {
      step: "sign_in",
      text: signedIn
        ? `Sign in to be charged as yourself: the ${signedIn.name} tier gets ${formatSeconds(signedIn.quotaMs / 1000)} of GPU time per day.`
        : "Sign in to be charged as yourself instead of your IP address.",
    };
  }
  const up = nextTierUp(policy, tier.name);
  if (up && up.priority > tier.priority) {
    return {
      step: "upgrade",
      text: `The ${up.name} tier gets ${formatSeconds(up.quotaMs / 1000)} per day and higher queue priority.`,
    };
  }
  return {
    step: "wait_for_reset",
    text: blockerText(blocker ?? "operator_disabled", tier.name),
  };
}

export function quotaExceededProblem(
  input: RefusalInput,
  view: QuotaView,
  costMs: number,
  retryAt: number | null,
  blocker: OverageBlocker | null = null,
): Problem {
  const blockedByInFlight = view.quotaMs - view.usedMs >= costMs && view.reservedMs > 0;
  const next = nextStepFor(input, blockedByInFlight, blocker);
  // Every quota refusal says why credits did not pay for the rest (once: the next step may say it).
  const credits =
    blocker === null || next.text === blockerText(blocker, input.tier.name)
      ? ""
      : ` ${blockerText(blocker, input.tier.name)}`;
  const need = formatSeconds(costMs / 1000);
  const sizeNote =
    input.size.cost === 1
      ? ""
      : ` (${formatSeconds(input.durationMs / 1000)} × ${input.size.cost} for ${input.size.name})`;
  const retry = retryAt === null ? "" : ` Try again at ${when(retryAt, input.now)}.`;
  const resets = view.resetsAt === null ? "" : ` Your window resets at ${when(view.resetsAt, input.now)}.`;
  const reservedNote =
    view.reservedMs > 0 ? `, ${formatSeconds(view.reservedMs / 1000)} reserved by calls in progress` : "";
  const detail =
    `This call needs ${need}${sizeNote} of GPU quota but ${chargedAs(input)} has ${formatSeconds(view.leftMs / 1000)} left of its ` +
    `${formatSeconds(view.quotaMs / 1000)} ${input.tier.name} quota (${formatSeconds(view.usedMs / 1000)} used${reservedNote}).` +
    (blockedByInFlight ? retry : resets || retry) +
    ` ${next.text}` +
    credits;
  return problem("quota_exceeded", detail, {
    requested: msToSeconds(costMs),
    left: msToSeconds(view.leftMs),
    quota: msToSeconds(view.quotaMs),
    used: msToSeconds(view.usedMs),
    reserved: msToSeconds(view.reservedMs),
    tier: input.tier.name,
    identity: identityKey(input.identity),
    resets_at: iso(view.resetsAt),
    retry_at: iso(retryAt),
    next_step: next.step,
    ...(blocker === null ? {} : { overage_blocked_by: blocker }),
  });
}

export function durationTooLongProblem(
  input: RefusalInput,
  view: QuotaView,
  costMs: number,
  blocker: OverageBlocker | null = null,
): Problem {
  const { tier, durationMs, size } = input;
  const overMax = durationMs > tier.maxDurationMs;
  // Past the whole quota (not the tier's longest call), overage could have paid: say why it did not.
  const credits = overMax || blocker === null ? "" : ` ${blockerText(blocker, tier.name)}`;
  const detail = overMax
    ? `This call asks to hold a GPU for ${formatSeconds(durationMs / 1000)}, but the ${tier.name} tier allows at most ` +
      `${formatSeconds(tier.maxDurationMs / 1000)} per call (charged to ${identityKey(input.identity)}), so it can never be granted. ` +
      `Ask the app's developer to request a shorter duration.`
    : `This call would reserve ${formatSeconds(costMs / 1000)} of GPU quota (${formatSeconds(durationMs / 1000)} on ${size.name}, cost ×${size.cost}), ` +
      `more than the whole ${tier.name} quota of ${formatSeconds(view.quotaMs / 1000)} (charged to ${identityKey(input.identity)}), so it can never be granted. ` +
      (tier.name === ANONYMOUS_TIER
        ? "Sign in for a larger quota, or ask the app's developer for a shorter duration or a smaller size."
        : "Ask the app's developer for a shorter duration or a smaller size.") +
      credits;
  return problem("duration_too_long", detail, {
    duration: msToSeconds(durationMs),
    max_duration: msToSeconds(tier.maxDurationMs),
    cost: size.cost,
    requested: msToSeconds(costMs),
    quota: msToSeconds(view.quotaMs),
    tier: tier.name,
    identity: identityKey(input.identity),
    ...(overMax || blocker === null ? {} : { overage_blocked_by: blocker }),
  });
}

export function runsExceededProblem(input: RefusalInput, view: QuotaView): Problem {
  const retry = view.resetsAt === null ? "" : ` Try again at ${when(view.resetsAt, input.now)}.`;
  return problem(
    "runs_exceeded",
    `${identityKey(input.identity)} has made ${view.runs} GPU calls in this window, the ${input.tier.name} tier's limit.${retry}`,
    {
      runs: view.runs,
      max_runs: input.tier.maxRuns,
      tier: input.tier.name,
      identity: identityKey(input.identity),
      resets_at: iso(view.resetsAt),
      retry_at: iso(view.resetsAt),
    },
  );
}
