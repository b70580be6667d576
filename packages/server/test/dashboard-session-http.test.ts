import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, checkEveryAnswer, expectProblem, startTestServer, storageUrlFor } from "./harness.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { normalizeConfig } from "../src/config.js";
import { LOG_REDACT, createServer } from "../src/main/server.js";

/** The dashboard's session: a cookie for a user or the operator, CSRF-checked, revocable (docs/dashboard.md). */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

type Answer = Awaited<ReturnType<TestServer["call"]>>;

function setCookies(res: Answer): string[] {
  const h = res.headers["set-cookie"];
  return h === undefined ? [] : Array.isArray(h) ? (h as string[]) : [h as string];
}

/** The `name=value` part of the session cookie a sign-in set. */
function cookieOf(res: Answer): string {
  const c = setCookies(res)[0];
  if (c === undefined) throw new Error("no Set-Cookie");
  return c.split(";")[0]!;
}

async function signIn(body: Record<string, string>): Promise<{ cookie: string; csrf: string; res: Answer }> {
  const res = await t.call("POST", "/v1/dashboard/session", { body });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { cookie: cookieOf(res), csrf: res.body.csrf_token as string, res };
}

describe("dashboard session", () => {
  it("a user token signs in: an HttpOnly, SameSite=Strict cookie that is not the token and stands for the user", async () => {
    t = await startTestServer();
    const alice = await t.user("alice", "pro");
    const { cookie, csrf, res } = await signIn({ token: alice.token });
    expect(res.body).toMatchObject({ role: "user", user: { id: alice.id, name: "alice", tier: "pro" } });
    expect(Date.parse(res.body.expires_at) - Date.now()).toBeGreaterThan(11 * 3600_000);
    const set = setCookies(res)[0]!;
    expect(set).toMatch(/^gpupool_dashboard=gpd_[A-Za-z0-9_-]{40,};/);
    expect(set).toMatch(/; HttpOnly/);
    expect(set).toMatch(/; SameSite=Strict/);
    expect(set).toMatch(/; Path=\//);
    expect(set).not.toMatch(/Secure/);
    // The token is never echoed: not in the body, not in the cookie.
    expect(JSON.stringify(res.body) + set).not.toContain(alice.token);

    const again = await t.call("GET", "/v1/dashboard/session", { headers: { cookie } });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(res.body);
    expect(again.body.csrf_token).toBe(csrf);
    const me = await t.call("GET", "/v1/me", { headers: { cookie } });
    expect(me.status).toBe(200);
    expect(me.body.user).toEqual({ id: alice.id, name: "alice", tier: "pro" });
    // A user's session is not the operator's.
    expectProblem(await t.call("GET", "/v1/admin/users", { headers: { cookie } }), 403, "forbidden");
  });

  it("the admin token signs in as the operator (no user); the cookie opens the admin API", async () => {
    t = await startTestServer();
    await t.user("bob");
    const { cookie, res } = await signIn({ token: ADMIN });
    expect(res.body.role).toBe("admin");
    expect(res.body.user).toBeUndefined();
    expect(JSON.stringify(res.body) + setCookies(res).join()).not.toContain(ADMIN);
    const users = await t.call("GET", "/v1/admin/users", { headers: { cookie } });
    expect(users.status).toBe(200);
    expect(users.body.users.map((u: { name: string }) => u.name)).toEqual(["bob"]);
    expectProblem(await t.call("GET", "/v1/me", { headers: { cookie } }), 403, "forbidden");
  });

  it("a wrong token, an app key or a made-up code is 401 invalid_credentials, and sets no cookie", async () => {
    t = await startTestServer();
    const owner = await t.user("owner");
    const app = await t.appFor("front", owner.id);
    for (const body of [
      { token: "gpu_u_notarealtokenatallnotarealtoken" },
      { token: "wrong-admin-token" },
      { token: app.key },
      { code: "gpc_madeupmadeupmadeupmadeupmadeup" },
    ]) {
      const res = await t.call("POST", "/v1/dashboard/session", { body });
      expectProblem(res, 401, "invalid_credentials");
      expect(setCookies(res)).toEqual([]);
      expect(JSON.stringify(res.body)).not.toContain(Object.values(body)[0]!);
    }
    expectProblem(await t.call("GET", "/v1/dashboard/session"), 401, "invalid_session");
    expectProblem(
      await t.call("GET", "/v1/dashboard/session", { headers: { cookie: "gpupool_dashboard=gpd_forged" } }),
      401,
      "invalid_session",
    );
    expectProblem(
      await t.call("GET", "/v1/me", { headers: { cookie: "gpupool_dashboard=gpd_forged" } }),
      401,
      "unauthorized",
    );
  });

  it("a change by cookie needs the CSRF token and a same-origin page: otherwise 403 csrf_failed and nothing changes", async () => {
    t = await startTestServer();
    const bob = await t.user("bob", "free");
    const { cookie, csrf } = await signIn({ token: ADMIN });
    const patch = (headers: Record<string, string>) =>
      t.call("PATCH", `/v1/admin/users/${bob.id}`, { headers: { cookie, ...headers }, body: { tier: "pro" } });
    expectProblem(await patch({}), 403, "csrf_failed");
    expectProblem(await patch({ "x-csrf-token": "not-the-token" }), 403, "csrf_failed");
    expectProblem(await patch({ "x-csrf-token": csrf, origin: "https://evil.example" }), 403, "csrf_failed");
    expectProblem(await patch({ "x-csrf-token": csrf, origin: "null" }), 403, "csrf_failed");
    expectProblem(await patch({ "x-csrf-token": csrf, "sec-fetch-site": "cross-site" }), 403, "csrf_failed");
    expectProblem(await patch({ "x-csrf-token": csrf, "sec-fetch-site": "same-site" }), 403, "csrf_failed");
    expect((await t.call("GET", `/v1/admin/users/${bob.id}`, { token: ADMIN })).body.tier).toBe("free");
    // A cross-site sign-in (logging the browser in as someone else) is refused too.
    expectProblem(
      await t.call("POST", "/v1/dashboard/session", {
        headers: { origin: "https://evil.example" },
        body: { token: bob.token },
      }),
      403,
      "csrf_failed",
    );
    // The page's own request: the token, from the same origin.
    const ok = await patch({ "x-csrf-token": csrf, origin: "http://localhost:80", "sec-fetch-site": "same-origin" });
    expect(ok.status).toBe(200);
    expect(ok.body.tier).toBe("pro");
    // Reads need no token; bearer requests are unchanged.
    expect((await t.call("GET", `/v1/admin/users/${bob.id}`, { headers: { cookie } })).status).toBe(200);
    expect((await t.call("PATCH", `/v1/admin/users/${bob.id}`, { token: ADMIN, body: { tier: "free" } })).status).toBe(
      200,
    );
  });

  it("signing out revokes the session: the old cookie is refused everywhere after", async () => {
    t = await startTestServer();
    const alice = await t.user("alice");
    const { cookie, csrf } = await signIn({ token: alice.token });
    // Sign-out is a change too: not without the token.
    expectProblem(await t.call("DELETE", "/v1/dashboard/session", { headers: { cookie } }), 403, "csrf_failed");
    expect((await t.call("GET", "/v1/me", { headers: { cookie } })).status).toBe(200);
    const out = await t.call("DELETE", "/v1/dashboard/session", { headers: { cookie, "x-csrf-token": csrf } });
    expect(out.status).toBe(204);
    expect(setCookies(out).join()).toMatch(/gpupool_dashboard=; .*Max-Age=0/);
    expectProblem(await t.call("GET", "/v1/dashboard/session", { headers: { cookie } }), 401, "invalid_session");
    expectProblem(await t.call("GET", "/v1/me", { headers: { cookie } }), 401, "unauthorized");
    // Signing out again is harmless.
    expect((await t.call("DELETE", "/v1/dashboard/session", { headers: { cookie } })).status).toBe(204);
  });

  it("a one-time sign-in link: the code works once, for the user (or the operator) who asked", async () => {
    t = await startTestServer();
    const alice = await t.user("alice");
    const link = await t.call("POST", "/v1/dashboard/links", { token: alice.token });
    expect(link.status).toBe(201);
    const m = /^http:\/\/localhost:80\/#signin=(gpc_[A-Za-z0-9_-]+)$/.exec(link.body.url);
    expect(m, link.body.url).not.toBeNull();
    expect(Date.parse(link.body.expires_at) - Date.now()).toBeLessThanOrEqual(5 * 60_000);
    const code = m![1]!;
    const first = await signIn({ code });
    expect(first.res.body).toMatchObject({ role: "user", user: { id: alice.id } });
    expectProblem(await t.call("POST", "/v1/dashboard/session", { body: { code } }), 401, "invalid_credentials");

    const adminLink = await t.call("POST", "/v1/dashboard/links", { token: ADMIN });
    const adminCode = /#signin=(.+)$/.exec(adminLink.body.url)![1]!;
    expect((await signIn({ code: adminCode })).res.body.role).toBe("admin");
    // Only a user or the operator may ask; a sign-in link is not a way in for nobody.
    expectProblem(await t.call("POST", "/v1/dashboard/links", {}), 401, "unauthorized");
  });

  it("with a public https URL: the cookie is __Host- and Secure, and links point there", async () => {
    t = await startTestServer({ dashboard: { public_url: "https://pool.example.com" } });
    const alice = await t.user("alice");
    const { res } = await signIn({ token: alice.token });
    const set = setCookies(res)[0]!;
    expect(set).toMatch(/^__Host-gpupool_dashboard=gpd_/);
    expect(set).toMatch(/; Secure/);
    expect(set).toMatch(/; Path=\//);
    expect(set).not.toMatch(/Domain=/i);
    const link = await t.call("POST", "/v1/dashboard/links", { token: alice.token });
    expect(link.body.url).toMatch(/^https:\/\/pool\.example\.com\/#signin=gpc_/);
    // The page at the public origin is same-origin.
    const { cookie, csrf } = await signIn({ token: ADMIN });
    const ok = await t.call("PATCH", `/v1/admin/users/${alice.id}`, {
      headers: { cookie, "x-csrf-token": csrf, origin: "https://pool.example.com" },
      body: { tier: "pro" },
    });
    expect(ok.status).toBe(200);
  });
});

describe("dashboard secrets in logs", () => {
  it("with request logging on, no token, session secret or CSRF token reaches the log", async () => {
    const lines: string[] = [];
    const stream = { write: (line: string) => void lines.push(line) };
    const dir = mkdtempSync(join(tmpdir(), "gpupool-log-"));
    const server = await createServer(
      normalizeConfig({ storage: { url: storageUrlFor(dir) }, log: { level: "trace" } }),
      {
        adminToken: ADMIN,
        logger: pino({ level: "trace", redact: LOG_REDACT }, stream),
      },
    );
    checkEveryAnswer(server);
    try {
      const inject = (
        method: "GET" | "POST" | "PATCH" | "DELETE",
        url: string,
        headers: Record<string, string>,
        body?: unknown,
      ) =>
        server.app.inject({
          method,
          url,
          headers: { ...headers, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
          ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
        });
      const created = (
        await inject("POST", "/v1/admin/users", { authorization: `Bearer ${ADMIN}` }, { name: "alice" })
      ).json();
      const signedIn = await inject("POST", "/v1/dashboard/session", {}, { token: created.token });
      const cookie = String(signedIn.headers["set-cookie"]).split(";")[0]!;
      const csrf = signedIn.json().csrf_token as string;
      await inject("GET", "/v1/me", { cookie });
      await inject("PATCH", "/v1/me/billing", { cookie }, { overage: true });
      await inject("DELETE", "/v1/dashboard/session", { cookie, "x-csrf-token": csrf });
      const log = lines.join("");
      expect(log).toContain("/v1/dashboard/session");
      for (const secret of [created.token, ADMIN, cookie.split("=")[1]!, csrf]) expect(log).not.toContain(secret);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
