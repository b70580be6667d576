import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "./billing-fixture.js";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease, serveAt, startTestServer, waitFor } from "./harness.js";
import { closeStreams, stream } from "./sse-reader.js";

/** What the dashboard's views read: live streams over a real socket, the queue, refusals, the audit log, app stats. */

let t: TestServer;
afterEach(async () => {
  closeStreams();
  await t?.close();
});

/** One slot in the pool, and calls that wait for it rather than being refused for the predicted wait. */
const ONE_SLOT = {
  pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] },
  queue: { predicted_wait: false },
  server: { port: 0 },
};

/** A poll interval no test outlives: what a stream shows, it was told. */
const HOUR = "1h";

const release = (id: string, token: string) => t.call("POST", `/v1/leases/${id}/release`, { token, body: {} });

describe("live streams", () => {
  it("GET /v1/me/events: the user's meter on connect, then as a call is granted and released (bearer or cookie)", async () => {
    t = await startTestServer({ server: { port: 0 } });
    const url = await t.server.listen();
    const alice = await t.user("alice", "free");
    const signedIn = await t.call("POST", "/v1/dashboard/session", { body: { token: alice.token } });
    const cookie = String(signedIn.headers["set-cookie"]).split(";")[0]!;
    const byToken = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${alice.token}` });
    const byCookie = await stream(`${url}/v1/me/events`, { cookie });
    for (const s of [byToken, byCookie]) {
      const first = await s.until("me", () => true);
      expect(first.user.id).toBe(alice.id);
      expect(first.quota.reserved).toBe(0);
    }
    const granted = await lease(t, alice.token, { duration: 30 });
    expect(granted.status).toBe(201);
    for (const s of [byToken, byCookie]) await s.until("me", (m) => m.quota.reserved === 30);
    expect((await release(granted.body.id, alice.token)).status).toBe(200);
    for (const s of [byToken, byCookie]) {
      const after = await s.until("me", (m) => m.quota.reserved === 0);
      expect(after.quota.used).toBeGreaterThan(0);
    }
    // Only a user's own meter: the admin token has none; nobody else's stream opens without credentials.
    expectProblem(await t.call("GET", "/v1/me/events", { token: ADMIN }), 403, "forbidden");
    expectProblem(await t.call("GET", "/v1/me/events"), 401, "unauthorized");
  });

  it("GET /v1/admin/pool/events: a granted lease appears in its slot, the queue's depth follows, and both clear on release", async () => {
    t = await startTestServer(ONE_SLOT);
    const url = await t.server.listen();
    const alice = await t.user("alice", "free");
    const bob = await t.user("bob", "free");
    const live = await stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    await live.until("pool", (p) => p.active.length === 0 && p.slots.total === 1);
    await live.until("queue", (q) => q.depth === 0);

    const first = await lease(t, alice.token, { duration: 60 });
    expect(first.status).toBe(201);
    const held = await live.until("pool", (p) => p.active.some((a: any) => a.id === first.body.id));
    expect(held.devices[0].slots).toEqual([first.body.id]);
    expect(held.active[0]).toMatchObject({ identity: `user:${alice.id}` });

    const second = await lease(t, bob.token, { duration: 60 });
    expect(second.status).toBe(202);
    const waiting = await live.until("queue", (q) => q.depth === 1);
    expect(waiting.tiers.find((x: any) => x.tier === "free")).toMatchObject({ depth: 1 });
    expect(waiting.oldest_wait_s).toBeGreaterThanOrEqual(0);
    const queue = await t.call("GET", "/v1/admin/queue", { token: ADMIN });
    expect(queue.status).toBe(200);
    expect(queue.body).toMatchObject({ leader: true, depth: 1 });

    expect((await release(first.body.id, alice.token)).status).toBe(200);
    await live.until("pool", (p) => p.active.length === 1 && p.active[0].id === second.body.id);
    await live.until("queue", (q) => q.depth === 0);
    expect((await release(second.body.id, bob.token)).status).toBe(200);
    await live.until("pool", (p) => p.active.length === 0 && p.devices[0].slots[0] === null);
    // bob waited, then was granted: the last hour's waits count him once his call ended (they are
    // read again every few seconds).
    const after = await waitFor(async () => {
      const q = await t.call("GET", "/v1/admin/queue", { token: ADMIN });
      return q.body.last_hour.granted === 2 ? q : null;
    }, 15_000);
    expect(after.body.last_hour.wait_p95_s).toBeGreaterThan(0);
    expectProblem(await t.call("GET", "/v1/admin/pool/events", { token: alice.token }), 403, "forbidden");
  });

  it("changes are announced, not polled for: with the streams' poll an hour long, a call granted at once, one queued, and the releases all reach the meter and the pool", async () => {
    t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), { ...ONE_SLOT, dashboard: { live_poll: HOUR } });
    const url = await t.server.listen();
    const alice = await t.user("alice", "free");
    const bob = await t.user("bob", "free");
    const meter = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${alice.token}` });
    const bobs = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${bob.token}` });
    const live = await stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    await meter.until("me", (m) => m.quota.reserved === 0);
    await bobs.until("me", (m) => m.quota.reserved === 0);
    await live.until("queue", (q) => q.depth === 0);

    // Granted in its own admission: no other lease changed, and no poll comes within the hour.
    const first = await lease(t, alice.token, { duration: 30 });
    expect(first.status).toBe(201);
    await meter.until("me", (m) => m.quota.reserved === 30);
    await live.until("pool", (p) => p.active.some((a: any) => a.id === first.body.id));

    // Queued in its own admission: the queue and bob's meter (the wait is reserved) change.
    const second = await lease(t, bob.token, { duration: 20 });
    expect(second.status).toBe(202);
    await live.until("queue", (q) => q.depth === 1);
    await bobs.until("me", (m) => m.quota.reserved === 20);

    // Released: bob's call is granted from the queue.
    expect((await release(first.body.id, alice.token)).status).toBe(200);
    await meter.until("me", (m) => m.quota.reserved === 0 && m.quota.used > 0);
    await live.until("pool", (p) => p.active.length === 1 && p.active[0].id === second.body.id);
    await live.until("queue", (q) => q.depth === 0);
    expect((await release(second.body.id, bob.token)).status).toBe(200);
    await bobs.until("me", (m) => m.quota.reserved === 0 && m.quota.used > 0);
    await live.until("pool", (p) => p.active.length === 0);
  });

  it("what no lease event announces (an operator's quota change) reaches a stream at its next look: every dashboard.live_poll", async () => {
    const quotaChangeShown = async (livePoll: string, waitMs: number): Promise<boolean> => {
      t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), {
        ...ONE_SLOT,
        dashboard: { live_poll: livePoll },
      });
      const url = await t.server.listen();
      const alice = await t.user("alice", "free");
      const meter = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${alice.token}` });
      await meter.until("me", (m) => m.quota.quota === 210);
      const patched = await t.call("PATCH", `/v1/admin/users/${alice.id}`, { token: ADMIN, body: { quota: 300 } });
      expect(patched.status).toBe(200);
      const shown = await Promise.race([
        meter.until("me", (m) => m.quota.quota === 300).then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), waitMs)),
      ]);
      closeStreams();
      await t.close();
      return shown;
    };
    // A look every 200 ms shows it (waited for up to 10 s: a stalled machine still gets there)…
    expect(await quotaChangeShown("200ms", 10_000)).toBe(true);
    // …one an hour long does not, within 2 s (twice the default look).
    expect(await quotaChangeShown("1h", 2_000)).toBe(false);
  });
});

