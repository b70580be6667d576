import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import type { UserRecord } from "../storage/store.js";
import { only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { iso } from "./views.js";

const sessionUser = (u: UserRecord): wire.SessionUser => ({ id: u.id, name: u.name, tier: u.tier });

/**
 * What the edge needs from the control plane besides minting: browser sessions (kept here so they
 * survive edge restarts and can be revoked centrally) and re-issuing an app's X-IP-Token for the
 * app it calls. All of it takes an edge key.
 */
export function sessionRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const edge = only(ctx, "edge");

  app.post<{ Body: wire.SessionOpenRequest }>(
    "/v1/sessions",
    { ...edge, schema: requestSchemas("openSession") },
    async (req, reply) => {
      const s = await ctx.sessions.open({
        token: req.body.token,
        ...(req.body.name !== undefined ? { name: req.body.name } : {}),
      });
      const opened: wire.SessionOpened = {
        session: s.session,
        user: sessionUser(s.user),
        expires_at: iso(s.expiresAt),
      };
      return reply.code(201).send(opened);
    },
  );

  app.post<{ Body: wire.SessionRequest }>(
    "/v1/sessions/resolve",
    { ...edge, schema: requestSchemas("resolveSession") },
    async (req): Promise<wire.SessionResolved> => {
      const s = await ctx.sessions.resolve(req.body.session);
      return { user: sessionUser(s.user), expires_at: iso(s.expiresAt) };
    },
  );

  // The secret goes in the body, not the path: paths end up in access logs.
  app.post<{ Body: wire.SessionRequest }>(
    "/v1/sessions/revoke",
    { ...edge, schema: requestSchemas("revokeSession") },
    async (req): Promise<wire.SessionRevoked> => ({
      revoked: await ctx.sessions.revoke(req.body.session),
    }),
  );

  /**
   * App-to-app calls: the edge presents the X-IP-Token the calling app forwarded; if the pool
   * signed it and it has not expired, the same subject gets a token for the target app, so the
   * end user — not the calling app — is charged.
   */
  app.post<{ Body: wire.IpTokenReissueRequest }>(
    "/v1/ip-tokens/reissue",
    { ...edge, schema: requestSchemas("reissueIpToken") },
    async (req, reply) => {
      const minted = await ctx.tokens.reissue({ token: req.body.token, app: req.body.app });
      const token: wire.IpToken = {
        token: minted.token,
        expires_at: iso(minted.expiresAt),
        subject: minted.subject,
        app: minted.app,
      };
      return reply.code(201).send(token);
    },
  );
}
