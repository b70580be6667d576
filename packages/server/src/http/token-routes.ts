import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import { only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { iso } from "./views.js";

export function tokenRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get("/.well-known/jwks.json", async (_req, reply): Promise<wire.Jwks> => {
    reply.header("cache-control", "public, max-age=300");
    return ctx.tokens.jwks() as wire.Jwks;
  });

  /** Mints an X-IP-Token: the edge calls this for every proxied request. */
  app.post<{ Body: wire.IpTokenRequest }>(
    "/v1/ip-tokens",
    { ...only(ctx, "edge", "admin"), schema: requestSchemas("mintIpToken") },
    async (req, reply) => {
      const minted = await ctx.tokens.mint(req.body);
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
