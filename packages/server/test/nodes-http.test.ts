import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "./billing-fixture.js";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, quotaOf, serveAt, sleep, startTestServer, waitFor } from "./harness.js";

/**
 * Agent nodes over HTTP (docs/agent.md): registration, heartbeats, leases bound to the node whose agent
 * asked, and what happens to those leases when the node goes silent.
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const GPU = (index: number, slots = 2) => ({
  index,
  uuid: `GPU-0000000${index}-aaaa-bbbb-cccc-ddddeeeeffff`,
  name: "NVIDIA A100-SXM4-80GB",
  memory_mb: 81920,
  slots,
});

/**
 * `clock`: time as the test sets it. The server's heartbeat timer still runs on real time, but
 * finds the node silent only once the clock says the timeout passed (else it looks again later),
 * so a stalled machine cannot lose a node the test keeps heartbeating, or one it has not yet
 * let go silent.
 */
async function setup(nodes: Record<string, unknown> = {}, clock?: ManualClock) {
  // No configured GPUs at all: whatever is granted must come from an agent's node.
  const raw = { pool: { simulated: [] }, nodes };
  t = clock ? await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), raw, { clock }) : await startTestServer(raw);
  const owner = await t.user("owner", "pro");
  const alice = await t.user("alice", "free");
  const app = await t.appFor("spaces-app", owner.id);
  const node = await createNode("gpu-host-1");
  return { owner, alice, app, node };
}

async function createNode(name: string): Promise<{ id: string; key: string }> {
  const r = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name } });
  expect(r.status).toBe(201);
  return { id: r.body.id, key: r.body.key };
}

const register = (key: string, devices: unknown[], options: { previous?: string; agentUrl?: string } = {}) =>
  t.call("POST", "/v1/nodes/register", {
    token: key,
    body: {
      devices,
      agent_url: options.agentUrl ?? "http://127.0.0.1:7071",
      ...(options.previous !== undefined ? { previous_registration: options.previous } : {}),
    },
  });
const heartbeat = (key: string, registration?: string) =>
  t.call("POST", "/v1/nodes/heartbeat", { token: key, body: registration !== undefined ? { registration } : {} });
const leaseVia = (nodeKey: string, appKey: string, body: Record<string, unknown>, ipToken?: string) =>
  t.call("POST", "/v1/leases", {
    token: appKey,
    body,
    headers: { "x-gpupool-node-key": nodeKey, ...(ipToken ? { "x-ip-token": ipToken } : {}) },
  });

