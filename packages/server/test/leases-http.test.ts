import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ManualClock } from "./billing-fixture.js";
import { ADMIN, expectProblem, lease, quotaOf, serveAt, startTestServer, waitFor } from "./harness.js";

/**
 * The lease lifecycle over HTTP, on the default pool (sim-0: 2 simulated GPUs × 2 slots) and the
 * The default tiers (free: 210 s quota, 120 s max per call).
 */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

/** `clock`: time as the test sets it (the server's timers still run on real time; see ManualClock). */
async function setup(raw: Record<string, unknown> = {}, clock?: ManualClock) {
  t = clock ? await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), raw, { clock }) : await startTestServer(raw);
  const alice = await t.user("alice", "free");
  const owner = await t.user("owner", "pro");
  const app = await t.appFor("demo", owner.id);
  return { alice, owner, app };
}

/** Fills all 4 slots with leases charged to `token`'s identity; returns their ids. */
async function fillPool(token: string, duration = 30): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await lease(t, token, { duration });
    expect(r.status).toBe(201);
    ids.push(r.body.id);
  }
  return ids;
}

const get = (id: string, token: string) => t.call("GET", `/v1/leases/${id}`, { token });
const release = (id: string, token: string, body: unknown = {}) =>
  t.call("POST", `/v1/leases/${id}/release`, { token, body });

describe("POST /v1/leases: grant", () => {
  it("grants now with 201, a device, a deadline, the reservation and the quota after it", async () => {
    const { alice } = await setup();
    const r = await lease(t, alice.token, { duration: 30, size: "large" });
    expect(r.status).toBe(201);
    const l = r.body;
    expect(r.headers["location"]).toBe(`/v1/leases/${l.id}`);
    expect(l).toMatchObject({
      status: "active",
      app: null,
      identity: { kind: "user", id: alice.id, tier: "free" },
      size: "large",
      duration: 30,
      reserved: 30,
      cost: 1,
      charged: 0,
      position: null,
    });
    expect(l.device).toMatchObject({ node: "sim-0", name: "Simulated H200", slots: [expect.any(Number)] });
    expect([0, 1]).toContain(l.device.index);
    expect(l.device.uuid).toMatch(/^GPU-[0-9a-f-]{36}$/);
    expect(Date.parse(l.deadline) - Date.parse(l.granted_at)).toBe(30_000);
    expect(Math.abs(Date.parse(l.granted_at) - Date.now())).toBeLessThan(5_000);
    expect(l.quota).toMatchObject({ quota: 210, used: 0, reserved: 30, left: 180 });
  });

  it("uses the default duration (60 s) and size (large) for an empty body", async () => {
    const { alice } = await setup();
    const r = await t.call("POST", "/v1/leases", { token: alice.token });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ duration: 60, size: "large", reserved: 60 });
  });

  it("xlarge takes both slots of one GPU and reserves duration × 2", async () => {
    const { alice, owner } = await setup();
    const small = await lease(t, owner.token, { duration: 10 });
    expect(small.status).toBe(201);
    const big = await lease(t, alice.token, { duration: 10, size: "xlarge" });
    expect(big.status).toBe(201);
    expect(big.body).toMatchObject({ size: "xlarge", cost: 2, reserved: 20 });
    expect(big.body.device.slots).toEqual([0, 1]);
    expect(big.body.device.index).not.toBe(small.body.device.index);
    // One slot left (on the first GPU): a large fits, a second xlarge must wait.
    const other = await lease(t, owner.token, { duration: 10 });
    expect(other.status).toBe(201);
    expect(other.body.device.index).toBe(small.body.device.index);
    const wait = await lease(t, owner.token, { duration: 10, size: "xlarge" });
    expect(wait.status).toBe(202);
  });
});

