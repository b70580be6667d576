import type { Attribution } from "../identity/attribution.js";
import { formatSeconds } from "../duration.js";
import type { Identity } from "../identity/identity.js";
import type { Problem } from "../problem.js";
import type { QuotaView } from "../accounts/ledger.js";
import type { SizePolicy } from "../policy.js";

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
      causes.push({
        cause:
          "Credits you may have bought do not extend the GPU quota: they pay for inference and paid hardware, a different billing bucket.",
        fix: "A higher tier raises the daily GPU quota; credits will not.",
      });
    } else if (p.code === "no_gpu_available" && p["reason"] === "predicted_wait") {
      causes.push({
        cause:
          "Every GPU slot that fits is busy, and the call is expected to wait longer than it may (its max_wait, or the tier's queue timeout).",
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

/** Which billing bucket would pay for a call charged to `identity` (null: refused before admission), and why the others do not. */
export function billingBuckets(identity: Identity | null): BucketReport[] {
  return [
    {
      bucket: "gpu_quota",
      applies: identity !== null,
      detail:
        identity !== null
          ? `GPU calls are charged to the daily GPU quota of ${identity.kind}:${identity.id}, for the time actually held (rounded up to whole seconds × size cost). Time spent queued is never charged.`
          : "Nobody would be charged: the request is refused before admission (see the steps above).",
    },
    {
      bucket: "credits",
      applies: false,
      detail:
        "Credits (included monthly or purchased) pay for paid inference and paid hardware. They do not extend the GPU quota.",
    },
    {
      bucket: "overage",
      applies: false,
      detail:
        "Overage billing of GPU time to credits is not enabled on this pool, so calls past the quota are refused, never billed.",
    },
  ];
}