describe("node registration and heartbeats", () => {
  it("registers devices, which then take leases; the pool view shows the node up", async () => {
    const { app, node } = await setup();
    const r = await register(node.key, [GPU(0), GPU(1)]);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      node: { name: "gpu-host-1" },
      devices: 2,
      heartbeat_interval_s: 5,
      heartbeat_timeout_s: 20,
    });
    const granted = await leaseVia(node.key, app.key, { duration: 10 });
    expect(granted.status).toBe(201);
    expect(granted.body.device).toMatchObject({
      node: "gpu-host-1",
      index: 0,
      uuid: GPU(0).uuid,
      name: "NVIDIA A100-SXM4-80GB",
    });
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.nodes).toEqual([
      expect.objectContaining({ name: "gpu-host-1", kind: "agent", state: "up", agent_url: "http://127.0.0.1:7071" }),
    ]);
    expect(pool.body.slots).toEqual({ total: 4, busy: 1 });
    expect(pool.body.active[0]).toMatchObject({ node: "gpu-host-1", device: 0 });
    expect((await heartbeat(node.key)).status).toBe(200);
  });

  it("a request through a node's agent gets only that node's GPUs, and waits for them", async () => {
    const { app, node } = await setup();
    const other = await createNode("gpu-host-2");
    await register(node.key, [GPU(0, 1)]);
    await register(other.key, [GPU(0, 2)]);
    const first = await leaseVia(node.key, app.key, { duration: 30 });
    expect(first.body.device.node).toBe("gpu-host-1");
    // gpu-host-2 has two free slots, but this request came through gpu-host-1's agent.
    const second = await leaseVia(node.key, app.key, { duration: 30 });
    expect(second.status).toBe(202);
    expect(second.body).toMatchObject({ status: "queued", node: "gpu-host-1", device: null, reason: "node" });
    await t.call("POST", `/v1/leases/${first.body.id}/release`, { token: app.key });
    const after = await waitFor(async () => {
      const g = await t.call("GET", `/v1/leases/${second.body.id}`, { token: app.key });
      return g.body.status === "active" ? g.body : null;
    });
    expect(after.device.node).toBe("gpu-host-1");
  });

  it("an agent's GPUs take only requests through that agent: a direct request never lands there", async () => {
    t = await startTestServer({ pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] } });
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("spaces-app", owner.id);
    const node = await createNode("gpu-host-1");
    await register(node.key, [GPU(0), GPU(1)]);
    const first = await t.call("POST", "/v1/leases", { token: app.key, body: { duration: 30 } });
    expect(first.body.device.node).toBe("sim-0");
    // sim-0 is full; gpu-host-1 has 4 free slots, but the app is not running on that host.
    const second = await t.call("POST", "/v1/leases", { token: app.key, body: { duration: 30 } });
    expect(second.status).toBe(202);
    expect(second.body.device).toBeNull();
    // Through the agent it is granted at once.
    const viaAgent = await leaseVia(node.key, app.key, { duration: 30 });
    expect(viaAgent.status).toBe(201);
    expect(viaAgent.body.device.node).toBe("gpu-host-1");
  });

  it("a pool with only agents' GPUs refuses direct requests, saying to go through the host's agent", async () => {
    const { app, node } = await setup();
    await register(node.key, [GPU(0)]);
    const r = await t.call("POST", "/v1/leases", { token: app.key, body: { duration: 10 } });
    expectProblem(r, 503, "no_gpu_available");
    expect(r.body.detail).toMatch(/through its agent/);
  });

  it("refuses requests for a node that has not registered, reserving nothing", async () => {
    const { app, node, alice } = await setup();
    const token = await t.ipToken(app.id, { user: alice.id });
    const r = await leaseVia(node.key, app.key, { duration: 10 }, token);
    expectProblem(r, 503, "no_gpu_available");
    expect(r.body.reason).toBe("node_not_registered");
    expect(r.body.detail).toMatch(/gpu-host-1.*agent/);
    expect((await quotaOf(t, app.key, token)).reserved).toBe(0);
  });

  it("a bad node key is a 401 that names the header; heartbeats before registering are a 409", async () => {
    const { app, node } = await setup();
    const bad = await leaseVia("gpn_not-a-real-key", app.key, { duration: 10 });
    expectProblem(bad, 401, "unauthorized");
    expect(bad.body.detail).toMatch(/X-Gpupool-Node-Key/);
    // An app key is not a node key either.
    expectProblem(await leaseVia(app.key, app.key, { duration: 10 }), 401, "unauthorized");
    expectProblem(await heartbeat(node.key), 409, "node_not_registered");
    // Only node keys may register.
    expectProblem(await register(app.key, [GPU(0)]), 403, "forbidden");
  });

  it("rejects malformed device lists with the field at fault, changing nothing", async () => {
    const { node } = await setup();
    expectProblem(await register(node.key, [GPU(0), GPU(0)]), 400, "invalid_request");
    expectProblem(await register(node.key, [{ ...GPU(0), uuid: "GPU with spaces" }]), 400, "invalid_request");
    expectProblem(
      await register(node.key, [{ index: -1, uuid: "x", name: "y", memory_mb: 1 }]),
      400,
      "invalid_request",
    );
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.slots.total).toBe(0);
  });

  it("an agent may not take the name of a configured node", async () => {
    t = await startTestServer({});
    const r = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "sim-0" } });
    expectProblem(await register(r.body.key, [GPU(0)]), 409, "conflict");
  });
});