describe("reads", () => {
  it("the audit log records a credits grant, a tier change and sessions revoked, with how the operator signed in", async () => {
    t = await startTestServer();
    const bob = await t.user("bob", "free");
    const grant = await t.call("POST", `/v1/admin/users/${bob.id}/credits`, {
      token: ADMIN,
      body: { amount: "2.50", category: "promotional", idempotency_key: "welcome-bob" },
    });
    expect(grant.status).toBe(201);
    // The same key again adds nothing, and logs nothing.
    expect(
      (
        await t.call("POST", `/v1/admin/users/${bob.id}/credits`, {
          token: ADMIN,
          body: { amount: "2.50", category: "promotional", idempotency_key: "welcome-bob" },
        })
      ).status,
    ).toBe(200);
    const operator = await t.call("POST", "/v1/dashboard/session", { body: { token: ADMIN } });
    const cookie = String(operator.headers["set-cookie"]).split(";")[0]!;
    const patched = await t.call("PATCH", `/v1/admin/users/${bob.id}`, {
      headers: { cookie, "x-csrf-token": operator.body.csrf_token },
      body: { tier: "pro", quota: 600 },
    });
    expect(patched.status).toBe(200);
    expect((await t.call("DELETE", `/v1/admin/users/${bob.id}/sessions`, { token: ADMIN })).status).toBe(200);

    const log = await t.call("GET", "/v1/admin/audit", { token: ADMIN });
    expect(log.status).toBe(200);
    expect(log.body.entries.map((e: any) => [e.action, e.target, e.actor])).toEqual([
      ["sessions.revoke", bob.id, "admin_token"],
      ["user.update", bob.id, "dashboard"],
      ["credits.grant", bob.id, "admin_token"],
    ]);
    expect(log.body.entries[1].detail).toEqual({
      tier: { from: "free", to: "pro" },
      quota_override_s: { from: null, to: 600 },
    });
    expect(log.body.entries[2].detail).toMatchObject({
      grant: grant.body.id,
      amount_micros: 2_500_000,
      category: "promotional",
    });
    const page = await t.call("GET", "/v1/admin/audit?limit=2", { token: ADMIN });
    expect(page.body.entries).toHaveLength(2);
    const rest = await t.call("GET", `/v1/admin/audit?limit=2&cursor=${page.body.next_cursor}`, { token: ADMIN });
    expect(rest.body.entries.map((e: any) => e.action)).toEqual(["credits.grant"]);
    expect(rest.body.next_cursor).toBeNull();
    expectProblem(await t.call("GET", "/v1/admin/audit", { token: bob.token }), 403, "forbidden");
  });

  it("apps/stats: per app, calls, GPU time, refusals, waits and the duration advisor (p95 of actual use, rounded up to 5 s)", async () => {
    const clock = new ManualClock();
    t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-stats-")), {}, { clock });
    const owner = await t.user("owner", "pro");
    const other = await t.user("other", "pro");
    const app = await t.appFor("sdxl", owner.id);
    await t.appFor("elsewhere", other.id);
    // Ten calls asking for 60 s that hold the GPU 8 to 17 s: the advisor says 20 s. (For the owner,
    // whose pro quota covers them all.)
    const viewer = await t.ipToken(app.id, { user: owner.id });
    for (const heldS of [8, 9, 10, 11, 12, 13, 14, 15, 16, 17]) {
      const l = await lease(t, app.key, { duration: 60 }, viewer);
      expect(l.status).toBe(201);
      clock.advance(heldS * 1000);
      expect((await release(l.body.id, app.key)).status).toBe(200);
    }
    const stats = await t.call("GET", "/v1/apps/stats", { token: owner.token });
    expect(stats.status).toBe(200);
    expect(stats.body.apps).toHaveLength(1);
    const s = stats.body.apps[0];
    expect(s).toMatchObject({ app: app.id, name: "sdxl", owner: owner.id, calls: 10, granted: 10, gpu_s: 125 });
    expect(s.requested).toEqual({ p50_s: 60, p95_s: 60 });
    expect(s.held).toEqual({ p50_s: 12, p95_s: 17 });
    expect(s.wait).toEqual({ p50_s: 0, p95_s: 0 });
    expect(s.suggested_duration_s).toBe(20);
    // The operator sees every app; an app with no calls has no suggestion.
    const all = await t.call("GET", "/v1/apps/stats", { token: ADMIN });
    expect(all.body.apps.map((a: any) => [a.name, a.suggested_duration_s])).toEqual([
      ["elsewhere", null],
      ["sdxl", 20],
    ]);
    expectProblem(await t.call("GET", "/v1/apps/stats", { token: app.key }), 403, "forbidden");
  });

  it("refusals per hour: admissions refused by code, in the hour they happened", async () => {
    const clock = new ManualClock();
    t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-refusals-")), {}, { clock });
    const bob = await t.user("bob", "free");
    // bob's free quota is 210 s: a 120 s call fits, a second does not.
    const first = await lease(t, bob.token, { duration: 120 });
    expect(first.status).toBe(201);
    expectProblem(await lease(t, bob.token, { duration: 120 }), 429, "quota_exceeded");
    expectProblem(await lease(t, bob.token, { duration: 120 }), 429, "quota_exceeded");
    const r = await t.call("GET", "/v1/admin/refusals?hours=3", { token: ADMIN });
    expect(r.status).toBe(200);
    expect(r.body.hours).toHaveLength(3);
    expect(r.body.total).toEqual({ quota_exceeded: 2 });
    const hour = new Date(Math.floor(clock.now() / 3_600_000) * 3_600_000).toISOString();
    expect(r.body.hours[2]).toEqual({ hour, refusals: { quota_exceeded: 2 } });
    expect(r.body.hours[0].refusals).toEqual({});
    expectProblem(await t.call("GET", "/v1/admin/refusals?hours=0", { token: ADMIN }), 400, "invalid_request");
  });
});
