import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease, quotaOf, sleep, startTestServer } from "./harness.js";

/** Quota admission, the 429/422 problems people read, the window, and operator adjustments. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const DAY_MS = 86_400_000;
const patchUser = (id: string, body: unknown) => t.call("PATCH", `/v1/admin/users/${id}`, { token: ADMIN, body });
const release = (id: string, token: string) => t.call("POST", `/v1/leases/${id}/release`, { token, body: {} });

async function setup(raw: Record<string, unknown> = {}) {
  t = await startTestServer(raw);
  const owner = await t.user("owner", "pro");
  const app = await t.appFor("demo", owner.id);
  return { owner, app };
}

/** Leaves the identity with 1 s used (a short call, released at once). */
async function useOneSecond(token: string, duration: number, ipToken?: string): Promise<void> {
  const a = await lease(t, token, { duration }, ipToken);
  expect(a.status).toBe(201);
  await sleep(5); // held ≥ 1 ms, so ceil(held) = 1 s
  expect((await release(a.body.id, token)).body.charged).toBe(1);
}

describe("429 quota_exceeded", () => {
  it("carries every field, a Retry-After header, and retry_at = when the caller's own call ends", async () => {
    await setup();
    const alice = await t.user("alice", "free");
    await patchUser(alice.id, { quota: 20 });
    const first = await lease(t, alice.token, { duration: 10 });
    const second = await lease(t, alice.token, { duration: 10 });
    expect([first.status, second.status]).toEqual([201, 201]);
    const r = await lease(t, alice.token, { duration: 10 });
    const p = expectProblem(r, 429, "quota_exceeded");
    expect(p).toMatchObject({
      requested: 10,
      left: 0,
      quota: 20,
      used: 0,
      reserved: 20,
      tier: "free",
      identity: `user:${alice.id}`,
      next_step: "wait_for_calls",
    });
    expect(p.resets_at).toBe(new Date(Date.parse(first.body.granted_at) + DAY_MS).toISOString());
    expect(p.retry_at).toBe(first.body.deadline);
    const retryAfter = Number(r.headers["retry-after"]);
    expect(retryAfter).toBeGreaterThanOrEqual(9);
    expect(retryAfter).toBeLessThanOrEqual(10);
    expect(p.detail).toMatch(/10s/);
    expect(p.detail).toMatch(/free/);
    expect(p.detail).toMatch(/in progress/);
    // Nothing was reserved by the refused call.
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 20, left: 0 });
  });

  it("anonymous (an IP viewer): names the tier, both numbers, the reset, and says to sign in", async () => {
    const { app } = await setup();
    const ip = await t.ipToken(app.id, { ip: "203.0.113.9" });
    await useOneSecond(app.key, 120, ip);
    const r = await lease(t, app.key, { duration: 120 }, ip);
    const p = expectProblem(r, 429, "quota_exceeded");
    expect(p).toMatchObject({
      requested: 120,
      left: 119,
      quota: 120,
      used: 1,
      reserved: 0,
      tier: "anonymous",
      identity: "ip:203.0.113.9",
      next_step: "sign_in",
    });
    expect(p.retry_at).toBe(p.resets_at);
    expect(Number(r.headers["retry-after"])).toBeGreaterThan(86_000);
    expect(p.detail).toMatch(/anonymous/);
    expect(p.detail).toMatch(/2m/);
    expect(p.detail).toMatch(/1m 59s/);
    expect(p.detail).toMatch(/resets at/);
    expect(p.detail).toMatch(/Sign in/);
  });

  it("free: names the pro tier as the next step", async () => {
    await setup();
    const bob = await t.user("bob", "free");
    await patchUser(bob.id, { quota: 2 });
    await useOneSecond(bob.token, 2);
    const p = expectProblem(await lease(t, bob.token, { duration: 2 }), 429, "quota_exceeded");
    expect(p).toMatchObject({ tier: "free", left: 1, quota: 2, used: 1, next_step: "upgrade" });
    expect(p.detail).toMatch(/free quota/);
    expect(p.detail).toMatch(/The pro tier gets 25m/);
  });

  it("pro: gives the window reset time and says credits do not extend the quota", async () => {
    await setup();
    const carol = await t.user("carol", "pro");
    await patchUser(carol.id, { quota: 2 });
    await useOneSecond(carol.token, 2);
    const r = await lease(t, carol.token, { duration: 2 });
    const p = expectProblem(r, 429, "quota_exceeded");
    expect(p).toMatchObject({ tier: "pro", next_step: "wait_for_reset" });
    expect(p.detail).toMatch(/pro quota/);
    expect(p.detail).toMatch(/resets at \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    expect(p.detail).toMatch(/Credits do not extend/);
    expect(r.headers["retry-after"]).toBeDefined();
  });

  it("an app calling without X-IP-Token is told it was charged itself, and to forward the viewer's token", async () => {
    const { app } = await setup();
    await useOneSecond(app.key, 120);
    const p = expectProblem(await lease(t, app.key, { duration: 120 }), 429, "quota_exceeded");
    expect(p).toMatchObject({ identity: `app:${app.id}`, tier: "anonymous", next_step: "forward_identity" });
    expect(p.detail).toMatch(/X-IP-Token/);
  });

  it("always carries Retry-After and retry_at, even when the identity's only calls in flight are queued", async () => {
    const { owner } = await setup();
    for (let i = 0; i < 4; i++) expect((await lease(t, owner.token, { duration: 50 })).status).toBe(201);
    const dave = await t.user("dave", "free");
    await patchUser(dave.id, { quota: 20 });
    expect((await lease(t, dave.token, { duration: 10 })).status).toBe(202);
    expect((await lease(t, dave.token, { duration: 10 })).status).toBe(202);
    const r = await lease(t, dave.token, { duration: 10 });
    const p = expectProblem(r, 429, "quota_exceeded");
    expect(p.retry_at).not.toBeNull();
    expect(Number(r.headers["retry-after"])).toBeGreaterThan(0);
  });
});

