import type * as wire from "@gpupool/contract";
import { fail } from "@gpupool/core";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import type { DashboardPrincipal } from "../use-cases/identity/dashboard-sessions.js";
import { authenticate } from "./auth.js";
import type { RouteContext } from "./context.js";
import {
  clearDashboardCookie,
  dashboardCookie,
  publicOrigin,
  requireCsrf,
  requireSameOrigin,
  setDashboardCookie,
} from "./dashboard-cookie.js";
import { iso } from "./views.js";

function sessionJson(p: DashboardPrincipal): wire.DashboardSession {
  return {
    role: p.role,
    ...(p.user !== null ? { user: { id: p.user.id, name: p.user.name, tier: p.user.tier } } : {}),
    csrf_token: p.csrfToken,
    expires_at: iso(p.expiresAt),
  };
}

/** The dashboard's session (a cookie) and its one-time sign-in links. */
export function dashboardSessionRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.post<{ Body: wire.DashboardSignIn }>(
    "/v1/dashboard/session",
    { schema: requestSchemas("openDashboardSession") },
    async (req, reply) => {
      // Signing a browser in from another site (as the attacker's user) is refused too.
      requireSameOrigin(ctx, req);
      const opened = await ctx.dashboard.open(req.body);
      setDashboardCookie(ctx, req, reply, opened.secret, opened.expiresAt);
      return reply.code(201).send(sessionJson(opened));
    },
  );

  app.get("/v1/dashboard/session", async (req): Promise<wire.DashboardSession> => {
    const cookie = dashboardCookie(req);
    const session = cookie === null ? null : await ctx.dashboard.resolve(cookie);
    if (session === null)
      fail("invalid_session", "Not signed in to the dashboard (or the session expired or was signed out).");
    return sessionJson(session);
  });

  app.delete("/v1/dashboard/session", async (req, reply) => {
    const cookie = dashboardCookie(req);
    if (cookie !== null) await ctx.dashboard.signOut(cookie, () => requireCsrf(ctx, req, cookie));
    clearDashboardCookie(ctx, req, reply);
    return reply.code(204).send();
  });

  app.post<{ Body: wire.DashboardLinkRequest | null }>(
    "/v1/dashboard/links",
    { schema: requestSchemas("createDashboardLink") },
    async (req, reply) => {
      const caller = await authenticate(ctx, req, ["user", "admin"]);
      const { code, expiresAt } = await ctx.dashboard.signInCode(caller);
      const link: wire.DashboardLink = { url: `${publicOrigin(ctx, req)}/#signin=${code}`, expires_at: iso(expiresAt) };
      return reply.code(201).send(link);
    },
  );
}
