import { fail } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import { authenticate } from "./auth.js";
import type { RouteContext } from "./context.js";

/** The most devices one agent may register (a large host has 8–16 GPUs, each with up to 7 MIG slices). */
const MAX_DEVICES = 256;

interface RegisterBody {
  devices: { index: number; uuid: string; name: string; memory_mb: number; slots?: number }[];
  agent_url?: string;
  /** The registration the agent held before it restarted (the `registration` it was answered). */
  previous_registration?: string;
}

const MAX_REGISTRATION = 64;

/** What node agents call: register their devices, then heartbeat (docs/agent.md). */
export function nodeRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const timing = () => ({
    heartbeat_interval_s: ctx.config.nodes.heartbeatIntervalMs / 1000,
    heartbeat_timeout_s: ctx.config.nodes.heartbeatTimeoutMs / 1000,
  });

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
      const caller = await authenticate(ctx, req, ["node"]);
      const b = req.body;
      const devices = b.devices.map((d) => ({ index: d.index, uuid: d.uuid, name: d.name, memoryMb: d.memory_mb, slots: d.slots }));
      const r = await ctx.nodes.register(caller.node, { devices, agentUrl: b.agent_url ?? null, previousRegistration: b.previous_registration ?? null });
      return { node: { id: r.node.id, name: r.node.name }, devices: r.devices, registration: r.registration, ...timing() };
    },
  );

  app.post("/v1/nodes/heartbeat", async (req) => {
    const caller = await authenticate(ctx, req, ["node"]);
    // Agents before registrations existed send no body: they are not checked.
    const sent = typeof req.body === "object" && req.body !== null ? (req.body as Record<string, unknown>)["registration"] : undefined;
    if (sent !== undefined && (typeof sent !== "string" || sent.length > MAX_REGISTRATION)) {
      fail("invalid_request", `The request body is invalid: registration must be the string the node's registration answered (at most ${MAX_REGISTRATION} characters).`, { errors: [{ field: "registration", message: "is not a registration" }] });
    }
    const { node } = await ctx.nodes.heartbeat(caller.node, sent);
    return { node: { id: node.id, name: node.name }, ...timing() };
  });
}
