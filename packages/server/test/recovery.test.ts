import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "./billing-fixture.js";
import type { TestServer } from "./harness.js";
import { ADMIN, lease, quotaOf, serveAt, sleep, waitFor } from "./harness.js";

/**
 * docs/design.md: a restart loses no charge and no lease. A server is stopped without releasing
 * anything, and a new one is started on the same database file.
 */

let dir: string;
const running: TestServer[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.server.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** `clock`: time as the test sets it (the server's timers still run on real time; see ManualClock). */
async function start(raw: Record<string, unknown> = {}, clock?: ManualClock): Promise<TestServer> {
  const s = await serveAt(dir, raw, { keepDir: true, ...(clock ? { clock } : {}) });
  running.push(s);
  return s;
}

async function stop(s: TestServer): Promise<void> {
  running.splice(running.indexOf(s), 1);
  await s.server.close();
}

const get = (s: TestServer, id: string) => s.call("GET", `/v1/leases/${id}`, { token: ADMIN }).then((r) => r.body);

describe("restart on the same database", () => {
  it("active leases keep their device and deadline, queued ones keep waiting; the queue still moves", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    const a = await start();
    const owner = await a.user("owner", "pro");
    const alice = await a.user("alice", "free");
    const app = await a.appFor("demo", owner.id);
    const ipTok = await a.ipToken(app.id, { ip: "203.0.113.7" });
    const held = [];
    for (let i = 0; i < 4; i++) held.push((await lease(a, owner.token, { duration: 50 })).body);
    const queued = (await lease(a, alice.token, { duration: 30 })).body;
    expect(queued.status).toBe("queued");
    const quotaBefore = { owner: await quotaOf(a, owner.token), alice: await quotaOf(a, alice.token) };
    await stop(a);

    const b = await start();
    for (const l of held) {
      const now = await get(b, l.id);
      expect(now).toMatchObject({ status: "active", deadline: l.deadline, granted_at: l.granted_at, device: l.device });
    }
    expect(await get(b, queued.id)).toMatchObject({ status: "queued", position: 1, reason: "node" });
    expect(await quotaOf(b, owner.token)).toEqual(quotaBefore.owner);
    expect(await quotaOf(b, alice.token)).toEqual(quotaBefore.alice);
    expect((await b.call("GET", "/v1/admin/pool", { token: ADMIN })).body.slots).toEqual({ total: 4, busy: 4 });
    // A token the first server minted still verifies: the signing key survived.
    expect(
      (await b.call("GET", "/v1/quota", { token: app.key, headers: { "x-ip-token": ipTok } })).body.identity,
    ).toMatchObject({ kind: "ip", id: "203.0.113.7" });

    // The recovered state is live: a release frees a slot, the queued lease gets it, charges add up.
    const released = await b.call("POST", `/v1/leases/${held[0].id}/release`, { token: owner.token, body: {} });
    expect(released.body).toMatchObject({ status: "released", refunded: 50 - released.body.charged });
    expect(released.body.charged).toBeGreaterThanOrEqual(1);
    const granted = await get(b, queued.id);
    expect(granted).toMatchObject({ status: "active", device: held[0].device });
    expect(await quotaOf(b, alice.token)).toMatchObject({ reserved: 30, window_started_at: granted.granted_at });
  });

  it("a lease whose deadline passed while the server was down is expired and charged its full reservation", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    // Both servers on the test's clock, which stands still while the first runs: on real time a
    // stall of 0.5 s let the short lease expire before the xlarge call was admitted, which then
    // got its GPU at once. Its deadline timer, on real time, finds the deadline not yet passed.
    const clock = new ManualClock();
    const a = await start({}, clock);
    const alice = await a.user("alice", "free");
    const owner = await a.user("owner", "pro");
    const short = (await lease(a, alice.token, { duration: 0.5, size: "xlarge" })).body;
    const long = (await lease(a, owner.token, { duration: 60 })).body;
    await lease(a, owner.token, { duration: 60 });
    const waiting = (await lease(a, owner.token, { duration: 20, size: "xlarge" })).body;
    expect([short.status, long.status, waiting.status]).toEqual(["active", "active", "queued"]);
    await stop(a);
    clock.advance(700);

    const b = await start({}, clock);
    const ended = await get(b, short.id);
    expect(ended).toMatchObject({ status: "expired", charged: 1, refunded: 0, held_ms: 500 });
    expect(await quotaOf(b, alice.token)).toMatchObject({ used: 1, reserved: 0, left: 209 });
    expect(await get(b, long.id)).toMatchObject({ status: "active", deadline: long.deadline });
    // Its GPU went to the lease that was waiting for it.
    expect(await get(b, waiting.id)).toMatchObject({
      status: "active",
      device: { index: short.device.index, slots: [0, 1] },
    });
    // Releasing the expired lease now changes nothing.
    const again = await b.call("POST", `/v1/leases/${short.id}/release`, { token: alice.token, body: {} });
    expect(again.body).toMatchObject({ status: "expired", charged: 1 });
    expect(await quotaOf(b, alice.token)).toMatchObject({ used: 1, reserved: 0 });
  });

  it("a queued lease whose queue timeout passed while down fails with queue_timeout and is refunded", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    // Only the free tier's queue timeout is short (per tier); queued rather than refused at once.
    const raw = { queue: { timeout: { default: "60s", free: "400ms" }, predicted_wait: false } };
    const a = await start(raw);
    const alice = await a.user("alice", "free");
    const owner = await a.user("owner", "pro");
    for (let i = 0; i < 4; i++) await lease(a, owner.token, { duration: 60 });
    const q = (await lease(a, alice.token, { duration: 25 })).body;
    expect(q.status).toBe("queued");
    await stop(a);
    await sleep(500);

    const b = await start(raw);
    const failed = await get(b, q.id);
    expect(failed).toMatchObject({ status: "failed", charged: 0, refunded: 25, problem: { code: "queue_timeout" } });
    expect(await quotaOf(b, alice.token)).toMatchObject({ used: 0, reserved: 0, left: 210, window_started_at: null });
  });

  it("a queued lease keeps the max_wait its caller named: after a restart it times out then, not after its tier's timeout", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    const raw = { queue: { timeout: "60s", predicted_wait: false } };
    const a = await start(raw);
    const alice = await a.user("alice", "free");
    const owner = await a.user("owner", "pro");
    for (let i = 0; i < 4; i++) await lease(a, owner.token, { duration: 60 });
    const q = (await lease(a, alice.token, { duration: 25, max_wait: 1 })).body;
    expect(q.status).toBe("queued");
    await stop(a);

    // Back within its second: it is recovered queued, and fails when its max_wait is up.
    const b = await start(raw);
    const failed = await waitFor(async () => {
      const l = await get(b, q.id);
      return l.status !== "queued" && l;
    });
    expect(failed).toMatchObject({ status: "failed", charged: 0, refunded: 25, problem: { code: "queue_timeout" } });
  });

  it("releases and charges made before the stop are all still there", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    const a = await start();
    const alice = await a.user("alice", "free");
    const results = [];
    for (let i = 0; i < 5; i++) {
      const l = (await lease(a, alice.token, { duration: 10 })).body;
      results.push((await a.call("POST", `/v1/leases/${l.id}/release`, { token: alice.token, body: {} })).body);
    }
    const before = await quotaOf(a, alice.token);
    expect(before.used).toBe(results.reduce((s, r) => s + r.charged, 0));
    await stop(a);
    const b = await start();
    expect(await quotaOf(b, alice.token)).toEqual(before);
    for (const r of results)
      expect(await get(b, r.id)).toMatchObject({ status: "released", charged: r.charged, refunded: r.refunded });
  });
});

