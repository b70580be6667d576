import { DomainError, fail } from "@gpupool/core";
import type { DeviceSpec } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { authenticate } from "./auth.js";
import type { ServerContext } from "./context.js";
import { registrationOf } from "../use-cases/node-registration.js";

/** The most devices one agent may register (a large host has 8–16 GPUs, each with up to 7 MIG slices). */
const MAX_DEVICES = 256;

interface RegisterBody {
  devices: { index: number; uuid: string; name: string; memory_mb: number; slots?: number }[];
  agent_url?: string;
  /** The registration the agent held before it restarted (the `registration` it was answered). */
  previous_registration?: string;
}

const MAX_REGISTRATION = 64;

/** What node agents call: register their devices, then heartbeat (SPEC §6). */
export function nodeRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const timing = () => ({
    heartbeat_interval_s: ctx.config.nodes.heartbeatIntervalMs / 1000,
    heartbeat_timeout_s: ctx.config.nodes.heartbeatTimeoutMs / 1000,
  });

  async function callingNode(req: Parameters<typeof authenticate>[1]) {
    const caller = await authenticate(ctx, req, ["node"]);
    if (caller.kind !== "node") throw new Error("unreachable");
    // The cached caller may be seconds old; registration state must be current.
    const node = await ctx.store.transaction((tx) => tx.nodes.getByName(caller.node.name));
    if (node === null) fail("unauthorized", "This node was removed from the pool.");
    return node;
  }

  app.post<{ Body: RegisterBody }>(
    "/v1/nodes/register",
    {
      schema: {
        body: {
          type: "object",
          additionalProperties: false,
          required: ["devices"],
          properties: {
            devices: {
              type: "array",
              maxItems: MAX_DEVICES,
              items: {
                type: "object",
                additionalProperties: false,
                required: ["index", "uuid", "name", "memory_mb"],
                properties: {
                  index: { type: "integer", minimum: 0, maximum: 65_535 },
                  uuid: { type: "string", minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9._:/-]+$" },
                  name: { type: "string", minLength: 1, maxLength: 128 },
                  memory_mb: { type: "integer", minimum: 0, maximum: 100_000_000 },
                  slots: { type: "integer", minimum: 1, maximum: 64 },
                },
              },
            },
            agent_url: { type: "string", maxLength: 512 },
            previous_registration: { type: "string", maxLength: MAX_REGISTRATION },
          },
        },
      },
    },
    async (req) => {
      const node = await callingNode(req);
      if (ctx.engine.isConfiguredNode(node.name)) {
        fail("conflict", `Node name ${node.name} is also a node of the server's own pool configuration (pool.simulated); give the agent a node of its own (POST /v1/admin/nodes).`);
      }
      const seen = new Set<string>();
      const devices: DeviceSpec[] = req.body.devices.map((d, i) => {
        if (seen.has(`i${d.index}`)) fail("invalid_request", `devices.${i}.index: device ${d.index} is listed twice.`);
        if (seen.has(`u${d.uuid}`)) fail("invalid_request", `devices.${i}.uuid: ${d.uuid} is listed twice.`);
        seen.add(`i${d.index}`).add(`u${d.uuid}`);
        // Dedicated: only apps on that host (through its agent) may use these GPUs.
        return { node: node.name, index: d.index, uuid: d.uuid, name: d.name, memoryMb: d.memory_mb, slots: d.slots ?? 2, dedicated: true };
      });
      // Whether another agent holds the node is decided in the registering transaction (nodeInUse).
      const registered = await ctx.engine.registerNode(node, devices, req.body.agent_url ?? null, req.body.previous_registration ?? null);
      if (registered.kind === "refused") throw new DomainError(registered.problem);
      return { node: { id: node.id, name: node.name }, devices: devices.length, registration: registrationOf({ registeredAt: registered.at }), ...timing() };
    },
  );

  app.post("/v1/nodes/heartbeat", async (req) => {
    const node = await callingNode(req);
    const now = ctx.clock.now();
    // Agents before registrations existed send no body: they are not checked.
    const sent = typeof req.body === "object" && req.body !== null ? (req.body as Record<string, unknown>)["registration"] : undefined;
    if (sent !== undefined && (typeof sent !== "string" || sent.length > MAX_REGISTRATION)) {
      fail("invalid_request", `The request body is invalid: registration must be the string the node's registration answered (at most ${MAX_REGISTRATION} characters).`, { errors: [{ field: "registration", message: "is not a registration" }] });
    }
    const current = registrationOf(node);
    if (typeof sent === "string" && current !== null && node.devices !== null && sent !== current) {
      fail(
        "node_not_registered",
        `Node ${node.name} was registered since by another agent (${node.agentUrl ?? "it gave no URL"}): this agent's registration is no longer current, and the node's GPUs are now the other agent's. Two agents cannot share a node key: stop one of them, or give each host a node of its own (POST /v1/admin/nodes).`,
        { reason: "replaced", node: node.name, agent_url: node.agentUrl },
      );
    }
    const known = await ctx.store.transaction((tx) => tx.nodes.heartbeat(node.id, now));
    if (!known) {
      fail("node_not_registered", `Node ${node.name} is not registered (it was lost after missing heartbeats, or never registered): register its devices again with POST /v1/nodes/register.`);
    }
    ctx.engine.nodeHeartbeat(node.name, now);
    return { node: { id: node.id, name: node.name }, ...timing() };
  });
}
