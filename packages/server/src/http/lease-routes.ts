import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { LeaseStatus } from "../storage/store.js";
import type { Released } from "../use-cases/leases/leases.js";
import type { LeaseUpdate } from "../use-cases/leases/lease-requests.js";
import { authenticate, ipTokenHeader, nodeKeyHeader } from "./auth.js";
import type { RouteContext } from "./context.js";
import { sendProblem } from "./problems.js";
import { leaseJson, quotaJson } from "./views.js";

const MAX_DURATION_S = 86_400;
const STATUSES: LeaseStatus[] = ["queued", "active", "released", "expired", "cancelled", "failed"];

function releasedJson(r: Released): Record<string, unknown> {
  const l = r.lease;
  return { id: l.id, status: l.status, held_ms: l.heldMs, charged: l.chargedMs / 1000, refunded: l.refundedMs / 1000, quota: quotaJson(r.quota.identity, r.quota.view) };
}

export function leaseRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const sizes = Object.keys(ctx.policy.sizes);

  app.post<{ Body: { duration?: number; size?: string; queue?: boolean } | null }>(
    "/v1/leases",
    {
      schema: {
        body: {
          type: ["object", "null"],
          additionalProperties: false,
          properties: {
            // Durations are kept in whole milliseconds: anything shorter would be a zero-length lease.
            duration: { type: "number", minimum: 0.001, maximum: MAX_DURATION_S },
            size: { type: "string", enum: sizes },
            queue: { type: "boolean" },
          },
        },
      },
    },
    async (req, reply) => {
      const caller = await authenticate(ctx, req, ["app", "user"]);
      const body = req.body ?? {};
      const result = await ctx.leases.request(caller, { ipToken: ipTokenHeader(req), nodeKey: nodeKeyHeader(req), duration: body.duration, size: body.size, queue: body.queue });
      if (result.kind === "denied") return sendProblem(reply, result.problem, result.retryAfterS);
      reply.header("location", `/v1/leases/${result.lease.id}`);
      const quota = quotaJson(result.quota.identity, result.quota.view);
      if (result.kind === "granted") return reply.code(201).send(leaseJson(result.lease, null, quota));
      return reply.code(202).send(leaseJson(result.lease, result.place, quota));
    },
  );

  app.get<{ Querystring: { status?: LeaseStatus; limit?: string } }>(
    "/v1/leases",
    {
      schema: {
        querystring: {
          type: "object",
          additionalProperties: false,
          properties: { status: { type: "string", enum: STATUSES }, limit: { type: "string", pattern: "^[0-9]{1,4}$" } },
        },
      },
    },
    async (req) => {
      const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
      const limit = Math.min(500, Math.max(1, Number(req.query.limit ?? 50)));
      const leases = await ctx.leases.list(caller, { status: req.query.status, limit });
      return { leases: leases.map((l) => leaseJson(l.lease, l.place, null)) };
    },
  );

  app.get<{ Params: { id: string } }>("/v1/leases/:id", async (req) => {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    const v = await ctx.leases.get(caller, req.params.id);
    return leaseJson(v.lease, v.place, v.quota === null ? null : quotaJson(v.quota.identity, v.quota.view));
  });

  const release = async (req: FastifyRequest<{ Params: { id: string } }>, failed: boolean) => {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    return releasedJson(await ctx.leases.release(caller, req.params.id, failed));
  };

  app.post<{ Params: { id: string }; Body: { failed?: boolean } | null }>(
    "/v1/leases/:id/release",
    { schema: { body: { type: ["object", "null"], additionalProperties: false, properties: { failed: { type: "boolean" } } } } },
    async (req) => release(req, req.body?.failed ?? false),
  );

  app.delete<{ Params: { id: string } }>("/v1/leases/:id", async (req) => release(req, false));

  app.get<{ Params: { id: string } }>("/v1/leases/:id/events", async (req, reply) => {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    await streamEvents(ctx, req, reply, (listener) => ctx.leases.follow(caller, req.params.id, listener));
  });
}

/**
 * Server-Sent Events for one lease: its current state first, then each change, ending with the
 * terminal event (`granted`, `failed` or `ended`). Keep-alive comments every 15 s; a shutting-down
 * server ends its streams (clients reconnect to the next one).
 */
async function streamEvents(ctx: RouteContext, req: FastifyRequest, reply: FastifyReply, follow: (listener: (u: LeaseUpdate) => void) => Promise<() => void>): Promise<void> {
  let res: FastifyReply["raw"] | null = null;
  let closed = false;
  const pending: LeaseUpdate[] = [];
  const send = (u: LeaseUpdate): void => {
    if (res === null) return void pending.push(u);
    if (closed) return;
    res.write(`event: ${u.type}\ndata: ${JSON.stringify(updateJson(u))}\n\n`);
    if (u.type !== "queued") close();
  };
  // Following checks that the caller may see the lease (a 404 is still an ordinary answer).
  const stop = await follow(send);
  reply.hijack();
  res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  const ping = setInterval(() => res?.write(": ping\n\n"), 15_000);
  ping.unref();
  const stopOnShutdown = ctx.events.onShutdown(() => close());
  function close(): void {
    if (closed) return;
    closed = true;
    stop();
    stopOnShutdown();
    clearInterval(ping);
    res?.end();
  }
  req.raw.on("close", close);
  for (const u of pending.splice(0)) send(u);
}

function updateJson(u: LeaseUpdate): unknown {
  switch (u.type) {
    case "queued":
      // The place in line, why it waits, and the estimated wait in whole seconds.
      return { position: u.place.position, reason: u.place.reason, eta_s: u.place.etaMs === null ? null : Math.ceil(u.place.etaMs / 1000) };
    case "failed":
      return { problem: u.problem };
    case "granted":
    case "ended":
      return { lease: leaseJson(u.lease, null, u.quota === null ? null : quotaJson(u.quota.identity, u.quota.view)) };
  }
}
