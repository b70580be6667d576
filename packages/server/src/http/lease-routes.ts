import { fail } from "@gpupool/core";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { LeaseRecord, LeaseStatus } from "../storage/store.js";
import { readQuota } from "../use-cases/quota.js";
import { attributeRequest } from "./attribution.js";
import type { Caller } from "./auth.js";
import { authenticate, nodeFromHeader } from "./auth.js";
import type { ServerContext } from "./context.js";
import { sendProblem } from "./problems.js";
import { leaseJson, quotaJson } from "./views.js";

const MAX_DURATION_S = 86_400;
const STATUSES: LeaseStatus[] = ["queued", "active", "released", "expired", "cancelled", "failed"];

export function leaseRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const sizes = Object.keys(ctx.config.policy.sizes);

  async function quotaFor(lease: LeaseRecord): Promise<Record<string, unknown> | null> {
    const q = await ctx.store.transaction((tx) => readQuota(tx, ctx.config.policy, { kind: lease.identityKind, id: lease.identityId }, ctx.clock.now()));
    return quotaJson(q.identity, q.view);
  }

  async function view(lease: LeaseRecord): Promise<Record<string, unknown>> {
    return leaseJson(lease, lease.status === "queued" ? ctx.engine.position(lease.id) : null, await quotaFor(lease));
  }

  /** A lease is visible to the app that made it, the user it is charged to, and the admin. */
  async function visibleLease(req: FastifyRequest, id: string, forWrite: boolean): Promise<{ lease: LeaseRecord; caller: Caller }> {
    const caller = await authenticate(ctx, req, ["app", "user", "admin"]);
    const lease = ctx.engine.liveLease(id) ?? (await ctx.store.transaction((tx) => tx.leases.get(id)));
    const mine =
      lease !== null &&
      (caller.kind === "admin" ||
        (caller.kind === "app" && lease.appId === caller.app.id) ||
        (caller.kind === "user" && lease.identityKind === "user" && lease.identityId === caller.user.id && (!forWrite || lease.appId === null)));
    if (!lease || !mine) fail("not_found", `No lease ${id} visible to this caller.`);
    return { lease, caller };
  }

  app.post(
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
      if (caller.kind !== "app" && caller.kind !== "user") throw new Error("unreachable");
      const body = (req.body ?? {}) as { duration?: number; size?: string; queue?: boolean };
      // Through a node's agent, the app runs on that host: only that node's GPUs will do.
      const node = await nodeFromHeader(ctx, req);
      const attribution = await attributeRequest(ctx, req, caller);
      if (!attribution.ok) {
        ctx.metrics.denial(attribution.problem.code);
        return sendProblem(reply, attribution.problem);
      }
      const size = ctx.config.policy.sizes[body.size ?? ctx.config.policy.defaultSize];
      if (!size) throw new Error("size validated by schema");
      const result = await ctx.engine.admit({
        appId: caller.kind === "app" ? caller.app.id : null,
        charged: attribution.charged,
        via: attribution.via,
        durationMs: body.duration === undefined ? ctx.config.policy.defaultDurationMs : Math.round(body.duration * 1000),
        size,
        queue: body.queue ?? true,
        node: node?.name ?? null,
      });
      if (result.kind === "denied") return sendProblem(reply, result.problem, result.retryAfterS);
      reply.header("location", `/v1/leases/${result.lease.id}`);
      const quota = quotaJson(result.quota.identity, result.quota.view);
      if (result.kind === "granted") return reply.code(201).send(leaseJson(result.lease, null, quota));
      return reply.code(202).send(leaseJson(result.lease, { position: result.position, reason: result.reason, etaMs: result.etaMs }, quota));
    },
  );

  app.get(
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
      const q = req.query as { status?: LeaseStatus; limit?: string };
      const limit = Math.min(500, Math.max(1, Number(q.limit ?? 50)));
      const leases = await ctx.store.transaction((tx) =>
        tx.leases.list({
          limit,
          ...(q.status ? { status: q.status } : {}),
          ...(caller.kind === "app" ? { appId: caller.app.id } : {}),
          ...(caller.kind === "user" ? { identity: { kind: "user" as const, id: caller.user.id } } : {}),
        }),
      );
      return { leases: leases.map((l) => leaseJson(l, l.status === "queued" ? ctx.engine.position(l.id) : null, null)) };
    },
  );

  app.get<{ Params: { id: string } }>("/v1/leases/:id", async (req) => {
    const { lease } = await visibleLease(req, req.params.id, false);
    return view(lease);
  });

  const release = async (req: FastifyRequest<{ Params: { id: string } }>, failed: boolean) => {
    await visibleLease(req, req.params.id, true);
    const { lease: ended, quota } = await ctx.engine.release(req.params.id, failed);
    return {
      id: ended.id,
      status: ended.status,
      held_ms: ended.heldMs,
      charged: ended.chargedMs / 1000,
      refunded: ended.refundedMs / 1000,
      quota: quotaJson(quota.identity, quota.view),
    };
  };

  app.post<{ Params: { id: string }; Body: { failed?: boolean } | null }>(
    "/v1/leases/:id/release",
    { schema: { body: { type: ["object", "null"], additionalProperties: false, properties: { failed: { type: "boolean" } } } } },
    async (req) => release(req, req.body?.failed ?? false),
  );

  app.delete<{ Params: { id: string } }>("/v1/leases/:id", async (req) => release(req, false));

  app.get<{ Params: { id: string } }>("/v1/leases/:id/events", async (req, reply) => {
    const { lease } = await visibleLease(req, req.params.id, false);
    streamEvents(ctx, req, reply, lease, await quotaFor(lease));
  });
}