describe("a node that stops heartbeating", () => {
  it("fails its active leases charging only the time held, fails requests waiting for it, and removes its slots", async () => {
    // On real time, the second lease had to be admitted within 400 ms of the registration, or the
    // node was already lost; here no time passes until the test says so.
    const clock = new ManualClock();
    const { app, alice, node } = await setup({ heartbeat_interval: "100ms", heartbeat_timeout: "400ms" }, clock);
    const token = await t.ipToken(app.id, { user: alice.id });
    await register(node.key, [GPU(0, 1)]);
    const active = await leaseVia(node.key, app.key, { duration: 60 }, token);
    expect(active.status).toBe(201);
    const waiting = await leaseVia(node.key, app.key, { duration: 60 }, token);
    expect(waiting.status).toBe(202);
    // No more heartbeats: the node is lost after 400 ms (its timer, on real time, finds it so).
    clock.advance(500);
    const failed = await waitFor(async () => {
      const g = await t.call("GET", `/v1/leases/${active.body.id}`, { token: app.key });
      return g.body.status === "failed" ? g.body : null;
    }, 5_000);
    expect(failed.problem).toMatchObject({ code: "no_gpu_available" });
    // Granted after the node's last word (its registration): nothing is charged for a GPU never heard of again.
    expect(failed.problem.detail).toMatch(/gpu-host-1 stopped answering.*Nothing was charged/);
    expect(failed.charged).toBe(0);
    expect(failed.refunded).toBe(60);
    const queued = (await t.call("GET", `/v1/leases/${waiting.body.id}`, { token: app.key })).body;
    expect(queued).toMatchObject({ status: "failed", charged: 0, refunded: 60 });
    const q = await quotaOf(t, app.key, token);
    expect({ used: q.used, reserved: q.reserved }).toEqual({ used: 0, reserved: 0 });
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.slots.total).toBe(0);
    expect(pool.body.nodes[0]).toMatchObject({ name: "gpu-host-1", state: "lost" });
    // Its agent hears it must register again, and after that the node takes leases again.
    expectProblem(await heartbeat(node.key), 409, "node_not_registered");
    expect((await register(node.key, [GPU(0, 1)])).status).toBe(200);
    expect((await leaseVia(node.key, app.key, { duration: 5 }, token)).status).toBe(201);
  });

  it("heartbeats keep a node (and its leases) alive past the timeout", async () => {
    // 800 ms of the test's clock, 100 ms between heartbeats: on real time a stall of 300 ms
    // between two heartbeats lost the node.
    const clock = new ManualClock();
    const { app, node } = await setup({ heartbeat_interval: "100ms", heartbeat_timeout: "400ms" }, clock);
    await register(node.key, [GPU(0)]);
    const active = await leaseVia(node.key, app.key, { duration: 60 });
    for (let i = 0; i < 8; i++) {
      expect((await heartbeat(node.key)).status).toBe(200);
      clock.advance(100);
      // Real time too, so the node's timer (armed for 400 ms) fires along the way and looks.
      await sleep(100);
    }
    const g = await t.call("GET", `/v1/leases/${active.body.id}`, { token: app.key });
    expect(g.body.status).toBe("active");
  });

  it("re-registering the same devices keeps the leases; different devices fail the ones that were on them", async () => {
    const { app, node } = await setup();
    const first = await register(node.key, [GPU(0)]);
    const a = await leaseVia(node.key, app.key, { duration: 60 });
    // The same agent, restarted: it presents the registration it held.
    const again = await register(node.key, [GPU(0)], { previous: first.body.registration });
    expect(again.status).toBe(200);
    expect((await t.call("GET", `/v1/leases/${a.body.id}`, { token: app.key })).body.status).toBe("active");
    expect((await register(node.key, [GPU(1)], { previous: again.body.registration })).status).toBe(200);
    const g = (await t.call("GET", `/v1/leases/${a.body.id}`, { token: app.key })).body;
    expect(g).toMatchObject({ status: "failed", problem: { code: "no_gpu_available" } });
    expect(g.problem.detail).toMatch(/re-registered with different GPUs/);
  });
});

