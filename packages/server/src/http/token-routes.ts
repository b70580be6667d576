import { fail, normalizeIp } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { findApp, findUser } from "../use-cases/admin.js";
import { authenticate } from "./auth.js";
import type { ServerContext } from "./context.js";

export function tokenRoutes(app: FastifyInstance, ctx: ServerContext): void {
  app.get("/.well-known/jwks.json", async (_req, reply) => {
    reply.header("cache-control", "public, max-age=300");
    return ctx.ipTokens.jwks();
  });

  /** Mints an X-IP-Token: the edge calls this for every proxied request. */
  app.post<{ Body: { app: string; user?: string; ip?: string } }>(
    "/v1/ip-tokens",
    {
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
      await authenticate(ctx, req, ["edge", "admin"]);
      const b = req.body;
      if ((b.user === undefined) === (b.ip === undefined)) {
        fail("invalid_request", "Name exactly one viewer: user (a user id or name) or ip (an address).", { errors: [{ field: b.user === undefined ? "user" : "ip", message: "exactly one of user and ip is required" }] });
      }
      const { appId, subject } = await ctx.store.transaction(async (tx) => {
        const target = await findApp(tx, b.app);
        if (!target) fail("invalid_request", `No app "${b.app}".`, { errors: [{ field: "app", message: "is not a known app" }] });
        if (b.user !== undefined) {
          const user = await findUser(tx, b.user);
          if (!user) fail("invalid_request", `No user "${b.user}".`, { errors: [{ field: "user", message: "is not a known user" }] });
          return { appId: target.id, subject: `user:${user.id}` };
        }
        const ip = normalizeIp(b.ip ?? "");
        if (ip === null) fail("invalid_request", `"${b.ip ?? ""}" is not an IP address.`, { errors: [{ field: "ip", message: "is not an IPv4 or IPv6 address" }] });
        return { appId: target.id, subject: `ip:${ip}` };
      });
      const minted = await ctx.ipTokens.mint(subject, appId, ctx.clock.now());
      return reply.code(201).send({ token: minted.token, expires_at: new Date(minted.expiresAt).toISOString(), subject, app: appId });
    },
  );
}
