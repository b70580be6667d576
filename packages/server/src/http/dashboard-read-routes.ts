import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import { fail } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { authenticate, only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { appStatsJson, auditJson, meJson, queueJson, refusalsJson } from "./dashboard-views.js";
import { liveStream } from "./live-streams.js";
import { SharedViews } from "./shared-views.js";
import { iso, poolJson } from "./views.js";
import { QUEUE_LISTED } from "../use-cases/admin/pool-view.js";

/** The pool stream sends at most about four times a second. */
const POOL_MIN_GAP_MS = 250;
/** A user's meter looks again at most this often on changes. */
const ME_MIN_GAP_MS = 100;
/** Every stream looks again this often without a lease event (heartbeats, credits granted elsewhere; see RouteContext.livePollMs). */
const POLL_MS = 1_000;

/** What the dashboard's views read: live streams, the queue, refusals, the audit log, app stats. */
export function dashboardReadRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const admin = only(ctx, "admin");
  const pollMs = ctx.livePollMs ?? POLL_MS;

  // Every stream of one view (the pool; one user's meter) shares one read and one serialization.
  const meters = new SharedViews(ctx.events, ME_MIN_GAP_MS);
  const pools = new SharedViews(ctx.events, POOL_MIN_GAP_MS);

  app.get("/v1/me/events", async (req, reply) => {
    const caller = await authenticate(ctx, req, ["user"]);
    const userId = caller.user.id;
    const { view, release } = meters.open(userId, async () => {
      const { user, quota } = await ctx.billing.me(userId);
      return [{ event: "me", data: meJson(user, quota) }];
    });
    liveStream(ctx, req, reply, () => view.get(), { minGapMs: ME_MIN_GAP_MS, pollMs, onClose: release });
  });

  app.get("/v1/admin/pool/events", admin, async (req, reply) => {
    const { view, release } = pools.open("pool", async () => [
      { event: "pool", data: poolJson(await ctx.pool.view()) },
      { event: "queue", data: queueJson(await ctx.views.queue()) },
    ]);
    liveStream(ctx, req, reply, () => view.get(), { minGapMs: POOL_MIN_GAP_MS, pollMs, onClose: release });
  });

  app.get("/v1/admin/queue", admin, async (): Promise<wire.QueueView> => queueJson(await ctx.views.queue()));

  app.get<{ Querystring: wire.QueueEntriesQuery }>(
    "/v1/admin/queue/entries",
    { ...admin, schema: requestSchemas("getQueueEntries") },
    async (req): Promise<wire.QueueEntriesPage> => {
      const page = await ctx.pool.line(decodePosition(req.query.cursor), Number(req.query.limit ?? QUEUE_LISTED));
      const last = page.entries[page.entries.length - 1];
      return {
        total: page.total,
        entries: page.entries.map((e) => ({ ...e })),
        next_cursor: page.more && last !== undefined ? encodePosition(last.position) : null,
      };
    },
  );

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

/** A queue page's cursor: the last position listed, opaque to callers. */
function encodePosition(position: number): string {
  return Buffer.from(`queue:${position}`).toString("base64url");
}

function decodePosition(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  const m = /^queue:([0-9]{1,9})$/.exec(Buffer.from(cursor, "base64url").toString("utf8"));
  if (m?.[1] !== undefined) return Number(m[1]);
  return fail("invalid_request", "`cursor` is not a cursor this server gave out (use `next_cursor` as it came).", {
    errors: [{ field: "cursor", message: "is not a next_cursor of this server" }],
  });
}
