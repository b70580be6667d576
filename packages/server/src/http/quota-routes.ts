import type * as wire from "@gpupool/contract";
import { billingBuckets } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { authenticate, ipTokenHeader } from "./auth.js";
import type { RouteContext } from "./context.js";
import { withConfiguredSizes } from "./schemas.js";
import { diagnosisJson, quotaJson } from "./views.js";

export function quotaRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/v1/quota", async (req): Promise<wire.Quota> => {
    const caller = await authenticate(ctx, req, ["app", "user"]);
    const q = await ctx.quota.forCaller(caller, ipTokenHeader(req));
    return quotaJson(q);
  });

  /**
   * Everything a lease request would be charged and decided, without reserving anything: the
   * attribution steps, the quota state, the billing buckets, the verdict, and the likely fixes.
   */
  app.get<{ Querystring: wire.DiagnoseQuery }>(
    "/v1/diagnose",
    { schema: withConfiguredSizes("diagnose", Object.keys(ctx.policy.sizes)) },
    async (req): Promise<wire.Diagnosis> => {
      const caller = await authenticate(ctx, req, ["app", "user"]);
      const durationMs = req.query.duration === undefined ? undefined : Math.round(Number(req.query.duration) * 1000);
      const maxWaitMs = req.query.max_wait === undefined ? undefined : Math.round(Number(req.query.max_wait) * 1000);
      const d = await ctx.diagnose.run(caller, {
        ipToken: ipTokenHeader(req),
        durationMs,
        size: req.query.size,
        maxWaitMs,
      });
      const costMs = d.request.durationMs * d.request.size.cost;
      const buckets = billingBuckets(ctx.policy, {
        identity: d.identity,
        leftMs: d.quota?.view.leftMs ?? null,
        costMs,
        overageBlocker: d.quota?.billing.overage.blockedBy ?? null,
        availableMicros: d.quota?.billing.credits?.availableMicros ?? null,
      });
      return diagnosisJson(d, buckets);
    },
  );
}
