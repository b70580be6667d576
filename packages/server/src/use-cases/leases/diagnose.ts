import { DomainError, decideAdmission, fail, identityKey, likelyCauses, quotaLeftShare } from "@gpupool/core";
import type {
  AdmissionRequest,
  AttributionStep,
  Cause,
  Identity,
  Placement,
  Policy,
  PriorityRequest,
  SizePolicy,
  Verdict,
} from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { Store } from "../../storage/store.js";
import type { Accounts, IdentityQuota } from "../accounts/accounts.js";
import type { Caller } from "../identity/callers.js";
import type { IpTokenHeader, RequestIdentity } from "../identity/request-identity.js";
import { sizeNamed } from "./sizes.js";
import { boundSeconds, expectedSeconds } from "./eta.js";

/** Where the pool would put a call now, as this replica can tell (null: only the leader knows). */
export interface PlacementView {
  placement(request: PriorityRequest, now: number): Placement | null;
}

export interface Diagnosis {
  readonly identity: Identity | null;
  readonly steps: readonly AttributionStep[];
  readonly request: { readonly durationMs: number; readonly size: SizePolicy };
  readonly quota: IdentityQuota | null;
  readonly verdict: Verdict;
  readonly causes: readonly Cause[];
}

/**
 * A dry run of admission: who a lease request would be charged to and why, the quota state, and
 * the verdict `POST /v1/leases` would give now — decided by the same `decideAdmission`, on the
 * same account and the same placement trial — with the likely causes and fixes. Reserves nothing.
 */
export class Diagnose {
  constructor(
    private readonly store: Store,
    private readonly identity: RequestIdentity,
    private readonly accounts: Accounts,
    private readonly view: PlacementView,
    private readonly policy: Policy,
    private readonly clock: Clock,
  ) {}

  /** `durationMs` and `size` as the request named them (absent: the policy's defaults). */
  async run(
    caller: Caller & { kind: "app" | "user" },
    input: {
      ipToken: IpTokenHeader;
      durationMs?: number | undefined;
      size?: string | undefined;
      maxWaitMs?: number | undefined;
    },
  ): Promise<Diagnosis> {
    const durationMs = input.durationMs ?? this.policy.defaultDurationMs;
    if (!(durationMs > 0))
      fail("invalid_request", "duration must be more than 0 seconds.", {
        errors: [{ field: "duration", message: "must be more than 0" }],
      });
    const size = sizeNamed(this.policy, input.size);
    const attribution = await this.identity.of(caller, input.ipToken);
    const now = this.clock.now();
    const request: AdmissionRequest = {
      durationMs,
      size,
      queue: true,
      via: attribution.ok ? attribution.via : "app-key",
      node: null,
      now,
      // As POST /v1/leases: refused at once when expected to outwait max_wait or the queue timeout.
      ...(this.policy.predictedWait === false ? {} : { maxWaitMs: input.maxWaitMs ?? null }),
    };
    // A read: reserves nothing, locks nothing, writes nothing.
    const report = await this.store.read(
      async (tx): Promise<{ identity: Identity | null; quota: IdentityQuota | null; verdict: Verdict }> => {
        if (!attribution.ok)
          return { identity: null, quota: null, verdict: { outcome: "rejected", problem: attribution.problem } };
        let account;
        try {
          account = await this.accounts.forAdmission(tx, attribution.charged, request, false);
        } catch (err) {
          if (err instanceof DomainError)
            return { identity: null, quota: null, verdict: { outcome: "rejected", problem: err.problem } };
          throw err;
        }
        const { identity } = account;
        const queued: PriorityRequest = {
          leaseId: "(diagnose)",
          appId: caller.kind === "app" ? caller.app.id : null,
          identity: identityKey(identity),
          slots: size.slots,
          priority: account.tier.priority,
          durationMs,
          seq: Number.MAX_SAFE_INTEGER,
          queuedAt: now,
          quotaLeftShare: quotaLeftShare(this.policy, account),
          node: null,
        };
        const placement = this.view.placement(queued, now) ?? { kind: "later" };
        const decision = decideAdmission(this.policy, account, request, placement);
        const quota = this.accounts.view(identity, account.overrideMs, account.ledger, account.billing);
        if (decision.kind === "refused")
          return { identity, quota, verdict: { outcome: "rejected", problem: decision.problem } };
        if (decision.outcome === "granted") return { identity, quota, verdict: { outcome: "granted" } };
        if (decision.outcome === "pending" || placement.kind !== "wait" || placement.place === null)
          return { identity, quota, verdict: { outcome: "admitted" } };
        const { place } = placement;
        return {
          identity,
          quota,
          verdict: {
            outcome: "queued",
            position: place.position,
            reason: place.reason,
            eta_s: expectedSeconds(place),
            eta_max_s: boundSeconds(place),
          },
        };
      },
    );
    const causes = likelyCauses({
      attribution,
      identity: report.identity,
      view: report.quota?.view ?? null,
      durationMs,
      size,
      verdict: report.verdict,
      overageBlocker: report.quota?.billing.overage.blockedBy ?? null,
    });
    return {
      identity: report.identity,
      steps: attribution.steps,
      request: { durationMs, size },
      quota: report.quota,
      verdict: report.verdict,
      causes,
    };
  }
}
