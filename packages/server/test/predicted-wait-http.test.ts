import { schedulerOptionsFor } from "@gpupool/core";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "./billing-fixture.js";
import { ADMIN, expectProblem, lease, quotaOf, serveAt, sleep, startTestServer, waitFor } from "./harness.js";

/**
 * Honest admission over HTTP: a call that cannot start in time is refused at once (503
 * no_gpu_available, reason predicted_wait, eta_s, Retry-After) instead of waiting out its queue
 * timeout; one that can is queued with both ETAs; max_wait is honoured; the device API queues as
 * before unless configured. The default pool: 2 simulated GPUs × 2 slots.
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

async function setup(raw: Record<string, unknown> = {}) {
  t = await startTestServer(raw);
  const alice = await t.user("alice", "free");
  const owner = await t.user("owner", "pro");
  return { alice, owner };
}

/** Fills all 4 slots with `duration`-second leases of `token`'s identity. */
async function fillPool(token: string, duration: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await lease(t, token, { duration });
    expect(r.status).toBe(201);
    ids.push(r.body.id);
  }
  return ids;
}

/** The room a promise leaves per class for calls of higher classes arriving later, in seconds. */
const roomS = (queueTimeoutMs: number) => schedulerOptionsFor({ queueTimeoutMs }).promiseRoomMs / 1000;

const get = (id: string, token: string) => t.call("GET", `/v1/leases/${id}`, { token });

