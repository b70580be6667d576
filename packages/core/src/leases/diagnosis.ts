import type { Attribution } from "../identity/attribution.js";
import { formatSeconds } from "../duration.js";
import type { Identity } from "../identity/identity.js";
import type { Problem } from "../problem.js";
import type { QuotaView } from "../accounts/ledger.js";
import type { Policy, SizePolicy } from "../policy.js";
import { displayMoney } from "../accounts/money.js";
import type { OverageBlocker } from "../accounts/overage.js";
import { billingOf, blockerText, overageSplit } from "../accounts/overage.js";

export type Verdict =
  | { readonly outcome: "granted" }
  /** The quota allows it; where it would be placed is known only to the leading replica (several replicas). */
  | { readonly outcome: "admitted" }
  | {
      readonly outcome: "queued";
      readonly position: number;
      readonly reason: "node" | "concurrency";
      /** Expected seconds to the grant. */
      readonly eta_s?: number | null;
      /** The bound on the wait. */
      readonly eta_max_s?: number | null;
    }
  | { readonly outcome: "rejected"; readonly problem: Problem };

export interface Cause {
  readonly rank: number;
  readonly cause: string;
  readonly fix: string;
}

export interface CauseInput {
  readonly attribution: Attribution;
  readonly identity: Identity | null;
  readonly view: QuotaView | null;
  readonly durationMs: number;
  readonly size: SizePolicy;
  readonly verdict: Verdict;
  /** Why credits would not pay past the quota (null: they would; absent: not known). */
  readonly overageBlocker?: OverageBlocker | null;
}

/**
 * The likely reasons a call is charged where it is, or refused, most likely first — the
 * checklist people otherwise piece together from forum threads.
 */
export function likelyCauses(input: CauseInput): Cause[] {
  const causes: Omit<Cause, "rank">[] = [];
  const { attribution, identity, view, verdict, size, durationMs } = input;
  if (!attribution.ok) {
    const reason = typeof attribution.problem["reason"] === "string" ? attribution.problem["reason"] : "";
    causes.push({
      cause: `The X-IP-Token sent with the call was refused (${reason}): ${attribution.problem.detail}`,
      fix:
        reason === "expired"
          ? "Tokens are short-lived; the edge mints a fresh one per request. Reload the page, or have the app forward the token of the current request instead of a stored one."
          : reason === "wrong_app"
            ? "Forward the token to the app it was minted for only; for app-to-app calls go through the edge, which re-issues it for the target app."
            : "Send only tokens minted by this pool (through the edge or POST /v1/ip-tokens), unmodified.",
    });
  } else if (identity?.kind === "app") {
    causes.push({
      cause:
        "The app sent no X-IP-Token, so the call is charged to the app itself at the anonymous tier — not to the person using it.",
      fix: "Open the app through the gpupool edge (it injects a token for each viewer), and in app-to-app calls forward the incoming X-IP-Token (SDK: forwardIpToken).",
    });
  } else if (identity?.kind === "ip") {
    causes.push({
      cause:
        "The viewer is not signed in at the edge (private window, a direct link that bypasses the edge session, or blocked cookies), so the call is charged to the IP address at the anonymous tier.",
      fix: "Sign in at the edge's /login page in this browser, or call with Authorization: Bearer <your user token>.",
    });
  }
  if (verdict.outcome === "rejected" && attribution.ok) {
    const p = verdict.problem;
    if (p.code === "duration_too_long") {
      causes.push({
        cause: `The app asks for ${formatSeconds(durationMs / 1000)} on ${size.name} (cost ×${size.cost}), which this tier can never grant.`,
        fix: "Ask the app's developer to request a shorter duration or the large size.",
      });
      if (p["overage_blocked_by"] === "not_opted_in")
        causes.push({
          cause: blockerText("not_opted_in", identity?.tier ?? ""),
          fix: "With overage on, the quota pays what it can and credits pay the rest of a call larger than the whole quota.",
        });
    } else if (p.code === "quota_exceeded" && view) {
      const cost = (durationMs * size.cost) / 1000;
      if (view.reservedMs > 0 && view.quotaMs - view.usedMs >= durationMs * size.cost) {
        causes.push({
          cause: "Your calls already in progress hold the remaining quota as reservations.",
          fix: "Wait for them to finish; unused reserved time is refunded.",
        });
      } else {
        causes.push({
          cause: `This call reserves ${formatSeconds(cost)} but only ${formatSeconds(view.leftMs / 1000)} of today's ${formatSeconds(view.quotaMs / 1000)} is left.`,
          fix:
            view.resetsAt !== null
              ? `Wait for the reset at ${new Date(view.resetsAt).toISOString()} (the window starts at your first call, not at midnight), or use a shorter duration / the large size.`
              : "Use a shorter duration or the large size.",
        });
      }
      const blocker = input.overageBlocker ?? "operator_disabled";
      causes.push({
        cause: blockerText(blocker, identity?.tier ?? ""),
        fix:
          blocker === "not_opted_in"
            ? "Turn overage on (gpupool billing overage on [--cap 5.00]) so credits pay for the rest of a call past the quota."
            : blocker === "not_a_user"
              ? "Sign in: a signed-in user's quota is larger, and credits can pay past it where the pool offers overage."
              : "A higher tier raises the daily GPU quota; credits cannot on this pool.",
      });
    } else if (p.code === "credits_exhausted") {
      causes.push({
        cause:
          "The call needs more GPU time than your quota has left, and your available credits do not cover the hold for the rest.",
        fix: "Add credits, use a shorter duration or the large size, or wait for the quota to reset.",
      });
    } else if (p.code === "spend_cap_reached") {
      causes.push({
        cause: "The call's overage would take this month's overage spending past your monthly cap.",
        fix: "Raise the cap (gpupool billing overage on --cap AMOUNT) or wait for the next billing month.",
      });
    } else if (p.code === "no_gpu_available" && p["reason"] === "predicted_wait") {
      causes.push({
        cause:
          "Every GPU slot that fits is busy, and the call is not expected to start in time: it would wait longer than it may (its max_wait, or the tier's queue timeout), or — with no promise to start in time — into the last part of it the operator keeps as headroom (a tenth by default).",
        fix: "Retry after the Retry-After time, or allow a longer max_wait; a higher tier waits less.",
      });
    } else if (p.code === "no_gpu_available") {
      causes.push({
        cause: "No GPU slot fits this call and it asked not to queue, or the queue is full.",
        fix: "Retry shortly, or allow queueing.",
      });
    } else {
      causes.push({ cause: p.detail, fix: "See the detail above." });
    }
  } else if (verdict.outcome === "queued") {
    causes.push({
      cause:
        verdict.reason === "concurrency"
          ? "The app is at its concurrency limit; the call would wait for one of its own calls to finish."
          : `Every GPU slot that fits is busy; the call would wait at position ${verdict.position}. Queue time is never charged.`,
      fix: "Nothing to fix: the call is granted when a slot frees up, or fails with queue_timeout without charge.",
    });
  }
  return causes.map((c, i) => ({ rank: i + 1, ...c }));
}