describe("release and charging", () => {
  // These hold leases for a few milliseconds of a clock the test moves: on real time a stall of
  // 1 s between grant and release made 1 s started into 2 s charged.
  it("charges min(reserved, ceil(held_s) × cost) and refunds the rest; the quota shows it", async () => {
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 30 });
    clock.advance(5); // held for at least a millisecond: 1 s started is 1 s charged
    const r = await release(a.body.id, alice.token);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ id: a.body.id, status: "released", charged: 1, refunded: 29 });
    expect(r.body.held_ms).toBe(5);
    expect(r.body.quota).toMatchObject({ used: 1, reserved: 0, left: 209 });
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 1, reserved: 0, left: 209 });
  });

  it("rounds held time up to whole seconds, times the size's cost", async () => {
    // Held exactly 1.1 s of the test's clock: on real time a stall of 0.9 s during the hold made it
    // 2 s started, charged 6.
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 30, size: "xlarge" });
    clock.advance(1_100);
    const r = await release(a.body.id, alice.token);
    expect(r.body.held_ms).toBe(1_100);
    const expected = Math.min(60, Math.ceil(r.body.held_ms / 1000) * 2);
    expect(r.body).toMatchObject({ status: "released", charged: expected, refunded: 60 - expected });
    expect(expected).toBe(4);
    expect(r.body.quota).toMatchObject({ used: 4, reserved: 0 });
  });

  it("never charges more than the reservation", async () => {
    // Time as the test sets it: on a busy machine 100 ms of real sleep could outlast the 0.4 s
    // reservation, and the lease would expire before its release (a failure seen in CI).
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 0.4 });
    clock.advance(100);
    const r = await release(a.body.id, alice.token);
    expect(r.body).toMatchObject({ status: "released", charged: 0.4, refunded: 0 });
  });

  it("releasing twice is a no-op that returns the same result", async () => {
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 30 });
    clock.advance(5);
    const first = await release(a.body.id, alice.token);
    clock.advance(30);
    const second = await release(a.body.id, alice.token, { failed: true });
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 1, reserved: 0 });
  });

  it("DELETE on an active lease releases it", async () => {
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 30 });
    clock.advance(5);
    const r = await t.call("DELETE", `/v1/leases/${a.body.id}`, { token: alice.token });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: "released", charged: 1, refunded: 29 });
    expect((await get(a.body.id, alice.token)).body.status).toBe("released");
  });

  it("release with failed: true is recorded, and charged the same way", async () => {
    const clock = new ManualClock();
    const { alice } = await setup({}, clock);
    const a = await lease(t, alice.token, { duration: 30 });
    clock.advance(5);
    const r = await release(a.body.id, alice.token, { failed: true });
    expect(r.body).toMatchObject({ status: "released", charged: 1 });
    expect((await get(a.body.id, alice.token)).body.failed).toBe(true);
  });

  it("a released slot is free again", async () => {
    const { alice, owner } = await setup();
    const ids = await fillPool(owner.token);
    await release(ids[2]!, owner.token);
    const r = await lease(t, alice.token, { duration: 5 });
    expect(r.status).toBe(201);
  });
});

describe("queueing", () => {
  it("pool full → 202 queued with position and reason node; granted when a slot frees", async () => {
    const { alice, owner } = await setup();
    const blockers = await fillPool(owner.token);
    const q1 = await lease(t, alice.token, { duration: 10 });
    expect(q1.status).toBe(202);
    expect(q1.body).toMatchObject({
      status: "queued",
      position: 1,
      reason: "node",
      device: null,
      granted_at: null,
      deadline: null,
      reserved: 10,
    });
    expect(q1.body.quota).toMatchObject({ reserved: 10, left: 200, resets_at: null });
    const q2 = await lease(t, alice.token, { duration: 10 });
    expect(q2.body).toMatchObject({ status: "queued", position: 2, reason: "node" });

    await release(blockers[1]!, owner.token);
    const now = await get(q1.body.id, alice.token);
    expect(now.body).toMatchObject({ status: "active", position: null });
    expect(now.body.device).not.toBeNull();
    expect(Date.parse(now.body.deadline) - Date.parse(now.body.granted_at)).toBe(10_000);
    expect((await get(q2.body.id, alice.token)).body).toMatchObject({ status: "queued", position: 1 });
  });

  it("the per-app concurrency limit queues with reason concurrency", async () => {
    const { owner } = await setup();
    const limited = await t.appFor("limited", owner.id, 1);
    const a = await lease(t, limited.key, { duration: 10 });
    expect(a.status).toBe(201);
    const b = await lease(t, limited.key, { duration: 10 });
    expect(b.status).toBe(202);
    expect(b.body).toMatchObject({ status: "queued", reason: "concurrency" });
    await release(a.body.id, limited.key);
    expect((await get(b.body.id, limited.key)).body.status).toBe("active");
  });

  it("releasing a queued lease cancels it and refunds everything", async () => {
    const { alice, owner } = await setup();
    await fillPool(owner.token);
    const before = await quotaOf(t, alice.token);
    const q = await lease(t, alice.token, { duration: 40 });
    expect(q.status).toBe(202);
    const r = await release(q.body.id, alice.token);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: "cancelled", charged: 0, refunded: 40 });
    expect(await quotaOf(t, alice.token)).toMatchObject({
      used: before.used,
      reserved: before.reserved,
      left: before.left,
      resets_at: null,
    });
    const d = await t.call("DELETE", `/v1/leases/${q.body.id}`, { token: alice.token });
    expect(d.body).toMatchObject({ status: "cancelled", charged: 0, refunded: 40 });
  });

  it("queue: false and no free slot → 503 no_gpu_available, nothing reserved", async () => {
    const { alice, owner } = await setup();
    await fillPool(owner.token);
    const r = await lease(t, alice.token, { duration: 10, queue: false });
    expectProblem(r, 503, "no_gpu_available");
    expect(r.body.reason).toBe("queue_disabled");
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 0, reserved: 0, left: 210 });
    const mine = await t.call("GET", "/v1/leases", { token: alice.token });
    expect(mine.body.leases).toEqual([]);
  });

  it("queue timeout → failed with queue_timeout, reservation refunded, nothing charged", async () => {
    // Queued rather than refused at once (it is expected to wait longer than 500 ms).
    const { alice, owner } = await setup({ queue: { timeout: "500ms", predicted_wait: false } });
    await fillPool(owner.token);
    const q = await lease(t, alice.token, { duration: 20 });
    expect(q.status).toBe(202);
    const ended = await waitFor(async () => {
      const r = await get(q.body.id, alice.token);
      return r.body.status !== "queued" && r.body;
    });
    expect(ended).toMatchObject({ status: "failed", charged: 0, refunded: 20, granted_at: null, device: null });
    expect(ended.problem.code).toBe("queue_timeout");
    expect(Date.parse(ended.ended_at) - Date.parse(ended.queued_at)).toBeGreaterThanOrEqual(450);
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 0, reserved: 0, left: 210 });
  });

  it("time spent queued is never charged", async () => {
    // Queued 1 s and held 5 ms of a clock the test moves: on real time a stall of 1 s between
    // the grant and the release made it held 1 s.
    const clock = new ManualClock();
    const { alice, owner } = await setup({}, clock);
    const blockers = await fillPool(owner.token);
    const q = await lease(t, alice.token, { duration: 30 });
    expect(q.status).toBe(202);
    clock.advance(1_000);
    await release(blockers[0]!, owner.token);
    clock.advance(5);
    const r = await release(q.body.id, alice.token);
    expect(r.body.status).toBe("released");
    expect(r.body.held_ms).toBe(5);
    expect(r.body.charged).toBe(Math.ceil(r.body.held_ms / 1000));
    expect(r.body.charged).toBeLessThanOrEqual(1);
    expect(r.body.refunded).toBe(30 - r.body.charged);
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: r.body.charged, reserved: 0 });
  });
});