describe("one node key, two agents", () => {
  it("a second agent is refused while the node's agent heartbeats (409 naming the node and the agent), and changes nothing", async () => {
    const { app, node } = await setup();
    const first = await register(node.key, [GPU(0)]);
    expect(first.body.registration).toEqual(expect.any(String));
    const lease = await leaseVia(node.key, app.key, { duration: 60 });
    const second = await register(node.key, [GPU(5)], { agentUrl: "http://127.0.0.1:7072" });
    expectProblem(second, 409, "conflict");
    expect(second.body).toMatchObject({
      reason: "node_in_use",
      node: "gpu-host-1",
      agent_url: "http://127.0.0.1:7071",
    });
    expect(second.body.detail).toMatch(
      /Node gpu-host-1 is in use by another agent \(http:\/\/127\.0\.0\.1:7071, last heartbeat \d+s ago\): two agents cannot share a node key.*POST \/v1\/admin\/nodes.*within \d+s/,
    );
    // The first agent's GPUs and lease are untouched; it keeps heartbeating.
    expect((await t.call("GET", `/v1/leases/${lease.body.id}`, { token: app.key })).body).toMatchObject({
      status: "active",
      device: { uuid: GPU(0).uuid },
    });
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.slots.total).toBe(2);
    expect((await heartbeat(node.key, first.body.registration)).status).toBe(200);
  });

  it("two agents started together with one node key: one registers, the other is refused, and the node has the first one's GPUs", async () => {
    const { node } = await setup();
    // Both find the node free if it is read outside the transaction that registers it.
    const [a, b] = await Promise.all([
      register(node.key, [GPU(0)], { agentUrl: "http://10.0.0.1:7071" }),
      register(node.key, [GPU(5)], { agentUrl: "http://10.0.0.2:7071" }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    const [won, lost, wonGpu] = a.status === 200 ? [a, b, GPU(0)] : [b, a, GPU(5)];
    expectProblem(lost, 409, "conflict");
    expect(lost.body).toMatchObject({ reason: "node_in_use", node: "gpu-host-1" });
    expect((await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.devices).toEqual([
      expect.objectContaining({ uuid: wonGpu.uuid }),
    ]);
    expect((await heartbeat(node.key, won.body.registration)).status).toBe(200);
  });

  it("once the node's agent is gone the other registers; the replaced agent's heartbeats are then a 409 saying so, and it cannot take the node back", async () => {
    const { node } = await setup({ heartbeat_interval: "100ms", heartbeat_timeout: "400ms" });
    const first = await register(node.key, [GPU(0)]);
    // The first agent goes quiet (a network partition); the node times out.
    await waitFor(async () => (await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.slots.total === 0, 5_000);
    const second = await register(node.key, [GPU(5)], { agentUrl: "http://10.0.0.9:7071" });
    expect(second.status).toBe(200);
    expect(second.body.registration).not.toBe(first.body.registration);
    // The first agent comes back: its registration is not the node's any more.
    const stale = await heartbeat(node.key, first.body.registration);
    expectProblem(stale, 409, "node_not_registered");
    expect(stale.body).toMatchObject({ reason: "replaced", agent_url: "http://10.0.0.9:7071" });
    expect(stale.body.detail).toMatch(/registered since by another agent.*two agents cannot share a node key/i);
    // It registers again, presenting its old registration: refused while the other heartbeats.
    expect((await heartbeat(node.key, second.body.registration)).status).toBe(200);
    expectProblem(await register(node.key, [GPU(0)], { previous: first.body.registration }), 409, "conflict");
    expect((await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.devices).toEqual([
      expect.objectContaining({ uuid: GPU(5).uuid }),
    ]);
  });

  it("a heartbeat's registration must be a short string; agents that send none are not checked", async () => {
    const { node } = await setup();
    await register(node.key, [GPU(0)]);
    expectProblem(
      await t.call("POST", "/v1/nodes/heartbeat", { token: node.key, body: { registration: 5 } }),
      400,
      "invalid_request",
    );
    expect((await heartbeat(node.key)).status).toBe(200);
  });
});

describe("restarts", () => {
  it("a node still heartbeating keeps its slots across a control-plane restart; one that went silent is lost", async () => {
    const { app, node } = await setup({ heartbeat_interval: "100ms", heartbeat_timeout: "1500ms" });
    await register(node.key, [GPU(0)]);
    const a = await leaseVia(node.key, app.key, { duration: 60 });
    expect(a.status).toBe(201);
    const { serveAt } = await import("./harness.js");
    const dir = t.dir;
    await t.server.close();
    // Back at once: the node is still within its heartbeat timeout (1.5 s: a restart on a busy
    // machine, PostgreSQL's included, takes a few hundred milliseconds).
    t = await serveAt(dir, {
      pool: { simulated: [] },
      nodes: { heartbeat_interval: "100ms", heartbeat_timeout: "1500ms" },
    });
    expect((await t.call("GET", `/v1/leases/${a.body.id}`, { token: app.key })).body.status).toBe("active");
    expect((await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.slots).toEqual({ total: 2, busy: 1 });
    // Still the agent's own: a direct request is not put on its free slot.
    expectProblem(
      await t.call("POST", "/v1/leases", { token: app.key, body: { duration: 5 } }),
      503,
      "no_gpu_available",
    );
    // It never heartbeats again: lost, the lease failed.
    await waitFor(
      async () => (await t.call("GET", `/v1/leases/${a.body.id}`, { token: app.key })).body.status === "failed",
      5_000,
    );
  });
});
