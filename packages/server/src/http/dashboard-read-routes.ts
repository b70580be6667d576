import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import { authenticate, only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { appStatsJson, auditJson, meJson, queueJson, refusalsJson } from "./dashboard-views.js";
import { liveStream } from "./live-streams.js";
import { iso, poolJson } from "./views.js";

/** The pool stream sends at most about four times a second. */
const POOL_MIN_GAP_MS = 250;
/** A user's meter looks again at most this often on changes. */
const ME_MIN_GAP_MS = 100;
/** Every stream looks again this often without a lease event (heartbeats, credits granted elsewhere). */
const POLL_MS = 1_000;

/** What the dashboard's views read: live streams, the queue, refusals, the audit log, app stats. */
export function dashboardReadRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const admin = only(ctx, "admin");

  app.get("/v1/me/events", async (req, reply) => {
    const caller = await authenticate(ctx, req, ["user"]);
    const userId = caller.user.id;
    liveStream(
      ctx,
      req,
      reply,
      async () => {
        const { user, quota } = await ctx.billing.me(userId);
        return [{ event: "me", data: meJson(user, quota) }];
      },
      { minGapMs: ME_MIN_GAP_MS, pollMs: POLL_MS },
    );
  });

  app.get("/v1/admin/pool/events", admin, async (req, reply) => {
    liveStream(
      ctx,
      req,
      reply,
      async () => [
        { event: "pool", data: poolJson(await ctx.pool.view()) },
        { event: "queue", data: queueJson(await ctx.views.queue()) },
      ],
      { minGapMs: POOL_MIN_GAP_MS, pollMs: POLL_MS },
    );
  });

  app.get("/v1/admin/queue", admin, async (): Promise<wire.QueueView> => queueJson(await ctx.views.queue()));

  app.get<{ Querystring: wire.RefusalsQuery }>(
    "/v1/admin/refusals",
    { ...admin, schema: requestSchemas("getRefusals") },
    async (req): Promise<wire.RefusalsView> => refusalsJson(await ctx.views.refusals(Number(req.query.hours ?? 24))),
  );

  app.get<{ Querystring: wire.AuditQuery }>(
    "/v1/admin/audit",
    { ...admin, schema: requestSchemas("getAudit") },
    async (req): Promise<wire.AuditPage> => {
      const page = await ctx.audit.page(req.query.cursor ?? null, Number(req.query.limit ?? 100));
      return { entries: page.entries.map(auditJson), next_cursor: page.next };
    },
  );

  app.get<{ Querystring: wire.AppStatsQuery }>(
    "/v1/apps/stats",
    { schema: requestSchemas("getAppStats") },
    async (req): Promise<wire.AppStatsList> => {
      const caller = await authenticate(ctx, req, ["user", "admin"]);
      const stats = await ctx.views.apps(caller.kind === "user" ? caller.user.id : null, Number(req.query.days ?? 30));
      return { from: iso(stats.from), to: iso(stats.to), apps: stats.apps.map(appStatsJson) };
    },
  );
}