describe("422 duration_too_long", () => {
  it("refuses a duration over the tier's max_duration, naming it", async () => {
    const { app } = await setup();
    const alice = await t.user("alice", "free");
    const p = expectProblem(await lease(t, alice.token, { duration: 121 }), 422, "duration_too_long");
    expect(p).toMatchObject({ duration: 121, max_duration: 120, tier: "free", identity: `user:${alice.id}` });
    expect(p.detail).toMatch(/at most 2m/);
    const anon = expectProblem(await lease(t, app.key, { duration: 300 }), 422, "duration_too_long");
    expect(anon).toMatchObject({ max_duration: 120, tier: "anonymous", identity: `app:${app.id}` });
    const carol = await t.user("carol", "pro");
    expect((await lease(t, carol.token, { duration: 300 })).status).toBe(201);
    expect(expectProblem(await lease(t, carol.token, { duration: 301 }), 422, "duration_too_long").max_duration).toBe(
      300,
    );
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 0, reserved: 0, left: 210, runs: 0 });
  });

  it("refuses a call whose cost exceeds the whole quota (xlarge 120 s = 240 s > 210 s)", async () => {
    await setup();
    const alice = await t.user("alice", "free");
    const p = expectProblem(await lease(t, alice.token, { duration: 120, size: "xlarge" }), 422, "duration_too_long");
    expect(p).toMatchObject({ duration: 120, max_duration: 120, cost: 2, quota: 210, tier: "free" });
    expect(p.detail).toMatch(/more than the whole free quota/);
    expect((await lease(t, alice.token, { duration: 105, size: "xlarge" })).status).toBe(201);
  });
});

describe("the quota window", () => {
  it("starts at the first grant (not at admission) and resets exactly 24 h later", async () => {
    const { owner } = await setup();
    const alice = await t.user("alice", "free");
    const before = await quotaOf(t, alice.token);
    expect(before).toMatchObject({
      window_started_at: null,
      resets_at: null,
      used: 0,
      reserved: 0,
      left: 210,
      window: 86_400,
    });
    const blockers = [];
    for (let i = 0; i < 4; i++) blockers.push((await lease(t, owner.token, { duration: 50 })).body.id as string);
    const q = await lease(t, alice.token, { duration: 10 });
    expect(q.status).toBe(202);
    expect(await quotaOf(t, alice.token)).toMatchObject({ window_started_at: null, resets_at: null, reserved: 10 });
    await new Promise((r) => setTimeout(r, 50));
    await release(blockers[0]!, owner.token);
    const granted = (await t.call("GET", `/v1/leases/${q.body.id}`, { token: alice.token })).body;
    expect(granted.status).toBe("active");
    const after = await quotaOf(t, alice.token);
    expect(after.window_started_at).toBe(granted.granted_at);
    expect(after.resets_at).toBe(new Date(Date.parse(granted.granted_at) + DAY_MS).toISOString());
    expect(Date.parse(after.window_started_at)).toBeGreaterThan(Date.parse(q.body.queued_at));
    // Later grants do not move it.
    await release(q.body.id, alice.token);
    await new Promise((r) => setTimeout(r, 20));
    const again = await lease(t, alice.token, { duration: 5 });
    expect(again.status).toBe(201);
    expect((await quotaOf(t, alice.token)).resets_at).toBe(after.resets_at);
  });
});