describe("honest admission", () => {
  it("refuses at once a call that cannot start before its queue timeout: 503 predicted_wait, eta_s, Retry-After, nothing reserved", async () => {
    const { alice, owner } = await setup({ queue: { timeout: "2s" } });
    await fillPool(owner.token, 30);
    const r = await lease(t, alice.token, { duration: 20 });
    const p = expectProblem(r, 503, "no_gpu_available");
    expect(p).toMatchObject({ reason: "predicted_wait", max_wait_s: 2 });
    // Nothing has been learnt of what calls hold: the expected wait is the bound, the blockers' 30 s.
    expect(p.eta_s).toBeGreaterThan(25);
    expect(p.eta_s).toBeLessThanOrEqual(30);
    // The bound would be the same; it is a promise to a free call, with room for pro calls that
    // arrive later to go ahead (one class's room, from the 2 s queue timeout): under a second.
    expect(roomS(2_000)).toBeLessThan(1);
    expect(p.eta_max_s).toBeGreaterThanOrEqual(p.eta_s);
    expect(p.eta_max_s).toBeLessThanOrEqual(p.eta_s + 1);
    expect(p.detail).toMatch(/expected to be about \d+s/);
    expect(p.detail).toMatch(/2s queue timeout of the free tier/);
    expect(p.detail).toMatch(/nothing was reserved or charged/);
    // Retry once the expected wait would leave a tenth of the 2 s unused: eta_s − 1.8 s, rounded up.
    expect(Number(r.headers["retry-after"])).toBe(p.eta_s - 1);
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 0, reserved: 0, left: 210 });
    expect((await t.call("GET", "/v1/leases?status=queued", { token: ADMIN })).body.leases).toEqual([]);
  });

  it("refuses a free call expected to start in the last tenth of its minute with no promise to start in time; queues it a few seconds later, and a pro call at once", async () => {
    // A clock the test moves: the expected waits below are exact.
    const clock = new ManualClock();
    t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), {}, { clock });
    const alice = await t.user("alice", "free");
    const bob = await t.user("bob", "pro");
    const owner = await t.user("owner", "pro");
    await fillPool(owner.token, 60);
    // 57 s to go: expected 57 s of alice's 60, and her bound (57 s + a class's room for pro calls
    // arriving later) promises no start within the minute — too close to count on.
    clock.advance(3_000);
    const close = await lease(t, alice.token, { duration: 20 });
    const p = expectProblem(close, 503, "no_gpu_available");
    expect(p).toMatchObject({ reason: "predicted_wait", eta_s: 57, max_wait_s: 60 });
    expect(p.eta_max_s).toBe(57 + roomS(60_000));
    expect(p.detail).toMatch(
      /about 57s \(at most \d+s\), too close to the 60s queue timeout of the free tier to count on/,
    );
    // Retry once the expected wait would leave a tenth of the minute: 57 − 54 s.
    expect(close.headers["retry-after"]).toBe("3");
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 0 });
    // A pro call expected as long is queued: its bound is its start, within its minute (a promise).
    const pro = await lease(t, bob.token, { duration: 20 });
    expect(pro.status).toBe(202);
    expect(pro.body).toMatchObject({ eta_s: 57, eta_max_s: 57 });
    // Three seconds on, alice's expected 54 s leaves her a tenth: queued, behind the pro call.
    clock.advance(3_000);
    const later = await lease(t, alice.token, { duration: 20 });
    expect(later.status).toBe(202);
    expect(later.body).toMatchObject({ position: 2, eta_s: 54 });
  });

  it("queues a call that can start in time, with the expected wait and its bound (202, GET, diagnose)", async () => {
    const { alice, owner } = await setup();
    await fillPool(owner.token, 30);
    const q = await lease(t, alice.token, { duration: 20 });
    expect(q.status).toBe(202);
    expect(q.body).toMatchObject({ status: "queued", position: 1, reason: "node" });
    expect(q.body.eta_max_s).toBeGreaterThan(0);
    // The blockers' 30 s at most, and the room a promise to a free call leaves for pro calls
    // arriving later to go ahead (one class's room, from the minute's queue timeout).
    expect(q.body.eta_max_s).toBeLessThanOrEqual(30 + roomS(60_000));
    expect(q.body.eta_s).toBeLessThanOrEqual(q.body.eta_max_s);
    const again = await get(q.body.id, alice.token);
    expect(again.body.eta_max_s).toBeLessThanOrEqual(q.body.eta_max_s);
    expect(again.body.eta_s).toBeLessThanOrEqual(again.body.eta_max_s);
    const d = await t.call("GET", "/v1/diagnose?duration=20", { token: alice.token });
    expect(d.body.verdict).toMatchObject({ outcome: "queued", position: 2, reason: "node" });
    expect(d.body.verdict.eta_s).toBeLessThanOrEqual(d.body.verdict.eta_max_s);
  });

  it("diagnose takes max_wait: the refusal the call would get with it, the queued verdict without", async () => {
    const { alice, owner } = await setup();
    await fillPool(owner.token, 30);
    const short = await t.call("GET", "/v1/diagnose?duration=20&max_wait=5", { token: alice.token });
    expect(short.status).toBe(200);
    expect(short.body.verdict.outcome).toBe("rejected");
    expect(short.body.verdict.problem).toMatchObject({
      code: "no_gpu_available",
      reason: "predicted_wait",
      max_wait_s: 5,
    });
    const r = await lease(t, alice.token, { duration: 20, max_wait: 5 });
    expect(expectProblem(r, 503, "no_gpu_available").reason).toBe("predicted_wait");
    const patient = await t.call("GET", "/v1/diagnose?duration=20&max_wait=50", { token: alice.token });
    expect(patient.body.verdict).toMatchObject({ outcome: "queued", position: 1 });
    expectProblem(await t.call("GET", "/v1/diagnose?max_wait=soon", { token: alice.token }), 400, "invalid_request");
  });

  it("with queue.predicted_wait: false, queues it until the timeout as before", async () => {
    const { alice, owner } = await setup({ queue: { timeout: "500ms", predicted_wait: false } });
    await fillPool(owner.token, 30);
    const q = await lease(t, alice.token, { duration: 20 });
    expect(q.status).toBe(202);
    const ended = await waitFor(async () => {
      const r = await get(q.body.id, alice.token);
      return r.body.status !== "queued" && r.body;
    });
    expect(ended.problem.code).toBe("queue_timeout");
  });

  it("times a tier out after its own queue timeout (queue.timeout per tier)", async () => {
    const { alice, owner } = await setup({
      queue: { timeout: { default: "60s", free: "500ms" }, predicted_wait: false },
    });
    await fillPool(owner.token, 30);
    const q = await lease(t, alice.token, { duration: 20 });
    expect(q.status).toBe(202);
    const ended = await waitFor(async () => {
      const r = await get(q.body.id, alice.token);
      return r.body.status !== "queued" && r.body;
    });
    expect(ended.problem).toMatchObject({ code: "queue_timeout" });
    expect(ended.problem.detail).toMatch(/the limit is 0.5s/);
    // The pro tier keeps the default minute: its call is queued and still waiting.
    const pro = await lease(t, owner.token, { duration: 20 });
    expect(pro.status).toBe(202);
    await sleep(700);
    expect((await get(pro.body.id, owner.token)).body.status).toBe("queued");
  });
});

