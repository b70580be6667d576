import { readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/**
 * Headers of every dashboard response: scripts, styles, fonts and data only from this server (no
 * inline script, no CDN), never framed, no referrer (a sign-in link's fragment stays put anyway).
 */
export const DASHBOARD_HEADERS = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
  "cross-origin-opener-policy": "same-origin",
} as const;

const TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".ico": "image/x-icon",
  ".webp": "image/webp",
  ".woff2": "font/woff2",
  ".woff": "font/woff",
  ".txt": "text/plain; charset=utf-8",
  ".webmanifest": "application/manifest+json",
};

/** A path segment of a built asset: letters, digits, `.`, `_`, `-`; never `..` or hidden files. */
const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}$/;

/**
 * Where the built dashboard is by default: the dist/ of the `@gpupool/dashboard` package, found as
 * Node finds a dependency (the workspace's link in a checkout, node_modules wherever npm put it in
 * an installed package); packages/dashboard/dist beside this package if it cannot be resolved.
 */
export function defaultDashboardDir(): string {
  try {
    return join(dirname(createRequire(import.meta.url).resolve("@gpupool/dashboard/package.json")), "dist") + sep;
  } catch {
    return fileURLToPath(new URL("../../../dashboard/dist/", import.meta.url));
  }
}

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpupool</title></head>
<body><h1>gpupool</h1><p>The dashboard is not built yet. Run <code>npm run build</code> in the gpupool checkout, then reload this page.</p>
<p>The API is under <a href="/docs/api">/v1</a>.</p></body></html>
`;

/**
 * Serves the built dashboard: `/` (and, for a browser asking for a page, any path outside the
 * API: the app routes in the browser) gets index.html, never cached without asking; `/assets/*`
 * have content hashes in their names, so they are cached for a year. Files are read from disk
 * on each request (the OS caches them): a rebuild is served at once, without a restart.
 */
export function dashboardPages(app: FastifyInstance, dir: string | null): { fallback: PageFallback } {
  const root = resolve(dir ?? defaultDashboardDir());

  const page = async (reply: FastifyReply): Promise<FastifyReply> => {
    reply.headers(DASHBOARD_HEADERS).header("cache-control", "no-cache").type("text/html; charset=utf-8");
    const html = await readFile(join(root, "index.html")).catch(() => null);
    return reply.send(html ?? NOT_BUILT);
  };

  app.get("/", async (_req, reply) => page(reply));

  app.get<{ Params: { "*": string } }>("/assets/*", async (req, reply) => {
    const file = await builtFile(root, ["assets", ...req.params["*"].split("/")]);
    if (file === null) return reply.callNotFound();
    return reply
      .headers(DASHBOARD_HEADERS)
      .header("cache-control", "public, max-age=31536000, immutable")
      .type(file.type)
      .send(file.body);
  });

  return {
    // Any other page a browser asks for (a deep link, a reload): the app; a file the build put at
    // its top (favicon.svg, robots.txt): that file. The API's paths keep their 404 problem.
    fallback: async (req, reply) => {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      const path = req.url.split("?")[0] ?? "/";
      if (path.startsWith("/v1/") || path === "/v1" || path.startsWith("/assets/")) return false;
      const segments = path.split("/").filter((s) => s !== "");
      if (segments.length === 1) {
        const file = await builtFile(root, segments);
        if (file !== null && segments[0] !== "index.html") {
          await reply.headers(DASHBOARD_HEADERS).header("cache-control", "no-cache").type(file.type).send(file.body);
          return true;
        }
      }
      if (!String(req.headers.accept ?? "").includes("text/html")) return false;
      await page(reply);
      return true;
    },
  };
}

/** For the not-found handler: true when the dashboard answered the request. */
export type PageFallback = (req: FastifyRequest, reply: FastifyReply) => Promise<boolean>;

/** A file of the build by its path segments (each checked: nothing outside `root`), or null. */
async function builtFile(root: string, segments: readonly string[]): Promise<{ body: Buffer; type: string } | null> {
  if (segments.length === 0 || segments.length > 8 || !segments.every((s) => SEGMENT.test(s) && !s.includes("..")))
    return null;
  const path = join(root, ...segments);
  if (!path.startsWith(root + "/")) return null;
  const info = await stat(path).catch(() => null);
  if (info === null || !info.isFile()) return null;
  const body = await readFile(path).catch(() => null);
  return body === null ? null : { body, type: TYPES[extname(path).toLowerCase()] ?? "application/octet-stream" };
}
