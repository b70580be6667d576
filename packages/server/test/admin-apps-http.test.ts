import { afterEach, describe, expect, it } from "vitest";
import { ADMIN, expectProblem, lease, startTestServer, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * PATCH /v1/admin/apps/:id: the operator changes an app's concurrency limit. It holds for the
 * next admission, is recorded in the audit log, and a bad value changes nothing. On the default
 * pool (4 slots), so only the limit makes a call wait.
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const patch = (ref: string, body: unknown, opts: { token?: string; headers?: Record<string, string> } = {}) =>
  t.call("PATCH", `/v1/admin/apps/${ref}`, { token: ADMIN, ...opts, body });

async function appNamed(name: string): Promise<any> {
  const list = await t.call("GET", "/v1/admin/apps", { token: ADMIN });
  return list.body.apps.find((a: any) => a.name === name);
}

async function auditActions(): Promise<any[]> {
  return (await t.call("GET", "/v1/admin/audit", { token: ADMIN })).body.entries.filter(
    (e: any) => e.action === "app.update",
  );
}

describe("an app's max concurrency, changed by the operator", () => {
  it("a limit set holds for the next call (it waits, reason concurrency); raised, the waiting call is granted; cleared, no limit", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("sdxl", owner.id);
    const first = await lease(t, app.key, { duration: 30 });
    expect(first.status).toBe(201);

    const set = await patch(app.id, { max_concurrency: 1 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ id: app.id, name: "sdxl", max_concurrency: 1 });
    expect((await appNamed("sdxl")).max_concurrency).toBe(1);
    // Three slots are free: only the new limit makes it wait.
    const second = await lease(t, app.key, { duration: 30 });
    expect(second.status).toBe(202);
    expect(second.body).toMatchObject({ status: "queued", reason: "concurrency" });

    // Raised by name: the waiting call is granted without anything else happening.
    expect((await patch("sdxl", { max_concurrency: 2 })).body.max_concurrency).toBe(2);
    await waitFor(
      async () => (await t.call("GET", `/v1/leases/${second.body.id}`, { token: app.key })).body.status === "active",
    );
    expect((await lease(t, app.key, { duration: 30 })).status).toBe(202);

    const cleared = await patch(app.id, { max_concurrency: null });
    expect(cleared.status).toBe(200);
    expect(cleared.body.max_concurrency).toBeNull();
    expect((await appNamed("sdxl")).max_concurrency).toBeNull();
    expect((await lease(t, app.key, { duration: 30 })).status).toBe(201);

    expect((await auditActions()).map((e) => [e.target, e.actor, e.detail])).toEqual([
      [app.id, "admin_token", { max_concurrency: { from: 2, to: null } }],
      [app.id, "admin_token", { max_concurrency: { from: 1, to: 2 } }],
      [app.id, "admin_token", { max_concurrency: { from: null, to: 1 } }],
    ]);
  });

  it("a value that is not a whole number from 1 to 100000 (or null) is a 400 naming the field, and changes nothing", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("sdxl", owner.id, 3);
    for (const bad of [0, -1, 1.5, "2", 100_001, true]) {
      const problem = expectProblem(await patch(app.id, { max_concurrency: bad }), 400, "invalid_request");
      expect(JSON.stringify(problem.errors), JSON.stringify(bad)).toContain("max_concurrency");
      // One entry for the field, its two accepted kinds said as alternatives (not a third "anyOf" line).
      expect(problem.errors, JSON.stringify(bad)).toHaveLength(1);
      expect(problem.errors[0].message).toMatch(/ or must be null$/);
      expect(problem.detail).not.toMatch(/anyOf/);
    }
    expectProblem(await patch(app.id, {}), 400, "invalid_request");
    expectProblem(await patch(app.id, { max_concurrency: 2, name: "renamed" }), 400, "invalid_request");
    expect(await appNamed("sdxl")).toMatchObject({ id: app.id, max_concurrency: 3 });
    expect(await auditActions()).toEqual([]);
    expectProblem(await patch("a_0000000000000000", { max_concurrency: 2 }), 404, "not_found");
    expectProblem(await patch("nothing-by-this-name", { max_concurrency: 2 }), 404, "not_found");
  });

  it("only the operator may change it: a user token, an app key or no credentials are refused, and a dashboard session needs its CSRF token", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("sdxl", owner.id, 3);
    expectProblem(await patch(app.id, { max_concurrency: 9 }, { token: owner.token }), 403, "forbidden");
    expectProblem(await patch(app.id, { max_concurrency: 9 }, { token: app.key }), 403, "forbidden");
    const anonymous = await t.call("PATCH", `/v1/admin/apps/${app.id}`, { body: { max_concurrency: 9 } });
    expectProblem(anonymous, 401, "unauthorized");

    const operator = await t.call("POST", "/v1/dashboard/session", { body: { token: ADMIN } });
    const cookie = String(operator.headers["set-cookie"]).split(";")[0]!;
    expectProblem(await patch(app.id, { max_concurrency: 9 }, { token: "", headers: { cookie } }), 403, "csrf_failed");
    expect((await appNamed("sdxl")).max_concurrency).toBe(3);
    expect(await auditActions()).toEqual([]);

    const fromPage = await patch(
      app.id,
      { max_concurrency: 9 },
      { token: "", headers: { cookie, "x-csrf-token": operator.body.csrf_token } },
    );
    expect(fromPage.status).toBe(200);
    expect((await auditActions()).map((e) => e.actor)).toEqual(["dashboard"]);
  });
});