/**
 * Server-Sent Events for one lease: the current state first, then each change, ending with the
 * terminal event. A subscription made before reading the state would be more precise, but the
 * engine serializes changes, and the state read here is re-sent when it changes anyway.
 */
function streamEvents(ctx: ServerContext, req: FastifyRequest, reply: FastifyReply, lease: LeaseRecord, quota: Record<string, unknown> | null): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    unsubscribe();
    stopOnShutdown();
    clearInterval(ping);
    res.end();
  };
  // A shutting-down server ends its streams (clients reconnect to the next one) instead of
  // waiting for every queued lease to resolve.
  const stopOnShutdown = ctx.events.onShutdown(() => close());
  const unsubscribe = ctx.events.subscribe(lease.id, (e) => {
    if (closed) return;
    switch (e.type) {
      case "queued":
        send("queued", queuedEvent(e));
        return;
      case "granted":
        send("granted", { lease: leaseJson(e.lease, null, null) });
        return close();
      case "failed":
        send("failed", { problem: e.problem });
        return close();
      case "ended":
        send("ended", { lease: leaseJson(e.lease, null, null) });
        return close();
    }
  });
  // On a replica that does not lead, the queue place comes from the leader: ask for it.
  if (lease.status === "queued") ctx.engine.watch(lease.id);
  const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
  ping.unref();
  req.raw.on("close", close);
  const sendState = (lease: LeaseRecord, quota: Record<string, unknown> | null): void => {
    if (closed) return;
    const current = lease.status === "queued" ? ctx.engine.position(lease.id) : null;
    if (lease.status === "queued" && current) return void send("queued", queuedEvent(current));
    if (lease.status === "queued") {
      // Granted or ended between our read and the subscription: read it again.
      void ctx.store
        .transaction((tx) => tx.leases.get(lease.id))
        .then((fresh) => fresh && fresh.status !== "queued" && sendState(fresh, null))
        .catch(() => close());
      return;
    }
    sendTerminal(lease, quota);
  };
  const sendTerminal = (lease: LeaseRecord, quota: Record<string, unknown> | null): void => {
  if (lease.status === "active") {
    send("granted", { lease: leaseJson(lease, null, quota) });
    close();
  } else if (lease.status === "failed" && lease.grantedAt === null && lease.problemCode !== null) {
    send("failed", { problem: { code: lease.problemCode, detail: lease.problemDetail, status: 408, title: "Queue timeout", type: `urn:gpupool:problem:${lease.problemCode}` } });
    close();
  } else {
    send("ended", { lease: leaseJson(lease, null, quota) });
    close();
  }
  };
  sendState(lease, quota);
}

/** The SSE `queued` payload: place in line, why, and the estimated wait in whole seconds. */
function queuedEvent(place: { position: number; reason: string; etaMs: number | null }): { position: number; reason: string; eta_s: number | null } {
  return { position: place.position, reason: place.reason, eta_s: place.etaMs === null ? null : Math.ceil(place.etaMs / 1000) };
}
