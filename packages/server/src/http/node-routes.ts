import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import { authenticate } from "./auth.js";
import type { RouteContext } from "./context.js";

/** What node agents call: register their devices, then heartbeat (docs/agent.md). */
export function nodeRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const timing = () => ({
    heartbeat_interval_s: ctx.config.nodes.heartbeatIntervalMs / 1000,
    heartbeat_timeout_s: ctx.config.nodes.heartbeatTimeoutMs / 1000,
  });

  app.post<{ Body: wire.NodeRegisterRequest }>(
    "/v1/nodes/register",
    { schema: requestSchemas("registerNode") },
    async (req): Promise<wire.NodeRegistered> => {
      const caller = await authenticate(ctx, req, ["node"]);
      const b = req.body;
      const devices = b.devices.map((d) => ({
        index: d.index,
        uuid: d.uuid,
        name: d.name,
        memoryMb: d.memory_mb,
        slots: d.slots,
      }));
      const r = await ctx.nodes.register(caller.node, {
        devices,
        agentUrl: b.agent_url ?? null,
        previousRegistration: b.previous_registration ?? null,
      });
      return {
        node: { id: r.node.id, name: r.node.name },
        devices: r.devices,
        registration: r.registration,
        ...timing(),
      };
    },
  );

  // Agents from before registrations existed send no body: they are not checked.
  app.post<{ Body: wire.HeartbeatRequest | null }>(
    "/v1/nodes/heartbeat",
    { schema: requestSchemas("heartbeat") },
    async (req): Promise<wire.Heartbeat> => {
      const caller = await authenticate(ctx, req, ["node"]);
      const { node } = await ctx.nodes.heartbeat(caller.node, req.body?.registration);
      return { node: { id: node.id, name: node.name }, ...timing() };
    },
  );
}