describe("GET /v1/quota", () => {
  it("for a user token: that user, with every field", async () => {
    await setup();
    const alice = await t.user("alice", "free");
    const q = await quotaOf(t, alice.token);
    expect(q).toEqual({
      identity: { kind: "user", id: alice.id, tier: "free" },
      quota: 210,
      used: 0,
      reserved: 0,
      left: 210,
      bonus: 0,
      window: 86_400,
      window_started_at: null,
      resets_at: null,
      priority: 2,
      max_duration: 120,
      runs: 0,
      max_runs: null,
      // Without `billing:` a user still has a (empty) wallet, and overage says why it does not engage.
      credits: {
        balance_micros: 0,
        held_micros: 0,
        available_micros: 0,
        currency: "USD",
        display: { balance: "$0.00", held: "$0.00", available: "$0.00" },
      },
      overage: expect.objectContaining({ available: false, enabled: false, blocked_by: "operator_disabled" }),
    });
  });

  it("for an app key + X-IP-Token: the identity in the token; without one: the app", async () => {
    const { app } = await setup();
    const alice = await t.user("alice", "free");
    const forAlice = await t.ipToken(app.id, { user: alice.id });
    expect((await lease(t, app.key, { duration: 7 }, forAlice)).status).toBe(201);
    expect(await quotaOf(t, app.key, forAlice)).toMatchObject({
      identity: { kind: "user", id: alice.id, tier: "free" },
      reserved: 7,
      left: 203,
    });
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 7 });
    const forIp = await t.ipToken(app.id, { ip: "198.51.100.4" });
    expect(await quotaOf(t, app.key, forIp)).toMatchObject({
      identity: { kind: "ip", id: "198.51.100.4", tier: "anonymous" },
      quota: 120,
      reserved: 0,
    });
    expect(await quotaOf(t, app.key)).toMatchObject({
      identity: { kind: "app", id: app.id, tier: "anonymous" },
      quota: 120,
      reserved: 0,
    });
  });

  it("refuses node and edge keys, and no credentials", async () => {
    await setup();
    const node = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host-1" } });
    expectProblem(await t.call("GET", "/v1/quota", { token: node.body.key }), 403, "forbidden");
    expectProblem(await t.call("GET", "/v1/quota"), 401, "unauthorized");
  });
});

describe("operator adjustments: PATCH /v1/admin/users/:id", () => {
  it("sets and clears a quota override, adds bonus seconds, changes the tier", async () => {
    await setup();
    const alice = await t.user("alice", "free");
    const set = await patchUser(alice.id, { quota: 30 });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ id: alice.id, tier: "free", quota_override: 30, quota: { quota: 30, left: 30 } });
    expect(await quotaOf(t, alice.token)).toMatchObject({ quota: 30, left: 30 });
    expectProblem(await lease(t, alice.token, { duration: 31 }), 422, "duration_too_long");

    const bonus = await patchUser(alice.id, { bonus: 10 });
    expect(bonus.body.quota).toMatchObject({ quota: 40, bonus: 10, left: 40 });
    expect((await lease(t, alice.token, { duration: 35 })).status).toBe(201);
    expect(await quotaOf(t, alice.token)).toMatchObject({ quota: 40, reserved: 35, left: 5 });

    const cleared = await patchUser(alice.id, { quota: null });
    expect(cleared.body).toMatchObject({ quota_override: null, quota: { quota: 220, left: 185 } });

    const pro = await patchUser(alice.id, { tier: "pro" });
    expect(pro.body).toMatchObject({
      tier: "pro",
      quota: { identity: { tier: "pro" }, quota: 1510, max_duration: 300 },
    });
    expect((await t.call("GET", `/v1/admin/users/${alice.id}`, { token: ADMIN })).body).toMatchObject({
      tier: "pro",
      quota_override: null,
    });
    // Her very next call is admitted as pro (a free call may last at most 120 s).
    expect(await lease(t, alice.token, { duration: 250 })).toMatchObject({
      status: 201,
      body: { identity: { tier: "pro" } },
    });
    // A name works as the reference too.
    expect((await patchUser("alice", { quota: 50 })).body.quota_override).toBe(50);
  });

  it("refuses unknown users, unknown tiers and empty patches", async () => {
    await setup();
    const alice = await t.user("alice", "free");
    expectProblem(await patchUser("nobody", { quota: 1 }), 404, "not_found");
    const bad = expectProblem(await patchUser(alice.id, { tier: "platinum" }), 400, "invalid_request");
    expect(bad.errors).toEqual([{ field: "tier", message: expect.any(String) }]);
    expectProblem(await patchUser(alice.id, {}), 400, "invalid_request");
    expectProblem(await patchUser(alice.id, { quota: -5 }), 400, "invalid_request");
    expect(await quotaOf(t, alice.token)).toMatchObject({ quota: 210, identity: { tier: "free" } });
  });
});

describe("runs limit (optional per tier)", () => {
  it("429 runs_exceeded with Retry-After after max_runs calls in a window", async () => {
    const { app } = await setup({
      quota: {
        tiers: { anonymous: { quota: "2m", max_runs: 2 }, pro: { quota: "25m", priority: 3, max_duration: "300s" } },
      },
    });
    const a = await lease(t, app.key, { duration: 5 });
    const b = await lease(t, app.key, { duration: 5 });
    expect([a.status, b.status]).toEqual([201, 201]);
    const r = await lease(t, app.key, { duration: 5 });
    const p = expectProblem(r, 429, "runs_exceeded");
    expect(p).toMatchObject({ runs: 2, max_runs: 2, tier: "anonymous", identity: `app:${app.id}` });
    expect(Number(r.headers["retry-after"])).toBeGreaterThan(86_000);
  });
});
