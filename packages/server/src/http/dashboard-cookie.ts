import { fail } from "@gpupool/core";
import type { FastifyReply, FastifyRequest } from "fastify";
import { csrfMatches } from "../use-cases/identity/dashboard-sessions.js";
import type { RouteContext } from "./context.js";
import { crossSiteReason } from "@gpupool/contract";

/** Over https the cookie is `__Host-` (Secure, Path=/, no Domain: no other host can set or shadow it). */
const NAME = "gpupool_dashboard";
const SECURE_NAME = "__Host-gpupool_dashboard";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

type Ctx = Pick<RouteContext, "config">;

/** Whether the browser reached this server over TLS (directly, via a trusted proxy, or as configured). */
function secure(ctx: Ctx, req: FastifyRequest): boolean {
  return req.protocol === "https" || (ctx.config.dashboard.publicUrl?.startsWith("https://") ?? false);
}

/** The dashboard session's secret from the request's cookies, or null. */
export function dashboardCookie(req: FastifyRequest): string | null {
  const header = req.headers.cookie;
  if (typeof header !== "string" || header.length > 8192) return null;
  let plain: string | null = null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === SECURE_NAME && value !== "") return value;
    if (name === NAME && value !== "") plain = value;
  }
  return plain;
}

/** Sets the session cookie: HttpOnly (no page script reads it), SameSite=Strict, the whole site. */
export function setDashboardCookie(
  ctx: Ctx,
  req: FastifyRequest,
  reply: FastifyReply,
  secret: string,
  expiresAt: number,
): void {
  const tls = secure(ctx, req);
  reply.header(
    "set-cookie",
    `${tls ? SECURE_NAME : NAME}=${secret}; Path=/; HttpOnly; SameSite=Strict; Expires=${new Date(expiresAt).toUTCString()}${tls ? "; Secure" : ""}`,
  );
}

/** Clears the session cookie (both names: the browser may hold either). */
export function clearDashboardCookie(ctx: Ctx, req: FastifyRequest, reply: FastifyReply): void {
  const tls = secure(ctx, req);
  reply.header("set-cookie", [
    `${NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${tls ? "; Secure" : ""}`,
    ...(tls ? [`${SECURE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure`] : []),
  ]);
}

/** The origin the browser uses for this server: the configured public URL, or the request's own. */
export function publicOrigin(ctx: Ctx, req: FastifyRequest): string {
  return ctx.config.dashboard.publicUrl ?? `${req.protocol}://${req.headers.host ?? req.hostname}`;
}

/** 403 csrf_failed unless a request from a page is same-origin (sign-in: no session yet, so no token). */
export function requireSameOrigin(ctx: Ctx, req: FastifyRequest): void {
  const why = crossSiteReason(req.headers, req.headers.host ?? "", ctx.config.dashboard.publicUrl);
  if (why !== null) fail("csrf_failed", `Refused: ${why}. Nothing was changed; use the dashboard's own page.`);
}

/**
 * A request signed in by the session cookie that changes something must carry the session's CSRF
 * token (which only the dashboard's own page can read) and come from the same origin; else 403
 * csrf_failed before anything is done.
 */
export function requireCsrf(ctx: Ctx, req: FastifyRequest, secret: string): void {
  if (SAFE_METHODS.has(req.method)) return;
  const presented = req.headers["x-csrf-token"];
  if (typeof presented !== "string" || presented.length > 200 || !csrfMatches(presented, secret))
    fail(
      "csrf_failed",
      "Refused: a change made with the dashboard's session cookie needs the session's X-CSRF-Token header (from GET /v1/dashboard/session). Nothing was changed.",
    );
  requireSameOrigin(ctx, req);
}
