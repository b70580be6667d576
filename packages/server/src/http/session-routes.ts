import type { FastifyInstance } from "fastify";
import type { UserRecord } from "../storage/store.js";
import { only } from "./auth.js";
import type { RouteContext } from "./context.js";

const SECRET = { type: "string", minLength: 1, maxLength: 512 } as const;
const iso = (ms: number): string => new Date(ms).toISOString();
const userJson = (u: UserRecord) => ({ id: u.id, name: u.name, tier: u.tier });

/**
 * What the edge needs from the control plane besides minting: browser sessions (kept here so they
 * survive edge restarts and can be revoked centrally) and re-issuing an app's X-IP-Token for the
 * app it calls. All of it takes an edge key; revoking a user's sessions takes the admin token.
 */
export function sessionRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const edge = only(ctx, "edge");

  app.post<{ Body: { token: string; name?: string } }>(
    "/v1/sessions",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["token"], properties: { token: SECRET, name: { type: "string", minLength: 1, maxLength: 64 } } } } },
    async (req, reply) => {
      const s = await ctx.sessions.open({ token: req.body.token, ...(req.body.name !== undefined ? { name: req.body.name } : {}) });
      return reply.code(201).send({ session: s.session, user: userJson(s.user), expires_at: iso(s.expiresAt) });
    },
  );

  app.post<{ Body: { session: string } }>(
    "/v1/sessions/resolve",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["session"], properties: { session: SECRET } } } },
    async (req) => {
      const s = await ctx.sessions.resolve(req.body.session);
      return { user: userJson(s.user), expires_at: iso(s.expiresAt) };
    },
  );

  // The secret goes in the body, not the path: paths end up in access logs.
  app.post<{ Body: { session: string } }>(
    "/v1/sessions/revoke",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["session"], properties: { session: SECRET } } } },
    async (req) => ({ revoked: await ctx.sessions.revoke(req.body.session) }),
  );

  app.delete<{ Params: { id: string } }>("/v1/admin/users/:id/sessions", only(ctx, "admin"), async (req) => {
    const r = await ctx.sessions.revokeForUser(req.params.id);
    return { user: r.user.id, revoked: r.revoked };
  });

  /**
   * App-to-app calls: the edge presents the X-IP-Token the calling app forwarded; if the pool
   * signed it and it has not expired, the same subject gets a token for the target app, so the
   * end user — not the calling app — is charged.
   */
  app.post<{ Body: { token: string; app: string } }>(
    "/v1/ip-tokens/reissue",
    {
      ...edge,
      schema: { body: { type: "object", additionalProperties: false, required: ["token", "app"], properties: { token: { type: "string", maxLength: 8192 }, app: { type: "string", minLength: 1, maxLength: 64 } } } },
    },
    async (req, reply) => {
      const minted = await ctx.tokens.reissue({ token: req.body.token, app: req.body.app });
      return reply.code(201).send({ token: minted.token, expires_at: iso(minted.expiresAt), subject: minted.subject, app: minted.app });
    },
  );
}
