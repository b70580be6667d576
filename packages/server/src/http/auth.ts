import { IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN } from "@gpupool/contract";
import { fail } from "@gpupool/core";
import type { FastifyRequest } from "fastify";
import type { AuditActor } from "../use-cases/admin/audit.js";
import type { Caller, CallerKind } from "../use-cases/identity/callers.js";
import type { IpTokenHeader } from "../use-cases/identity/request-identity.js";
import type { RouteContext } from "./context.js";
import { dashboardCookie, requireCsrf } from "./dashboard-cookie.js";
import { copies } from "./headers.js";

/** The bearer secret of the Authorization header, or null. Several Authorization headers are refused: which would count? */
export function bearer(req: FastifyRequest): string | null {
  if (copies(req, "authorization") > 1)
    fail(
      "invalid_request",
      "The request has more than one Authorization header; send exactly one. Nothing was changed.",
      {
        errors: [{ field: "Authorization", message: "is sent more than once" }],
      },
    );
  const h = req.headers.authorization;
  if (typeof h !== "string") return null;
  const m = /^Bearer\s+(\S{1,512})\s*$/i.exec(h);
  return m?.[1] ?? null;
}

/** Requests whose caller was signed in by the dashboard's session cookie (for the audit log). */
const byDashboard = new WeakSet<FastifyRequest>();

/** Whether the request's caller was signed in by the dashboard's cookie rather than a bearer token. */
export function signedInByDashboard(req: FastifyRequest): boolean {
  return byDashboard.has(req);
}

/** How the operator was signed in, for the audit log. */
export function actorOf(req: FastifyRequest): AuditActor {
  return byDashboard.has(req) ? "dashboard" : "admin_token";
}

/**
 * Who is calling, restricted to the kinds the route accepts (401 / 403 otherwise). Without an
 * Authorization header, on a route a user or the admin may call, the dashboard's session cookie
 * stands for its user (or the operator); a change made that way needs its CSRF token (403 csrf_failed).
 */
export async function authenticate<K extends CallerKind>(
  ctx: RouteContext,
  req: FastifyRequest,
  accepted: readonly K[],
): Promise<Caller & { kind: K }> {
  const secret = bearer(req);
  if (secret === null && accepted.some((k) => k === "user" || k === "admin")) {
    const cookie = dashboardCookie(req);
    const session = cookie === null ? null : await ctx.dashboard.resolve(cookie);
    if (cookie !== null && session !== null) {
      if (!accepted.includes(session.caller.kind as K))
        fail(
          "forbidden",
          `This endpoint is not for ${session.role === "admin" ? "the operator" : "a user"}'s dashboard session.`,
        );
      requireCsrf(ctx, req, cookie);
      byDashboard.add(req);
      return session.caller as Caller & { kind: K };
    }
  }
  return ctx.callers.authenticate(secret, accepted) as Promise<Caller & { kind: K }>;
}

/** A Fastify preHandler that lets only these kinds of caller in. */
export function only(
  ctx: RouteContext,
  ...accepted: CallerKind[]
): { preHandler: (req: FastifyRequest) => Promise<void> } {
  return { preHandler: async (req) => void (await authenticate(ctx, req, accepted)) };
}

/** The X-IP-Token the request carried; several copies are refused by whoever reads it. */
export function ipTokenHeader(req: FastifyRequest): IpTokenHeader {
  const v = req.headers["x-ip-token"];
  if (v === undefined) return { kind: "none" };
  if (Array.isArray(v) || copies(req, "x-ip-token") > 1) return { kind: "several" };
  return { kind: "one", token: v };
}

/** X-Gpupool-Node-Key: an agent calling on behalf of an app on its host. */
export function nodeKeyHeader(req: FastifyRequest): string | null {
  const v = req.headers["x-gpupool-node-key"];
  return typeof v === "string" ? v : v === undefined ? null : "";
}

/** Idempotency-Key on `POST /v1/leases`, or null; one copy of 1–255 printable ASCII characters, else 400. */
export function idempotencyKeyHeader(req: FastifyRequest): string | null {
  const v = req.headers["idempotency-key"];
  if (v === undefined) return null;
  const refuse = (message: string): never =>
    fail("invalid_request", `The Idempotency-Key header ${message}. Nothing was changed.`, {
      errors: [{ field: "Idempotency-Key", message }],
    });
  if (Array.isArray(v) || copies(req, "idempotency-key") > 1) refuse("is sent more than once");
  if (typeof v !== "string" || !IDEMPOTENCY_KEY_PATTERN.test(v))
    refuse(`must be 1 to ${IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, without spaces (a UUID will do)`);
  return v as string;
}
