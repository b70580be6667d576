import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import { actorOf, only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { encodeCursor, nameCursor } from "./page-cursors.js";
import { appJson, poolJson, quotaJson, userJson } from "./views.js";

/** Users or apps per page when the query names no `limit` (the contract allows 1 to 1000). */
const DEFAULT_PAGE = 100;

/** The operator's API: users, apps, nodes, edges, the pool (admin token). */
export function adminRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const admin = only(ctx, "admin");

  app.post<{ Body: wire.CreateUserRequest }>(
    "/v1/admin/users",
    { ...admin, schema: requestSchemas("createUser") },
    async (req, reply) => {
      const { user, token } = await ctx.directory.createUser({ name: req.body.name, tier: req.body.tier ?? "free" });
      const created: wire.CreatedUser = { ...userJson(user), token };
      return reply.code(201).send(created);
    },
  );

  app.get<{ Querystring: wire.UserListQuery }>(
    "/v1/admin/users",
    { ...admin, schema: requestSchemas("listUsers") },
    async (req): Promise<wire.UserList> => {
      const { q, limit, cursor } = req.query;
      // Without a cursor: the first page (an old client that asked for every user gets it so).
      const page = await ctx.directory.findUsers(q ?? null, nameCursor(cursor), Number(limit ?? DEFAULT_PAGE));
      return { users: page.users.map(userJson), next_cursor: page.next === null ? null : encodeCursor(page.next) };
    },
  );

  app.patch<{ Params: { id: string }; Body: wire.UpdateUserRequest }>(
    "/v1/admin/users/:id",
    { ...admin, schema: requestSchemas("updateUser") },
    async (req): Promise<wire.UserWithQuota> => {
      const b = req.body;
      const { user, quota } = await ctx.directory.updateUser(
        req.params.id,
        {
          ...(b.tier !== undefined ? { tier: b.tier } : {}),
          ...(b.quota !== undefined ? { quotaS: b.quota } : {}),
          ...(b.bonus !== undefined ? { bonusS: b.bonus } : {}),
        },
        actorOf(req),
      );
      return { ...userJson(user), quota: quotaJson(quota) };
    },
  );

  app.get<{ Params: { id: string } }>("/v1/admin/users/:id", admin, async (req): Promise<wire.UserWithQuota> => {
    const { user, quota } = await ctx.directory.user(req.params.id);
    return { ...userJson(user), quota: quotaJson(quota) };
  });

  app.post<{ Body: wire.CreateAppRequest }>(
    "/v1/admin/apps",
    { ...admin, schema: requestSchemas("createApp") },
    async (req, reply) => {
      const { app: created, key } = await ctx.directory.createApp({
        name: req.body.name,
        owner: req.body.owner,
        maxConcurrency: req.body.max_concurrency ?? null,
      });
      const answer: wire.CreatedApp = { ...appJson(created), key };
      return reply.code(201).send(answer);
    },
  );

  app.get<{ Querystring: wire.AppListQuery }>(
    "/v1/admin/apps",
    { ...admin, schema: requestSchemas("listApps") },
    async (req): Promise<wire.AppList> => {
      const { limit, cursor } = req.query;
      const page = await ctx.directory.apps(nameCursor(cursor), Number(limit ?? DEFAULT_PAGE));
      return { apps: page.apps.map(appJson), next_cursor: page.next === null ? null : encodeCursor(page.next) };
    },
  );

  app.patch<{ Params: { id: string }; Body: wire.UpdateAppRequest }>(
    "/v1/admin/apps/:id",
    { ...admin, schema: requestSchemas("updateApp") },
    async (req): Promise<wire.App> =>
      appJson(await ctx.directory.updateApp(req.params.id, { maxConcurrency: req.body.max_concurrency }, actorOf(req))),
  );

  for (const kind of ["node", "edge"] as const) {
    app.post<{ Body: wire.CreateKeyRequest }>(
      `/v1/admin/${kind}s`,
      { ...admin, schema: requestSchemas(kind === "node" ? "createNode" : "createEdge") },
      async (req, reply) => {
        const { record, key } = await ctx.directory.createKeyed(kind, req.body.name);
        const created: wire.CreatedKey = { id: record.id, name: record.name, key };
        return reply.code(201).send(created);
      },
    );
  }

  app.get("/v1/admin/pool", admin, async (): Promise<wire.PoolView> => poolJson(await ctx.pool.view()));

  app.delete<{ Params: { id: string } }>(
    "/v1/admin/users/:id/sessions",
    admin,
    async (req): Promise<wire.UserSessionsRevoked> => {
      const r = await ctx.sessions.revokeForUser(req.params.id, actorOf(req));
      return { user: r.user.id, revoked: r.revoked };
    },
  );
}
