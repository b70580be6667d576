import { billingOf } from "@gpupool/core";
import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { LeaseUpdate } from "../use-cases/leases/lease-requests.js";
import { authenticate, idempotencyKeyHeader, ipTokenHeader, nodeKeyHeader } from "./auth.js";
import type { RouteContext } from "./context.js";
import { encodeCursor, seqCursor } from "./page-cursors.js";
import { sendProblem } from "./problems.js";
import { withConfiguredSizes } from "./schemas.js";
import { leaseEventJson, leaseJson, quotaJson, quotaOf, releasedJson } from "./views.js";

export function leaseRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { currency } = billingOf(ctx.policy);
  app.post<{ Body: wire.LeaseRequest | null }>(
    "/v1/leases",
    { schema: withConfiguredSizes("createLease", Object.keys(ctx.policy.sizes)) },
    async (req, reply) => {
      const caller = await authenticate(ctx, req, ["app", "user"]);
      const body = req.body ?? {};
      const result = await ctx.leases.request(caller, {
        ipToken: ipTokenHeader(req),
        nodeKey: nodeKeyHeader(req),
        idempotencyKey: idempotencyKeyHeader(req),
        duration: body.duration,
        size: body.size,
        queue: body.queue,
        maxWait: body.max_wait,
        trace: ctx.traceOf?.(req),
      });
      if (result.kind === "denied") return sendProblem(reply, result.problem, result.retryAfterS);
      reply.header("location", `/v1/leases/${result.lease.id}`);
      const quota = quotaJson(result.quota);
      if (result.kind === "granted") return reply.code(201).send(leaseJson(result.lease, null, quota, currency));
      // A retry (same Idempotency-Key) of a request whose lease ended without a GPU.
      if (result.kind === "ended") return reply.code(200).send(leaseJson(result.lease, null, quota, currency));
      return reply.code(202).send(leaseJson(result.lease, result.place, quota, currency));
    },
  );

  app.get<{ Querystring: wire.LeaseListQuery }>(
    "/v1/leases",
    { schema: requestSchemas("listLeases") },
    async (req): Promise<wire.LeaseList> => {
      const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
      // The contract's schema allows 1 to 500 only.
      const limit = Number(req.query.limit ?? 50);
      const page = await ctx.leases.list(caller, {
        status: req.query.status,
        limit,
        before: seqCursor(req.query.cursor),
      });
      return {
        leases: page.leases.map((l) => leaseJson(l.lease, l.place, null, currency)),
        next_cursor: page.next === null ? null : encodeCursor(page.next),
      };
    },
  );

  app.get<{ Params: { id: string } }>("/v1/leases/:id", async (req): Promise<wire.Lease> => {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    const v = await ctx.leases.get(caller, req.params.id);
    return leaseJson(v.lease, v.place, quotaOf(v.quota), currency);
  });

  const release = async (req: FastifyRequest<{ Params: { id: string } }>, failed: boolean) => {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    return releasedJson(await ctx.leases.release(caller, req.params.id, failed, ctx.traceOf?.(req)), currency);
  };

  app.post<{ Params: { id: string }; Body: wire.ReleaseRequest | null }>(
    "/v1/leases/:id/release",
    { schema: requestSchemas("releaseLease") },
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
async function streamEvents(
  ctx: RouteContext,
  req: FastifyRequest,
  reply: FastifyReply,
  follow: (listener: (u: LeaseUpdate) => void) => Promise<() => void>,
): Promise<void> {
  let res: FastifyReply["raw"] | null = null;
  let closed = false;
  const pending: LeaseUpdate[] = [];
  const send = (u: LeaseUpdate): void => {
    if (res === null) return void pending.push(u);
    if (closed) return;
    const e = leaseEventJson(u, billingOf(ctx.policy).currency);
    res.write(`event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
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
