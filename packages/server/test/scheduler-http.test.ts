import { afterEach, describe, expect, it } from "vitest";
import { lease, startTestServer } from "./harness.js";
import type { TestServer } from "./harness.js";

let t: TestServer;
afterEach(async () => t?.close());

const release = (id: string, token: string) => t.call("POST", `/v1/leases/${id}/release`, { token, body: {} });
const get = (id: string, token: string) => t.call("GET", `/v1/leases/${id}`, { token });

/** One simulated GPU (2 slots), filled by `owner` with two long leases. */
async function fullPool() {
  t = await startTestServer({ pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
  const owner = await t.user("owner", "pro");
  const blockers = [
    (await lease(t, owner.token, { duration: 60 })).body.id as string,
    (await lease(t, owner.token, { duration: 60 })).body.id as string,
  ];
  return { owner, blockers };
}

describe("the server schedules by priority class, not arrival", () => {
  it("a pro call queued after an anonymous one is granted first when a slot frees", async () => {
    const { owner, blockers } = await fullPool();
    const app = await t.appFor("painter", "owner");
    const anon = await t.ipToken(app.id, { ip: "203.0.113.9" });
    await t.user("ada", "pro");
    const proToken = await t.ipToken(app.id, { user: "ada" });

    const early = await t.call("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 10 },
      headers: { "x-ip-token": anon },
    });
    expect(early.status).toBe(202);
    expect(early.body.identity).toMatchObject({ kind: "ip", tier: "anonymous" });
    const late = await t.call("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 10 },
      headers: { "x-ip-token": proToken },
    });
    expect(late.status).toBe(202);
    // The pro call goes straight to the front of the line, ahead of the earlier anonymous one.
    expect(late.body.position).toBe(1);
    expect((await get(early.body.id, app.key)).body.position).toBe(2);
    expect(late.body.eta_s).toBeGreaterThan(0);
    expect(late.body.eta_s).toBeLessThanOrEqual(60);

    await release(blockers[0]!, owner.token);
    expect((await get(late.body.id, app.key)).body.status).toBe("active");
    expect((await get(early.body.id, app.key)).body.status).toBe("queued");
  });

  it("a call over its app's max_concurrency waits with reason concurrency and does not hold back other apps", async () => {
    t = await startTestServer({ pool: { simulated: [{ node: "sim-0", gpus: 2 }] } });
    await t.user("owner", "pro");
    const limited = await t.appFor("limited", "owner", 1);
    const other = await t.appFor("other", "owner");
    const first = await t.call("POST", "/v1/leases", { token: limited.key, body: { duration: 30 } });
    expect(first.status).toBe(201);
    const second = await t.call("POST", "/v1/leases", { token: limited.key, body: { duration: 30 } });
    expect(second.status).toBe(202);
    expect(second.body.reason).toBe("concurrency");
    // Three slots are still free: another app's call is granted at once.
    const mine = await t.call("POST", "/v1/leases", { token: other.key, body: { duration: 30 } });
    expect(mine.status).toBe(201);
    // When the limited app's first call ends, its second one gets a slot.
    await release(first.body.id, limited.key);
    expect((await get(second.body.id, limited.key)).body.status).toBe("active");
  });

  it("diagnose shows the place a call would take and its estimated wait", async () => {
    const { owner } = await fullPool();
    const d = await t.call("GET", "/v1/diagnose?duration=10", { token: owner.token });
    expect(d.status).toBe(200);
    expect(d.body.verdict).toMatchObject({ outcome: "queued", position: 1, reason: "node" });
    expect(d.body.verdict.eta_s).toBeGreaterThan(0);
  });
});
