import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease, startTestServer } from "./harness.js";

/**
 * Every list is paged by an opaque cursor (issue 17): `next_cursor` names the next page, the pages
 * together are the whole list once each in a stable order, and a client that passes no cursor
 * gets the first page.
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

/** Follows `next_cursor` from the first page of `path` (which has a query already). */
async function pages(path: string, key: string, token = ADMIN): Promise<{ items: any[]; pages: number }> {
  const items: any[] = [];
  let cursor: string | null = null;
  let n = 0;
  do {
    const r = await t.call("GET", `${path}${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`, {
      token,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    items.push(...r.body[key]);
    cursor = r.body.next_cursor;
    n++;
  } while (cursor !== null && n < 100);
  return { items, pages: n };
}

describe("lists, a page at a time", () => {
  it("GET /v1/leases: pages of an app's leases, newest first, each lease once; with a status too; no cursor is the first page", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("demo", owner.id);
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const r = await lease(t, app.key, { duration: 1, queue: true });
      expect([201, 202]).toContain(r.status);
      ids.push(r.body.id);
      if (i % 2 === 0) await t.call("DELETE", `/v1/leases/${r.body.id}`, { token: app.key });
    }
    const all = await pages("/v1/leases?limit=3", "leases", app.key);
    expect(all.pages).toBe(3);
    expect(all.items.map((l) => l.id)).toEqual([...ids].reverse());
    const first = await t.call("GET", "/v1/leases?limit=3", { token: app.key });
    expect(first.body.leases.map((l: any) => l.id)).toEqual(ids.slice(4).reverse());
    expect(typeof first.body.next_cursor).toBe("string");

    const ended = await pages("/v1/leases?limit=2&status=released", "leases", app.key);
    const released = all.items.filter((l) => l.status === "released").map((l) => l.id);
    expect(released.length).toBeGreaterThan(2);
    expect(ended.items.map((l) => l.id)).toEqual(released);
    // Someone else's pages: the admin's list holds them all too.
    expect((await pages("/v1/leases?limit=4", "leases")).items.map((l) => l.id)).toEqual([...ids].reverse());
  });

  it("GET /v1/admin/users and /v1/admin/apps: pages by name; without a cursor or limit, the first page", async () => {
    t = await startTestServer();
    const names = Array.from({ length: 12 }, (_, i) => `user-${String(i).padStart(2, "0")}`);
    for (const name of [...names].reverse()) await t.user(name);
    for (const name of ["zeta", "alpha", "mid"]) await t.appFor(name, "user-00");

    const users = await pages("/v1/admin/users?limit=5", "users");
    expect(users.pages).toBe(3);
    expect(users.items.map((u) => u.name)).toEqual(names);
    const found = await pages("/v1/admin/users?limit=1&q=USER-1", "users");
    expect(found.items.map((u) => u.name)).toEqual(["user-10", "user-11"]);
    const old = await t.call("GET", "/v1/admin/users", { token: ADMIN });
    expect(old.body.users.map((u: any) => u.name)).toEqual(names);
    expect(old.body.next_cursor).toBeNull();

    const apps = await pages("/v1/admin/apps?limit=2", "apps");
    expect(apps.items.map((a) => a.name)).toEqual(["alpha", "mid", "zeta"]);
    const every = await t.call("GET", "/v1/admin/apps", { token: ADMIN });
    expect(every.body).toMatchObject({ next_cursor: null });
    expect(every.body.apps).toHaveLength(3);
  });

  it("a cursor this server did not give out, or a limit out of range, is a 400 naming it", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    for (const path of ["/v1/leases?cursor=nope", "/v1/admin/users?cursor=nope", "/v1/admin/apps?cursor=bm9wZQ"]) {
      const p = expectProblem(
        await t.call("GET", path, { token: path.includes("admin") ? ADMIN : owner.token }),
        400,
        "invalid_request",
      );
      expect(p.errors, path).toEqual([expect.objectContaining({ field: "cursor" })]);
    }
    const p = expectProblem(await t.call("GET", "/v1/admin/apps?limit=1001", { token: ADMIN }), 400, "invalid_request");
    expect(JSON.stringify(p.errors)).toContain("limit");
  });
});
