import type { FastifyInstance } from "fastify";
import type { AppRecord, UserRecord } from "../storage/store.js";
import { only } from "./auth.js";
import type { RouteContext } from "./context.js";
import { iso, quotaJson } from "./views.js";

const NAME = { type: "string", minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9][A-Za-z0-9._-]*$" } as const;

function userJson(u: UserRecord): Record<string, unknown> {
  return { id: u.id, name: u.name, tier: u.tier, quota_override: u.quotaOverrideMs === null ? null : u.quotaOverrideMs / 1000, created_at: new Date(u.createdAt).toISOString() };
}

function appJson(a: AppRecord): Record<string, unknown> {
  return { id: a.id, name: a.name, owner: a.ownerId, max_concurrency: a.maxConcurrency, created_at: new Date(a.createdAt).toISOString() };
}

export function adminRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const admin = only(ctx, "admin");

  app.post<{ Body: { name: string; tier?: string } }>(
    "/v1/admin/users",
    { ...admin, schema: { body: { type: "object", additionalProperties: false, required: ["name"], properties: { name: NAME, tier: { type: "string", maxLength: 32 } } } } },
    async (req, reply) => {
      const { user, token } = await ctx.directory.createUser({ name: req.body.name, tier: req.body.tier ?? "free" });
      return reply.code(201).send({ ...userJson(user), token });
    },
  );

  app.get("/v1/admin/users", admin, async () => ({ users: (await ctx.directory.listUsers()).map(userJson) }));

  app.patch<{ Params: { id: string }; Body: { tier?: string; quota?: number | null; bonus?: number } }>(
    "/v1/admin/users/:id",
    {
      ...admin,
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          minProperties: 1,
          properties: {
            tier: { type: "string", maxLength: 32 },
            quota: { type: ["number", "null"], minimum: 0, maximum: 7 * 86_400 },
            bonus: { type: "number", minimum: -86_400, maximum: 86_400 },
          },
        },
      },
    },
    async (req) => {
      const b = req.body;
      const { user, quota } = await ctx.directory.updateUser(req.params.id, {
        ...(b.tier !== undefined ? { tier: b.tier } : {}),
        ...(b.quota !== undefined ? { quotaS: b.quota } : {}),
        ...(b.bonus !== undefined ? { bonusS: b.bonus } : {}),
      });
      return { ...userJson(user), quota: quotaJson(quota.identity, quota.view) };
    },
  );

  app.get<{ Params: { id: string } }>("/v1/admin/users/:id", admin, async (req) => {
    const { user, quota } = await ctx.directory.user(req.params.id);
    return { ...userJson(user), quota: quotaJson(quota.identity, quota.view) };
  });

  app.post<{ Body: { name: string; owner: string; max_concurrency?: number | null } }>(
    "/v1/admin/apps",
    {
      ...admin,
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["name", "owner"],
          properties: { name: NAME, owner: { type: "string", minLength: 1, maxLength: 64 }, max_concurrency: { type: ["integer", "null"], minimum: 1, maximum: 100_000 } },
        },
      },
    },
    async (req, reply) => {
      const { app: created, key } = await ctx.directory.createApp({ name: req.body.name, owner: req.body.owner, maxConcurrency: req.body.max_concurrency ?? null });
      return reply.code(201).send({ ...appJson(created), key });
    },
  );

  app.get("/v1/admin/apps", admin, async () => ({ apps: (await ctx.directory.listApps()).map(appJson) }));

  for (const kind of ["node", "edge"] as const) {
    app.post<{ Body: { name: string } }>(
      `/v1/admin/${kind}s`,
      { ...admin, schema: { body: { type: "object", additionalProperties: false, required: ["name"], properties: { name: NAME } } } },
      async (req, reply) => {
        const { record, key } = await ctx.directory.createKeyed(kind, req.body.name);
        return reply.code(201).send({ id: record.id, name: record.name, key });
      },
    );
  }

  app.get("/v1/admin/pool", admin, async () => {
    const view = await ctx.pool.view();
    return {
      // A replica that does not lead rebuilds the view from the database (see PoolViewer).
      leader: view.source === "leader",
      source: view.source,
      nodes: view.nodes.map((n) => ({ name: n.name, kind: n.kind, state: n.state, heartbeat_at: iso(n.heartbeatAt), agent_url: n.agentUrl })),
      devices: view.devices.map((d) => ({ node: d.spec.node, index: d.spec.index, uuid: d.spec.uuid, name: d.spec.name, memory_mb: d.spec.memoryMb, slots: d.holders })),
      slots: view.slots,
      active: view.active.map((l) => ({ id: l.id, app: l.appId, identity: `${l.identityKind}:${l.identityId}`, size: l.size, node: l.node, device: l.deviceIndex, deadline: iso(l.deadline) })),
      queue: view.queue,
    };
  });

}