describe("expiry", () => {
  it("a lease that passes its deadline expires, frees its slot and is charged its full reservation", async () => {
    const { alice } = await setup();
    const a = await lease(t, alice.token, { duration: 0.5, size: "xlarge" });
    expect(a.status).toBe(201);
    const ended = await waitFor(async () => {
      const r = await get(a.body.id, alice.token);
      return r.body.status !== "active" && r.body;
    });
    expect(ended).toMatchObject({ status: "expired", charged: 1, refunded: 0 });
    expect(Date.parse(ended.ended_at)).toBeGreaterThanOrEqual(Date.parse(a.body.deadline));
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 1, reserved: 0, left: 209 });
    // Releasing after expiry changes nothing.
    const r = await release(a.body.id, alice.token);
    expect(r.body).toMatchObject({ status: "expired", charged: 1 });
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.slots).toEqual({ total: 4, busy: 0 });
  });

  it("expiry grants the next queued lease", async () => {
    // The four leases last 0.3 s of the test's clock: on real time they could expire before the
    // fifth call was admitted (a stall of 0.3 s), which then got a GPU at once. Their deadline
    // timers fire on real time, find the deadline not yet passed and look again later, until the
    // clock is moved past it.
    const clock = new ManualClock();
    const { alice, owner } = await setup({}, clock);
    for (let i = 0; i < 4; i++) expect((await lease(t, owner.token, { duration: 0.3 })).status).toBe(201);
    const q = await lease(t, alice.token, { duration: 10 });
    expect(q.status).toBe(202);
    clock.advance(300);
    const granted = await waitFor(async () => {
      const r = await get(q.body.id, alice.token);
      return r.body.status === "active" && r.body;
    });
    expect(granted.device).not.toBeNull();
  });
});

describe("visibility", () => {
  it("a lease is visible to its app, the user it is charged to, and the admin — not to another app", async () => {
    const { alice, owner, app } = await setup();
    const other = await t.appFor("other", owner.id);
    const tok = await t.ipToken(app.id, { user: alice.id });
    const l = await lease(t, app.key, { duration: 5 }, tok);
    expect(l.status).toBe(201);
    expect((await get(l.body.id, app.key)).status).toBe(200);
    expect((await get(l.body.id, alice.token)).status).toBe(200);
    expect((await get(l.body.id, ADMIN)).status).toBe(200);
    expectProblem(await get(l.body.id, other.key), 404, "not_found");
    expectProblem(await release(l.body.id, other.key), 404, "not_found");
    expectProblem(await get("ls_doesnotexist", app.key), 404, "not_found");
    expect((await get(l.body.id, app.key)).body.status).toBe("active");
    const listed = await t.call("GET", "/v1/leases?status=active", { token: app.key });
    expect(listed.body.leases.map((x: { id: string }) => x.id)).toEqual([l.body.id]);
    expect((await t.call("GET", "/v1/leases", { token: other.key })).body.leases).toEqual([]);
  });
});
