import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease, startTestServer } from "./harness.js";

/** The operator's surface: admin API, health, readiness, pool view, Prometheus metrics. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const admin = (method: string, url: string, body?: unknown) =>
  t.call(method, url, { token: ADMIN, ...(body !== undefined ? { body } : {}) });

describe("admin API", () => {
  it("creates users (token shown once, stored hashed), apps, nodes and edges", async () => {
    t = await startTestServer();
    const u = await admin("POST", "/v1/admin/users", { name: "alice", tier: "pro" });
    expect(u.status).toBe(201);
    expect(u.body).toMatchObject({
      id: expect.stringMatching(/^u_/),
      name: "alice",
      tier: "pro",
      quota_override: null,
      token: expect.stringMatching(/^gpu_u_/),
    });
    const listed = await admin("GET", "/v1/admin/users");
    expect(listed.body.users).toEqual([expect.objectContaining({ id: u.body.id, name: "alice", tier: "pro" })]);
    expect(JSON.stringify(listed.body)).not.toContain(u.body.token);
    const [stored] = await t.server.context.store.transaction((tx) =>
      tx.users.page(null, { after: null, limit: 1_000 }),
    );
    expect(stored!.tokenHash).not.toContain(u.body.token);
    // The new token works at once.
    expect((await t.call("GET", "/v1/quota", { token: u.body.token })).body.identity).toMatchObject({
      id: u.body.id,
      tier: "pro",
    });

    const a = await admin("POST", "/v1/admin/apps", { name: "sdxl-demo", owner: "alice", max_concurrency: 2 });
    expect(a.status).toBe(201);
    expect(a.body).toMatchObject({
      id: expect.stringMatching(/^a_/),
      name: "sdxl-demo",
      owner: u.body.id,
      max_concurrency: 2,
      key: expect.stringMatching(/^gpu_a_/),
    });
    expect((await admin("GET", "/v1/admin/apps")).body.apps).toEqual([
      expect.objectContaining({ id: a.body.id, max_concurrency: 2 }),
    ]);

    const n = await admin("POST", "/v1/admin/nodes", { name: "gpu-host-1" });
    expect(n.body).toMatchObject({
      id: expect.stringMatching(/^n_/),
      name: "gpu-host-1",
      key: expect.stringMatching(/^gpu_n_/),
    });
    const e = await admin("POST", "/v1/admin/edges", { name: "edge-1" });
    expect(e.body).toMatchObject({
      id: expect.stringMatching(/^e_/),
      name: "edge-1",
      key: expect.stringMatching(/^gpu_e_/),
    });
  });

  it("refuses duplicates (409), unknown owners and tiers (400), and unknown users (404)", async () => {
    t = await startTestServer();
    await t.user("alice", "free");
    expectProblem(await admin("POST", "/v1/admin/users", { name: "alice", tier: "pro" }), 409, "conflict");
    expectProblem(await admin("POST", "/v1/admin/users", { name: "bob", tier: "platinum" }), 400, "invalid_request");
    expectProblem(await admin("POST", "/v1/admin/apps", { name: "x", owner: "nobody" }), 400, "invalid_request");
    await t.appFor("x", "alice");
    expectProblem(await admin("POST", "/v1/admin/apps", { name: "x", owner: "alice" }), 409, "conflict");
    expectProblem(
      await admin("POST", "/v1/admin/apps", { name: "y", owner: "alice", max_concurrency: 0 }),
      400,
      "invalid_request",
    );
    await admin("POST", "/v1/admin/nodes", { name: "n1" });
    expectProblem(await admin("POST", "/v1/admin/nodes", { name: "n1" }), 409, "conflict");
    expectProblem(await admin("GET", "/v1/admin/users/nobody"), 404, "not_found");
    expect((await admin("GET", "/v1/admin/users")).body.users).toHaveLength(1);
  });

  it("GET /v1/admin/pool shows devices, slot holders, active leases and the queue", async () => {
    t = await startTestServer();
    const alice = await t.user("alice", "free");
    const app = await t.appFor("demo", alice.id);
    const big = await lease(t, app.key, { duration: 30, size: "xlarge" });
    const small = await lease(t, alice.token, { duration: 30 });
    await lease(t, alice.token, { duration: 30 });
    const waiting = await lease(t, alice.token, { duration: 30 });
    expect(waiting.status).toBe(202);
    const pool = await admin("GET", "/v1/admin/pool");
    expect(pool.status).toBe(200);
    expect(pool.body.nodes).toEqual([
      { name: "sim-0", kind: "configured", state: "up", heartbeat_at: null, agent_url: null },
    ]);
    expect(pool.body.devices).toHaveLength(2);
    expect(pool.body.devices[0]).toMatchObject({
      node: "sim-0",
      index: 0,
      name: "Simulated H200",
      memory_mb: 141 * 1024,
    });
    expect(pool.body.slots).toEqual({ total: 4, busy: 4 });
    const holders = pool.body.devices.flatMap((d: { slots: unknown[] }) => d.slots);
    expect(holders).toContain(big.body.id);
    expect(holders).toContain(small.body.id);
    expect(pool.body.active).toHaveLength(3);
    expect(pool.body.active).toContainEqual(
      expect.objectContaining({
        id: big.body.id,
        app: app.id,
        identity: `app:${app.id}`,
        size: "xlarge",
        deadline: big.body.deadline,
      }),
    );
    expect(pool.body.queue).toEqual([
      expect.objectContaining({ lease: waiting.body.id, position: 1, reason: "node", identity: `user:${alice.id}` }),
    ]);
  });
});

describe("health, readiness, metrics", () => {
  it("/healthz and /readyz", async () => {
    t = await startTestServer();
    expect(await t.call("GET", "/healthz")).toMatchObject({ status: 200, body: { status: "ok" } });
    const ready = await t.call("GET", "/readyz");
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({
      status: "ready",
      storage: process.env["GPUPOOL_TEST_STORAGE"] === "postgres" ? "postgres" : "sqlite",
      leader: true,
      slots: { total: 4, busy: 0 },
    });
  });

  it("/metrics counts grants and denials by code, and reports queue depth and slot utilization", async () => {
    t = await startTestServer();
    const alice = await t.user("alice", "free");
    const bob = await t.user("bob", "free");
    await t.call("PATCH", `/v1/admin/users/${bob.id}`, { token: ADMIN, body: { quota: 5 } });
    for (let i = 0; i < 3; i++) expect((await lease(t, alice.token, { duration: 30 })).status).toBe(201);
    expect((await lease(t, bob.token, { duration: 5 })).status).toBe(201);
    expect((await lease(t, alice.token, { duration: 30 })).status).toBe(202);
    expect((await lease(t, bob.token, { duration: 5 })).status).toBe(429);
    expect((await lease(t, bob.token, { duration: 5 })).status).toBe(429);
    expect((await lease(t, alice.token, { duration: 1e6 })).status).toBe(400);
    expect((await lease(t, alice.token, { duration: 121 })).status).toBe(422);

    const m = await t.call("GET", "/metrics");
    expect(m.status).toBe(200);
    expect(String(m.headers["content-type"])).toMatch(/^text\/plain/);
    const text = String(m.body);
    const value = (re: RegExp): number => {
      const match = re.exec(text);
      if (!match)
        throw new Error(
          `metric ${re} not found in:\n${text
            .split("\n")
            .filter((l) => l.startsWith("gpupool_") && !l.startsWith("gpupool_process"))
            .join("\n")}`,
        );
      return Number(match[1]);
    };
    expect(value(/^gpupool_grants_total\{size="large"\} (\S+)$/m)).toBe(4);
    expect(value(/^gpupool_denials_total\{code="quota_exceeded"\} (\S+)$/m)).toBe(2);
    expect(value(/^gpupool_denials_total\{code="duration_too_long"\} (\S+)$/m)).toBe(1);
    expect(value(/^gpupool_queue_depth (\S+)$/m)).toBe(1);
    expect(value(/^gpupool_slot_utilization (\S+)$/m)).toBe(1);
    expect(text).toMatch(/^gpupool_ledger_transaction_seconds_bucket/m);

    // A queued grant is counted when it happens; utilization follows releases.
    const mine = (await t.call("GET", "/v1/leases?status=active", { token: alice.token })).body.leases;
    await t.call("POST", `/v1/leases/${mine[0].id}/release`, { token: alice.token, body: {} });
    await t.call("POST", `/v1/leases/${mine[1].id}/release`, { token: alice.token, body: {} });
    const after = String((await t.call("GET", "/metrics")).body);
    expect(after).toMatch(/^gpupool_grants_total\{size="large"\} 5$/m);
    expect(after).toMatch(/^gpupool_queue_depth 0$/m);
    expect(after).toMatch(/^gpupool_slot_utilization 0\.75$/m);
    expect(after).toMatch(/^gpupool_leases_ended_total\{status="released"\} 2$/m);
    expect(after).toMatch(/^gpupool_lease_held_seconds_count\{size="large"\} 2$/m);
    expect(after).toMatch(/^gpupool_ledger_transaction_seconds_count\{op="release"\} 2$/m);
  });
});
