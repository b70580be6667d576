import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { defaultDashboardDir } from "../src/http/dashboard-pages.js";
import type { TestServer } from "./harness.js";
import { startTestServer } from "./harness.js";

/** The dashboard's pages, served by the control plane itself with its caching and security headers (docs/dashboard.md). */

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

let t: TestServer;
let dist: string;
afterEach(async () => {
  await t?.close();
  rmSync(dist, { recursive: true, force: true });
});

function built(): string {
  dist = mkdtempSync(join(tmpdir(), "gpupool-dist-"));
  mkdirSync(join(dist, "assets"));
  writeFileSync(join(dist, "index.html"), '<!doctype html><script type="module" src="/assets/app-3f2a1b.js"></script>');
  writeFileSync(join(dist, "assets", "app-3f2a1b.js"), "console.log('dashboard')");
  writeFileSync(join(dist, "assets", "app-3f2a1b.css"), "body{}");
  writeFileSync(join(dist, "favicon.svg"), "<svg/>");
  writeFileSync(join(tmpdir(), "gpupool-outside.txt"), "secret");
  return dist;
}

const get = (url: string, accept = "text/html,application/xhtml+xml") =>
  t.server.app.inject({ method: "GET", url, headers: { accept } });

function expectDashboardHeaders(headers: Record<string, unknown>): void {
  expect(headers["content-security-policy"]).toBe(CSP);
  expect(headers["x-frame-options"]).toBe("DENY");
  expect(headers["referrer-policy"]).toBe("no-referrer");
  expect(headers["x-content-type-options"]).toBe("nosniff");
}

describe("dashboard pages", () => {
  it("/ is the built index.html, not cached without asking, under a strict CSP", async () => {
    t = await startTestServer({ dashboard: { dist: built() } });
    const res = await get("/");
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).toBe("no-cache");
    expect(res.body).toContain("/assets/app-3f2a1b.js");
    expectDashboardHeaders(res.headers);
  });

  it("assets are cached for a year (their names carry a hash), with their types", async () => {
    t = await startTestServer({ dashboard: { dist: built() } });
    const js = await get("/assets/app-3f2a1b.js", "*/*");
    expect(js.statusCode).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(js.body).toBe("console.log('dashboard')");
    expectDashboardHeaders(js.headers);
    expect((await get("/assets/app-3f2a1b.css", "*/*")).headers["content-type"]).toBe("text/css; charset=utf-8");
    const icon = await get("/favicon.svg", "*/*");
    expect(icon.statusCode).toBe(200);
    expect(icon.headers["content-type"]).toBe("image/svg+xml");
  });

  it("an unknown asset, or a path out of the build, is a 404 problem, never a file", async () => {
    t = await startTestServer({ dashboard: { dist: built() } });
    for (const url of [
      "/assets/missing-000000.js",
      "/assets/../index.html",
      "/assets/%2e%2e/%2e%2e/gpupool-outside.txt",
      "/assets/..%2f..%2fgpupool-outside.txt",
      "/assets/.hidden",
    ]) {
      const res = await get(url, "*/*");
      expect(res.statusCode, url).toBe(404);
      expect(res.headers["content-type"], url).toMatch(/^application\/problem\+json/);
      expect(res.body).not.toContain("secret");
    }
  });

  it("a page the app routes in the browser (a deep link, a reload) gets index.html; the API keeps its 404 problems", async () => {
    t = await startTestServer({ dashboard: { dist: built() } });
    const deep = await get("/operator/pool?tier=pro");
    expect(deep.statusCode).toBe(200);
    expect(deep.body).toContain("/assets/app-3f2a1b.js");
    expect(deep.headers["cache-control"]).toBe("no-cache");
    expectDashboardHeaders(deep.headers);
    for (const [url, accept] of [
      ["/v1/nothing-here", "text/html"],
      ["/operator/pool", "application/json"],
    ] as const) {
      const res = await get(url, accept);
      expect(res.statusCode, url).toBe(404);
      expect(res.json().code).toBe("not_found");
    }
    const post = await t.server.app.inject({ method: "POST", url: "/operator/pool", headers: { accept: "text/html" } });
    expect(post.statusCode).toBe(404);
  });

  it("before the dashboard is built, / says how to build it", async () => {
    dist = mkdtempSync(join(tmpdir(), "gpupool-dist-"));
    t = await startTestServer({ dashboard: { dist } });
    const res = await get("/");
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain("npm run build");
    expectDashboardHeaders(res.headers);
  });

  it("by default the build is found at packages/dashboard/dist", () => {
    dist = mkdtempSync(join(tmpdir(), "gpupool-dist-"));
    expect(defaultDashboardDir().endsWith(["packages", "dashboard", "dist", ""].join(sep))).toBe(true);
  });
});