describe("max_wait", () => {
  /**
   * Teaches the pool that calls hold about a fifth of what they reserve (four 10-s leases released
   * after about 2 s), then fills it with 10-s leases: a new call is expected to start in about
   * 2 s, and is sure to within the blockers' 10 s.
   */
  async function learntPool(owner: string, clock: ManualClock): Promise<void> {
    const early = await Promise.all([0, 1, 2, 3].map(() => lease(t, owner, { duration: 10 })));
    clock.advance(2_000);
    for (const r of early) await t.call("POST", `/v1/leases/${r.body.id}/release`, { token: owner, body: {} });
    await fillPool(owner, 10);
  }

  it("is a bound on the wait: refused at once when expected to wait longer, else queued and timed out at max_wait", async () => {
    // On a clock the test moves: on real time a stall of 1.6 s while the pool learnt made the
    // expected wait too long for max_wait 4 (503, not 202).
    const clock = new ManualClock();
    t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), {}, { clock });
    const alice = await t.user("alice", "free");
    const owner = await t.user("owner", "pro");
    await learntPool(owner.token, clock);
    // Expected about 2 s, bound 10 s: a caller who will wait 1 s is refused at once...
    const refused = await lease(t, alice.token, { duration: 20, max_wait: 1 });
    const p = expectProblem(refused, 503, "no_gpu_available");
    expect(p).toMatchObject({ reason: "predicted_wait", max_wait_s: 1 });
    expect(p.eta_s).toBeLessThan(p.eta_max_s);
    expect(p.detail).toMatch(/max_wait/);
    // ...one who will wait 4 s is queued with both estimates, and gives up at 4 s (not the 60 s
    // queue timeout) since the blockers in fact hold their whole 10 s.
    const q = await lease(t, alice.token, { duration: 20, max_wait: 4 });
    expect(q.status).toBe(202);
    expect(q.body.eta_s).toBeLessThanOrEqual(4);
    expect(q.body.eta_s).toBeLessThan(q.body.eta_max_s);
    // Its queue timeout fires on real time (4 s from now) and ends it at the clock's time.
    clock.advance(4_000);
    const ended = await waitFor(async () => {
      const r = await get(q.body.id, alice.token);
      return r.body.status !== "queued" && r.body;
    }, 10_000);
    expect(ended).toMatchObject({ status: "failed", problem: { code: "queue_timeout" }, refunded: 20 });
    expect(ended.problem.detail).toMatch(/the limit is 4s/);
    const waited = Date.parse(ended.ended_at) - Date.parse(ended.queued_at);
    expect(waited).toBeGreaterThanOrEqual(3_900);
    expect(waited).toBeLessThan(10_000);
  }, 30_000);

  it("may not exceed the tier's queue timeout, and is validated", async () => {
    const { alice, owner } = await setup({ queue: { timeout: "2s" } });
    await fillPool(owner.token, 30);
    // max_wait 600 is capped at the 2 s queue timeout: still refused for the 30-s wait.
    const r = await lease(t, alice.token, { duration: 20, max_wait: 600 });
    expect(expectProblem(r, 503, "no_gpu_available")).toMatchObject({ reason: "predicted_wait", max_wait_s: 2 });
    const bad = await lease(t, alice.token, { duration: 20, max_wait: -1 });
    expect(expectProblem(bad, 400, "invalid_request").detail).toMatch(/max_wait/);
  });
});

describe("the device API (calls through a node's agent)", () => {
  const GPU = {
    index: 0,
    uuid: "GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff",
    name: "NVIDIA A100",
    memory_mb: 81920,
    slots: 2,
  };

  async function agentPool(queue: Record<string, unknown>) {
    t = await startTestServer({ pool: { simulated: [] }, queue });
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("spaces-app", owner.id);
    const node = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host-1" } });
    const reg = await t.call("POST", "/v1/nodes/register", {
      token: node.body.key,
      body: { devices: [GPU], agent_url: "http://127.0.0.1:7071" },
    });
    expect(reg.status).toBe(200);
    const via = (body: Record<string, unknown>) =>
      t.call("POST", "/v1/leases", { token: app.key, body, headers: { "x-gpupool-node-key": node.body.key } });
    for (let i = 0; i < 2; i++) expect((await via({ duration: 30 })).status).toBe(201);
    return via;
  }

  it("queues as before by default, refuses at once when configured or when the call names max_wait", async () => {
    const via = await agentPool({ timeout: "2s" });
    expect((await via({ duration: 10 })).status).toBe(202);
    const bounded = await via({ duration: 10, max_wait: 1 });
    expect(expectProblem(bounded, 503, "no_gpu_available").reason).toBe("predicted_wait");
    await t.close();
    const configured = await agentPool({ timeout: "2s", predicted_wait_via_agents: true });
    expect(expectProblem(await configured({ duration: 10 }), 503, "no_gpu_available").reason).toBe("predicted_wait");
  });
});
