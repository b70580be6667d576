import { openApiDocument, renderApiReference } from "@gpupool/contract/openapi";
import type { FastifyInstance, FastifyReply } from "fastify";

/**
 * Headers of every page a browser renders from this server: nothing but the page's own
 * stylesheet may load (no scripts at all), it may not be framed, and it sends no referrer.
 */
export const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
  "cross-origin-opener-policy": "same-origin",
} as const;

/**
 * The API's documents, made from @gpupool/contract once at start: the OpenAPI 3.1 document at
 * `/openapi.json`, and a readable reference page at `/docs/api` (static HTML, no scripts; its
 * stylesheet at `/docs/api.css`). No authentication: they describe the API, they hold no data.
 */
export function docsRoutes(app: FastifyInstance): void {
  const cached = (reply: FastifyReply, type: string): FastifyReply =>
    reply.header("cache-control", "public, max-age=300").type(type);

  app.get("/openapi.json", async (_req, reply) =>
    cached(reply, "application/json; charset=utf-8").send(documents().json),
  );
  app.get("/docs/api", async (_req, reply) =>
    cached(reply, "text/html; charset=utf-8").headers(PAGE_HEADERS).send(documents().html),
  );
  app.get("/docs/api.css", async (_req, reply) =>
    cached(reply, "text/css; charset=utf-8").header("x-content-type-options", "nosniff").send(documents().css),
  );
}

/** Made on the first request for them (not at start: a server that is never asked pays nothing), once per process. */
let made: { json: string; html: string; css: string } | null = null;
function documents(): { json: string; html: string; css: string } {
  if (made === null) {
    const doc = openApiDocument();
    made = { json: JSON.stringify(doc), ...renderApiReference(doc, { cssHref: "/docs/api.css" }) };
  }
  return made;
}