export interface BucketReport {
  readonly bucket: "gpu_quota" | "credits" | "overage";
  readonly applies: boolean;
  readonly detail: string;
}

/** What the buckets report needs of the charged identity's quota and wallet now. */
export interface BucketInput {
  readonly identity: Identity | null;
  /** Quota left before this call (ms); null when refused before admission. */
  readonly leftMs: number | null;
  /** What the call would reserve: duration × cost (ms). */
  readonly costMs: number;
  readonly overageBlocker: OverageBlocker | null;
  /** Credits not held (null: no wallet). */
  readonly availableMicros: number | null;
}

/** Which billing bucket would pay for a call, how much of it, and why the others would not. */
export function billingBuckets(policy: Policy, input: BucketInput): BucketReport[] {
  const { identity, leftMs, costMs, overageBlocker } = input;
  const currency = billingOf(policy).currency;
  const money = (m: number): string => displayMoney(m, currency);
  if (identity === null || leftMs === null)
    return (["gpu_quota", "credits", "overage"] as const).map((bucket) => ({
      bucket,
      applies: false,
      detail: "Nobody would be charged: the request is refused before admission (see the steps above).",
    }));
  const split = overageSplit(policy, costMs, leftMs);
  const overage = overageBlocker === null && split.overageMs > 0;
  const who = `${identity.kind}:${identity.id}`;
  return [
    {
      bucket: "gpu_quota",
      applies: split.quotaMs > 0,
      detail:
        `GPU calls are charged to the daily GPU quota of ${who} first, for the time actually held (rounded up to whole seconds × size cost); time queued is never charged. ` +
        `This call would reserve ${formatSeconds(Math.min(costMs, leftMs) / 1000)} of the ${formatSeconds(leftMs / 1000)} left.`,
    },
    {
      bucket: "overage",
      applies: overage,
      detail: overage
        ? `The rest, ${formatSeconds(split.overageMs / 1000)}, is overage paid from credits: ${money(split.holdMicros)} would be held and only what is used charged at release.`
        : split.overageMs === 0
          ? `The quota covers the whole call, so no overage is needed.${overageBlocker === null ? "" : ` (${blockerText(overageBlocker, identity.tier)})`}`
          : blockerText(overageBlocker ?? "operator_disabled", identity.tier),
    },
    {
      bucket: "credits",
      applies: overage,
      detail:
        input.availableMicros === null
          ? "No wallet: only a signed-in user has credits."
          : `${money(input.availableMicros)} available. Credits pay only for overage (GPU time past the quota, when overage is on), in the spending order: included credits first, purchased last.`,
    },
  ];
}
