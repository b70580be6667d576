import { DomainError, EMPTY_LEDGER, fail, identityKey, likelyCauses, problem, quotaView, rollWindow, tierOf } from "@gpupool/core";
import type { Verdict } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { chargedIdentity } from "../use-cases/charged-identity.js";
import { readQuota, reserveWithRetryTime } from "../use-cases/quota.js";
import { attributeRequest } from "./attribution.js";
import { authenticate } from "./auth.js";
import type { ServerContext } from "./context.js";
import { quotaJson } from "./views.js";

export function quotaRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const { policy } = ctx.config;

  app.get("/v1/quota", async (req) => {
    const caller = await authenticate(ctx, req, ["app", "user"]);
    if (caller.kind !== "app" && caller.kind !== "user") throw new Error("unreachable");
    const attribution = await attributeRequest(ctx, req, caller);
    if (!attribution.ok) throw new DomainError(attribution.problem);
    const q = await ctx.store.transaction((tx) => readQuota(tx, policy, attribution.charged, ctx.clock.now()));
    return quotaJson(q.identity, q.view);
  });

  /**
   * Everything a lease request would be charged and decided, without reserving anything: the
   * attribution steps, the quota state, the billing buckets, the verdict, and the likely fixes.
   */
  app.get(
    "/v1/diagnose",
    {
      schema: {
        querystring: {
          type: "object",
          additionalProperties: false,
          properties: {
            duration: { type: "string", pattern: "^[0-9]{1,6}(\\.[0-9]{1,3})?$" },
            size: { type: "string", enum: Object.keys(policy.sizes) },
          },
        },
      },
    },
    async (req) => {
      const caller = await authenticate(ctx, req, ["app", "user"]);
      if (caller.kind !== "app" && caller.kind !== "user") throw new Error("unreachable");
      const q = req.query as { duration?: string; size?: string };
      const durationMs = q.duration === undefined ? policy.defaultDurationMs : Math.round(Number(q.duration) * 1000);
      if (!(durationMs > 0)) fail("invalid_request", "duration must be more than 0 seconds.", { errors: [{ field: "duration", message: "must be more than 0" }] });
      const size = policy.sizes[q.size ?? policy.defaultSize];
      if (!size) throw new Error("size validated by schema");
      const attribution = await attributeRequest(ctx, req, caller);
      const now = ctx.clock.now();
      const appId = caller.kind === "app" ? caller.app.id : null;
      const report = await ctx.store.transaction(async (tx) => {
        if (!attribution.ok) return { identity: null, view: null, verdict: { outcome: "rejected", problem: attribution.problem } as Verdict };
        let resolved;
        try {
          resolved = await chargedIdentity(tx, policy, attribution.charged);
        } catch (err) {
          if (err instanceof DomainError) return { identity: null, view: null, verdict: { outcome: "rejected", problem: err.problem } as Verdict };
          throw err;
        }
        const { identity, overrideMs } = resolved;
        const tier = tierOf(policy, identity.tier);
        const ledger = rollWindow((await tx.ledgers.get(identityKey(identity))) ?? EMPTY_LEDGER, now, policy.windowMs);
        const view = quotaView(ledger, tier, overrideMs, policy.windowMs);
        const outcome = await reserveWithRetryTime(tx, { policy, identity, tier, overrideMs, ledger, durationMs, size, now, via: attribution.via });
        let verdict: Verdict;
        if (!outcome.ok) verdict = { outcome: "rejected", problem: outcome.problem };
        else if (!ctx.engine.isLeader) verdict = { outcome: "admitted" };
        else if (!ctx.engine.couldEverFit(size.slots)) verdict = { outcome: "rejected", problem: problem("no_gpu_available", `No GPU in this pool can take a ${size.name} call.`, { reason: "no_capacity" }) };
        else {
          const placed = ctx.engine.placement({
            slots: size.slots,
            appId,
            identity: identityKey(identity),
            priority: tier.priority,
            durationMs,
            quotaLeftShare: view.quotaMs > 0 ? view.leftMs / view.quotaMs : 0,
          });
          verdict =
            placed.outcome === "granted"
              ? placed
              : { outcome: "queued", position: placed.position, reason: placed.reason, eta_s: placed.etaMs === null ? null : Math.ceil(placed.etaMs / 1000) };
        }
        return { identity, view, verdict };
      });
      const causes = likelyCauses({ attribution, identity: report.identity, view: report.view, durationMs, size, verdict: report.verdict });
      return {
        identity: report.identity,
        steps: attribution.steps,
        request: { duration: durationMs / 1000, size: size.name, cost: size.cost, reserves: (durationMs * size.cost) / 1000 },
        quota: report.identity && report.view ? quotaJson(report.identity, report.view) : null,
        buckets: [
          {
            bucket: "gpu_quota",
            applies: report.identity !== null,
            detail:
              report.identity !== null
                ? `GPU calls are charged to the daily GPU quota of ${report.identity.kind}:${report.identity.id}, for the time actually held (rounded up to whole seconds × size cost). Time spent queued is never charged.`
                : "Nobody would be charged: the request is refused before admission (see the steps above).",
          },
          { bucket: "credits", applies: false, detail: "Credits (included monthly or purchased) pay for paid inference and paid hardware. They do not extend the GPU quota." },
          { bucket: "overage", applies: false, detail: "Overage billing of GPU time to credits is not enabled on this pool, so calls past the quota are refused, never billed." },
        ],
        verdict: report.verdict,
        causes,
      };
    },
  );
}
