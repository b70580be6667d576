import { billingBuckets, fail } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { authenticate, ipTokenHeader } from "./auth.js";
import type { RouteContext } from "./context.js";
import { quotaJson } from "./views.js";

export function quotaRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { policy } = ctx;

  app.get("/v1/quota", async (req) => {
    const caller = await authenticate(ctx, req, ["app", "user"]);
    const q = await ctx.quota.forCaller(caller, ipTokenHeader(req));
    return quotaJson(q.identity, q.view);
  });

  /**
   * Everything a lease request would be charged and decided, without reserving anything: the
   * attribution steps, the quota state, the billing buckets, the verdict, and the likely fixes.
   */
  app.get<{ Querystring: { duration?: string; size?: string } }>(
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
      const durationMs = req.query.duration === undefined ? policy.defaultDurationMs : Math.round(Number(req.query.duration) * 1000);
      if (!(durationMs > 0)) fail("invalid_request", "duration must be more than 0 seconds.", { errors: [{ field: "duration", message: "must be more than 0" }] });
      const size = policy.sizes[req.query.size ?? policy.defaultSize];
      if (!size) throw new Error("size validated by schema");
      const d = await ctx.diagnose.run(caller, { ipToken: ipTokenHeader(req), durationMs, size });
      return {
        identity: d.identity,
        steps: d.steps,
        request: { duration: durationMs / 1000, size: size.name, cost: size.cost, reserves: (durationMs * size.cost) / 1000 },
        quota: d.quota === null ? null : quotaJson(d.quota.identity, d.quota.view),
        buckets: billingBuckets(d.identity),
        verdict: d.verdict,
        causes: d.causes,
      };
    },
  );
}