describe("restart with a smaller pool", () => {
  it("a lease whose GPU left the pool while the server was down fails, charged only for the time it held", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-recovery-"));
    const twoGpus = { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } };
    const a = await start(twoGpus);
    const owner = await a.user("owner", "pro");
    // Best fit puts the first two large leases on GPU 0, the xlarge on GPU 1.
    const kept = (await lease(a, owner.token, { duration: 60 })).body;
    const gone = (await lease(a, owner.token, { duration: 60, size: "xlarge" })).body;
    expect(gone.device.index).toBe(1);
    await sleep(1100); // hold it for just over a second
    await stop(a);

    const b = await start({ pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
    const after = await get(b, gone.id);
    expect(after).toMatchObject({ status: "failed", failed: true, problem: { code: "no_gpu_available" } });
    // Held ~1.1 s on an xlarge (cost 2) until the restart noticed: whole seconds × 2, a few
    // seconds at most, not the 120 s reserved; the rest is refunded.
    expect(after.charged % 2).toBe(0);
    expect(after.charged).toBeGreaterThanOrEqual(4);
    expect(after.charged).toBeLessThan(30);
    expect(after.charged + after.refunded).toBe(120);
    expect((await get(b, kept.id)).status).toBe("active");
    const quota = await quotaOf(b, owner.token);
    expect(quota.reserved).toBe(60);
    expect(quota.used).toBe(after.charged);
  });
});
