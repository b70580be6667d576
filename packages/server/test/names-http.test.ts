import { ID_PATTERNS } from "@gpupool/contract";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, startTestServer } from "./harness.js";

/**
 * Users, apps, nodes and edges are named by "id or name" in the admin API and in X-IP-Token
 * minting. A name of an id's form would make that ambiguous — a user named like carol's id would
 * be carol to one lookup and themselves to another — so no name may have that form, and a
 * reference of that form is looked up as an id only.
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const ID_OF_NOBODY = "u_AAAAAAAAAAAAAAAA";

describe("names of an id's form", () => {
  it("are refused for users, apps, nodes and edges with a 400 naming the field, and nothing is created", async () => {
    t = await startTestServer();
    const carol = await t.user("carol", "pro");
    const app = await t.appFor("carols-app", carol.id);
    const before = {
      users: (await t.call("GET", "/v1/admin/users", { token: ADMIN })).body,
      apps: (await t.call("GET", "/v1/admin/apps", { token: ADMIN })).body,
    };
    const attempts: [string, Record<string, unknown>][] = [
      ["/v1/admin/users", { name: carol.id, tier: "free" }],
      ["/v1/admin/users", { name: app.id }],
      ["/v1/admin/users", { name: ID_OF_NOBODY }],
      ["/v1/admin/apps", { name: app.id, owner: carol.id }],
      ["/v1/admin/apps", { name: carol.id, owner: carol.id }],
      ["/v1/admin/nodes", { name: "n_0123456789abcdef" }],
      ["/v1/admin/edges", { name: "e_0123456789ABCD-_" }],
    ];
    for (const [url, body] of attempts) {
      const p = expectProblem(await t.call("POST", url, { token: ADMIN, body }), 400, "invalid_request");
      expect(p.errors, `${url} ${JSON.stringify(body)}`).toEqual([
        { field: "name", message: expect.stringMatching(/must be .*not of an id's form/) },
      ]);
    }
    expect((await t.call("GET", "/v1/admin/users", { token: ADMIN })).body).toEqual(before.users);
    expect((await t.call("GET", "/v1/admin/apps", { token: ADMIN })).body).toEqual(before.apps);
  });

  it("names that only start like an id are still names", async () => {
    t = await startTestServer();
    for (const name of ["u_short", "u_0123456789abcdefg", "x_0123456789abcdef", "U_0123456789abcdef"]) {
      const r = await t.call("POST", "/v1/admin/users", { token: ADMIN, body: { name } });
      expect(r.status, name).toBe(201);
      expect((await t.call("GET", `/v1/admin/users/${name}`, { token: ADMIN })).body).toMatchObject({ name });
    }
  });

  it("every id the server makes is of its kind's form", async () => {
    t = await startTestServer();
    const user = await t.user("dave");
    const app = await t.appFor("daves-app", user.id);
    const node = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host" } });
    const edge = await t.call("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "edge-1" } });
    expect(user.id).toMatch(ID_PATTERNS.user);
    expect(app.id).toMatch(ID_PATTERNS.app);
    expect(node.body.id).toMatch(ID_PATTERNS.node);
    expect(edge.body.id).toMatch(ID_PATTERNS.edge);
  });
});

describe("a reference of an id's form", () => {
  /** A user whose name has an id's form, as a server before this rule could have stored. */
  async function legacyUser(name: string): Promise<void> {
    await t.server.context.store.transaction((tx) =>
      tx.users.insert({
        id: "u_legacyImpostor01",
        name,
        tier: "enterprise",
        tokenHash: "0".repeat(64),
        quotaOverrideMs: null,
        createdAt: Date.now(),
      }),
    );
  }

  it("is looked up as an id only: a user named like carol's id is never carol, and carol's id is only carol", async () => {
    t = await startTestServer();
    const carol = await t.user("carol", "free");
    await t.appFor("demo", carol.id);
    await legacyUser(carol.id);

    // PATCH and ip-tokens by carol's id reach carol, never the user named like it.
    const patched = await t.call("PATCH", `/v1/admin/users/${carol.id}`, { token: ADMIN, body: { tier: "pro" } });
    expect(patched.body).toMatchObject({ id: carol.id, name: "carol", tier: "pro" });
    const minted = await t.call("POST", "/v1/ip-tokens", { token: ADMIN, body: { app: "demo", user: carol.id } });
    expect(minted.body.subject).toBe(`user:${carol.id}`);
  });

  it("that is nobody's id is not found, even when a user is named so", async () => {
    t = await startTestServer();
    const carol = await t.user("carol", "free");
    await t.appFor("demo", carol.id);
    await legacyUser(ID_OF_NOBODY);

    expectProblem(await t.call("GET", `/v1/admin/users/${ID_OF_NOBODY}`, { token: ADMIN }), 404, "not_found");
    expectProblem(
      await t.call("PATCH", `/v1/admin/users/${ID_OF_NOBODY}`, { token: ADMIN, body: { quota: 99_999 } }),
      404,
      "not_found",
    );
    const mint = await t.call("POST", "/v1/ip-tokens", { token: ADMIN, body: { app: "demo", user: ID_OF_NOBODY } });
    expect(expectProblem(mint, 400, "invalid_request").errors).toEqual([
      { field: "user", message: "is not a known user" },
    ]);
    const owned = await t.call("POST", "/v1/admin/apps", { token: ADMIN, body: { name: "x", owner: ID_OF_NOBODY } });
    expectProblem(owned, 400, "invalid_request");
    // The stored user is reachable by its own id.
    expect((await t.call("GET", "/v1/admin/users/u_legacyImpostor01", { token: ADMIN })).body).toMatchObject({
      name: ID_OF_NOBODY,
    });
  });
});
