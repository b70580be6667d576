import type { FastifyInstance } from "fastify";
import { only } from "./auth.js";
import type { RouteContext } from "./context.js";

export function tokenRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/.well-known/jwks.json", async (_req, reply) => {
    reply.header("cache-control", "public, max-age=300");
    return ctx.tokens.jwks();
  });

  /** Mints an X-IP-Token: the edge calls this for every proxied request. */
  app.post<{ Body: { app: string; user?: string; ip?: string } }>(
    "/v1/ip-tokens",
    {
      ...only(ctx, "edge", "admin"),
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["app"],
          properties: { app: { type: "string", minLength: 1, maxLength: 64 }, user: { type: "string", minLength: 1, maxLength: 64 }, ip: { type: "string", minLength: 1, maxLength: 64 } },
        },
      },
    },
    async (req, reply) => {
      const minted = await ctx.tokens.mint(req.body);
      return reply.code(201).send({ token: minted.token, expires_at: new Date(minted.expiresAt).toISOString(), subject: minted.subject, app: minted.app });
    },
  );
}
