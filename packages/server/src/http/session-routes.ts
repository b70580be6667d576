import { fail, identityKey, problem } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { findApp } from "../use-cases/admin.js";
import { openSession, resolveSession, revokeSession, revokeUserSessions } from "../use-cases/sessions.js";
import type { UserRecord } from "../storage/store.js";
import { authenticate } from "./auth.js";
import type { ServerContext } from "./context.js";

const SECRET = { type: "string", minLength: 1, maxLength: 512 } as const;
const iso = (ms: number): string => new Date(ms).toISOString();
const userJson = (u: UserRecord) => ({ id: u.id, name: u.name, tier: u.tier });

/**
 * What the edge needs from the control plane besides minting: browser sessions (kept here so they
 * survive edge restarts and can be revoked centrally) and re-issuing an app's X-IP-Token for the
 * app it calls. All of it takes an edge key; revoking a user's sessions takes the admin token.
 */
export function sessionRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const edge = { preHandler: async (req: Parameters<typeof authenticate>[1]) => void (await authenticate(ctx, req, ["edge"])) };

  app.post<{ Body: { token: string; name?: string } }>(
    "/v1/sessions",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["token"], properties: { token: SECRET, name: { type: "string", minLength: 1, maxLength: 64 } } } } },
    async (req, reply) => {
      const s = await openSession(ctx.store, { token: req.body.token, ...(req.body.name !== undefined ? { name: req.body.name } : {}) }, ctx.clock.now());
      return reply.code(201).send({ session: s.session, user: userJson(s.user), expires_at: iso(s.expiresAt) });
    },
  );

  app.post<{ Body: { session: string } }>(
    "/v1/sessions/resolve",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["session"], properties: { session: SECRET } } } },
    async (req) => {
      const s = await resolveSession(ctx.store, req.body.session, ctx.clock.now());
      return { user: userJson(s.user), expires_at: iso(s.expiresAt) };
    },
  );

  // The secret goes in the body, not the path: paths end up in access logs.
  app.post<{ Body: { session: string } }>(
    "/v1/sessions/revoke",
    { ...edge, schema: { body: { type: "object", additionalProperties: false, required: ["session"], properties: { session: SECRET } } } },
    async (req) => ({ revoked: await revokeSession(ctx.store, req.body.session, ctx.clock.now()) }),
  );

  app.delete<{ Params: { id: string } }>("/v1/admin/users/:id/sessions", async (req) => {
    await authenticate(ctx, req, ["admin"]);
    const r = await revokeUserSessions(ctx.store, req.params.id, ctx.clock.now());
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
      const now = ctx.clock.now();
      const target = await ctx.store.transaction((tx) => findApp(tx, req.body.app));
      if (!target) fail("invalid_request", `No app "${req.body.app}".`, { errors: [{ field: "app", message: "is not a known app" }] });
      const check = await ctx.ipTokens.verifyAnyApp(req.body.token, now);
      if (!check.present) throw new Error("unreachable: a token was given");
      if (!check.valid) {
        return reply.code(401).type("application/problem+json").send(problem("invalid_ip_token", `${check.message} It was not re-issued.`, { reason: check.reason }));
      }
      const subject = identityKey(check.subject);
      const minted = await ctx.ipTokens.mint(subject, target.id, now);
      return reply.code(201).send({ token: minted.token, expires_at: iso(minted.expiresAt), subject, app: target.id });
    },
  );
}
