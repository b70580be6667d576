import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease, quotaOf, waitFor } from "./harness.js";
import { ManualClock, billingConfig, billingServer, payingUser, priceMs, sumOf, walletOf } from "./billing-fixture.js";

/** Billing (docs/billing.md): the overage split at admission, settlement at the lease's end, and the refusals that name the bucket. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const release = (id: string, token: string) => t.call("POST", `/v1/leases/${id}/release`, { token, body: {} });
const leaseOf = async (id: string) => (await t.call("GET", `/v1/leases/${id}`, { token: ADMIN })).body;

describe("the split: quota first, the rest held on credits", () => {
  it("a call bigger than what is left is split into quota_s + overage_s, and its hold is on the wallet", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.00" });
    const first = await lease(t, u.token, { duration: 4 });
    expect(first.body.billing).toMatchObject({ quota_s: 4, overage_s: 0, hold_micros: 0 });
    const l = await lease(t, u.token, { duration: 30 });
    expect(l.status).toBe(201);
    expect(l.body.billing).toEqual({
      quota_s: 6,
      overage_s: 24,
      hold_micros: priceMs(24_000),
      charged_micros: 0,
      currency: "USD",
      display: { hold: "$0.04", charged: "$0.00" },
    });
    expect(l.body.quota).toMatchObject({ reserved: 10, left: 0 });
    expect(l.body.quota.credits).toMatchObject({
      balance_micros: 1_000_000,
      held_micros: 40_000,
      available_micros: 960_000,
    });
    const w = await walletOf(t, u.id);
    expect(sumOf(w, "hold", { lease: l.body.id })).toBe(40_000);
    expect(w.grants[0]).toMatchObject({ remaining_micros: 1_000_000, held_micros: 40_000 });
    // Quota all reserved: the next call is overage only.
    const third = await lease(t, u.token, { duration: 6 });
    expect(third.body.billing).toMatchObject({ quota_s: 0, overage_s: 6, hold_micros: priceMs(6000) });
  });

  it("credits engage also for a call bigger than the WHOLE quota (not 422 duration_too_long)", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.00" });
    const l = await lease(t, u.token, { duration: 300 });
    expect(l.status).toBe(201);
    expect(l.body.billing).toMatchObject({ quota_s: 10, overage_s: 290, hold_micros: priceMs(290_000) });
    expect(l.body.quota).toMatchObject({ reserved: 10, left: 0 });
    expect(l.body.reserved).toBe(300);
  });
});

describe("settlement", () => {
  async function heldFor(heldS: number) {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.00" });
    const l = await lease(t, u.token, { duration: 30 });
    expect(l.body.billing.hold_micros).toBe(priceMs(20_000));
    clock.advance(heldS * 1000 - 400); // rounded up to whole seconds
    const r = await release(l.body.id, u.token);
    expect(r.status).toBe(200);
    return { u, l, r, w: await walletOf(t, u.id) };
  }

  it("at release the quota pays first, then overage priced with ceil; the rest of the hold is released", async () => {
    const { u, l, r, w } = await heldFor(15);
    const hold = priceMs(20_000);
    const spend = priceMs(5000); // 8333.33… → 8334
    expect(spend).toBe(8334);
    expect(r.body).toMatchObject({ status: "released", charged: 15, refunded: 15 });
    expect(r.body.billing).toMatchObject({ quota_s: 10, overage_s: 20, hold_micros: hold, charged_micros: spend });
    expect(r.body.quota).toMatchObject({ used: 10, reserved: 0, left: 0 });
    expect(sumOf(w, "spend", { lease: l.body.id })).toBe(spend);
    expect(sumOf(w, "release", { lease: l.body.id })).toBe(hold - spend);
    expect(w).toMatchObject({ balance_micros: 1_000_000 - spend, held_micros: 0, available_micros: 1_000_000 - spend });
    const me = await t.call("GET", "/v1/me", { token: u.token });
    expect(me.body.overage).toMatchObject({ spent_micros: spend, held_micros: 0 });
  });

  it("the hold on the wallet from admission is the one written at settlement: same id, time and amount, once", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.00" });
    const l = await lease(t, u.token, { duration: 30 });
    const holds = (w: any) => w.transactions.filter((x: any) => x.kind === "hold" && x.lease_id === l.body.id);
    const before = holds(await walletOf(t, u.id));
    expect(before).toHaveLength(1);
    expect(before[0]).toMatchObject({ amount_micros: priceMs(20_000) });
    clock.advance(15_000);
    expect((await release(l.body.id, u.token)).status).toBe(200);
    const w = await walletOf(t, u.id);
    expect(holds(w)).toEqual(before);
    // Newest first: the settlement's spend and release, then the hold they settle.
    expect(w.transactions.filter((x: any) => x.lease_id === l.body.id).map((x: any) => x.kind)).toEqual(
      expect.arrayContaining(["spend", "release", "hold"]),
    );
    expect(w.transactions.at(-1)).toMatchObject({ kind: "grant" });
    expect(w.transactions.findIndex((x: any) => x.kind === "hold")).toBeGreaterThan(
      w.transactions.findIndex((x: any) => x.kind === "spend"),
    );
  });

  it("a call that ends within its quota part spends no credits and releases the whole hold", async () => {
    const { l, r, w } = await heldFor(7);
    expect(r.body).toMatchObject({ charged: 7, refunded: 23 });
    expect(r.body.billing.charged_micros).toBe(0);
    expect(r.body.quota).toMatchObject({ used: 7, reserved: 0, left: 3 });
    expect(sumOf(w, "spend")).toBe(0);
    expect(sumOf(w, "release", { lease: l.body.id })).toBe(priceMs(20_000));
    expect(w).toMatchObject({ balance_micros: 1_000_000, held_micros: 0 });
  });

  it("a second release charges nothing more", async () => {
    const { u, l, r, w } = await heldFor(15);
    const again = await release(l.body.id, u.token);
    expect(again.body.billing).toEqual(r.body.billing);
    expect(await walletOf(t, u.id)).toEqual(w);
  });

  it("expiry charges the whole reservation, quota and overage", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 1, credits: "1.00" });
    const l = await lease(t, u.token, { duration: 2 });
    expect(l.body.billing).toMatchObject({ quota_s: 1, overage_s: 1, hold_micros: priceMs(1000) });
    clock.advance(60_000); // the deadline timer fires on real time, and finds the deadline passed
    const ended = await waitFor(async () => {
      const x = await leaseOf(l.body.id);
      return x.status !== "active" && x;
    }, 20_000);
    expect(ended).toMatchObject({ status: "expired", charged: 2, refunded: 0 });
    expect(ended.billing.charged_micros).toBe(priceMs(1000));
    const w = await walletOf(t, u.id);
    expect(sumOf(w, "spend", { lease: l.body.id })).toBe(priceMs(1000));
    expect(sumOf(w, "release", { lease: l.body.id })).toBe(0);
    expect(w).toMatchObject({ balance_micros: 1_000_000 - priceMs(1000), held_micros: 0 });
    expect(await quotaOf(t, u.token)).toMatchObject({ used: 1, reserved: 0 });
  });

  async function queuedBehindFullPool(extra: Record<string, unknown>, clock: ManualClock | null) {
    const cfg = billingConfig({}, { pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] }, ...extra });
    t = await billingServer(cfg, clock);
    const other = await t.user("other", "pro");
    expect((await lease(t, other.token, { duration: 120 })).status).toBe(201);
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.00" });
    const before = await walletOf(t, u.id);
    const q = await lease(t, u.token, { duration: 30 });
    expect(q.status).toBe(202);
    expect(q.body.billing).toMatchObject({ quota_s: 10, overage_s: 20, hold_micros: priceMs(20_000) });
    expect((await walletOf(t, u.id)).held_micros).toBe(priceMs(20_000));
    return { u, q, before };
  }

  function expectAllReleased(before: any, after: any, leaseId: string) {
    expect(sumOf(after, "spend")).toBe(0);
    expect(sumOf(after, "release", { lease: leaseId })).toBe(sumOf(after, "hold", { lease: leaseId }));
    expect(after.grants).toEqual(before.grants);
    expect(after).toMatchObject({ balance_micros: before.balance_micros, held_micros: 0 });
  }

  it("cancel while queued releases everything", async () => {
    const { u, q, before } = await queuedBehindFullPool({}, new ManualClock());
    const r = await t.call("DELETE", `/v1/leases/${q.body.id}`, { token: u.token });
    expect(r.body).toMatchObject({ status: "cancelled", charged: 0, refunded: 30 });
    expect(r.body.billing.charged_micros).toBe(0);
    expect(r.body.quota).toMatchObject({ used: 0, reserved: 0, left: 10 });
    expectAllReleased(before, await walletOf(t, u.id), q.body.id);
  });

  it("a queue timeout releases everything", async () => {
    const { u, q, before } = await queuedBehindFullPool({ queue: { timeout: "500ms", predicted_wait: false } }, null);
    const ended = await waitFor(async () => {
      const x = await leaseOf(q.body.id);
      return x.status !== "queued" && x;
    }, 20_000);
    expect(ended).toMatchObject({ status: "failed", charged: 0, refunded: 30 });
    expect(ended.problem.code).toBe("queue_timeout");
    expect(ended.billing.charged_micros).toBe(0);
    expectAllReleased(before, await walletOf(t, u.id), q.body.id);
    expect(await quotaOf(t, u.token)).toMatchObject({ used: 0, reserved: 0 });
  });
});

describe("402: the wallet or the cap cannot take the hold", () => {
  it("credits_exhausted names what is needed and what is available, and changes nothing", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "0.01" });
    const before = await walletOf(t, u.id);
    const r = await lease(t, u.token, { duration: 30 });
    const p = expectProblem(r, 402, "credits_exhausted");
    expect(p).toMatchObject({ needed_micros: priceMs(20_000), available_micros: 10_000, quota_s: 10, overage_s: 20 });
    expect(p.detail).toContain("$0.033334");
    expect(p.detail).toContain("$0.01");
    expect(await walletOf(t, u.id)).toEqual(before);
    expect(await quotaOf(t, u.token)).toMatchObject({ reserved: 0, runs: 0 });
  });

  it("spend_cap_reached names the cap, the month's spend and what is held", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 0, credits: "1.00", cap: "0.05" });
    const a = await lease(t, u.token, { duration: 12 });
    expect(a.body.billing).toMatchObject({ quota_s: 0, overage_s: 12, hold_micros: 20_000 });
    clock.advance(12_000);
    expect((await release(a.body.id, u.token)).body.billing.charged_micros).toBe(20_000);
    const b = await lease(t, u.token, { duration: 12 });
    expect(b.status).toBe(201);
    const before = await walletOf(t, u.id);
    const r = await lease(t, u.token, { duration: 12 });
    const p = expectProblem(r, 402, "spend_cap_reached");
    expect(p).toMatchObject({ needed_micros: 20_000, cap_micros: 50_000, spent_micros: 20_000, held_micros: 20_000 });
    expect(p.detail).toContain("$0.05");
    expect(await walletOf(t, u.id)).toEqual(before);
    // The hold alone fits the cap exactly: admitted.
    const exact = await lease(t, u.token, { duration: 6 });
    expect(exact.status).toBe(201);
    expect(exact.body.billing.hold_micros).toBe(10_000);
  });
});

describe("429 / 422 say exactly which condition kept credits out", () => {
  const texts: Record<string, RegExp> = {
    operator_disabled: /operator has not enabled overage/,
    tier_without_overage: /offers overage to other tiers/,
    not_opted_in: /gpupool billing overage on/,
    not_a_user: /signed-in user/,
  };

  async function blockedCaller(blocker: string): Promise<{ token: string; ip?: string; quota: number }> {
    t = await billingServer(billingConfig({ enabled: blocker !== "operator_disabled" }));
    if (blocker === "not_a_user") {
      const owner = await t.user("owner", "pro");
      const app = await t.appFor("demo", owner.id);
      return { token: app.key, ip: await t.ipToken(app.id, { ip: "198.51.100.7" }), quota: 120 };
    }
    const tier = blocker === "tier_without_overage" ? "team" : "pro";
    const optIn = blocker === "not_opted_in" ? { optIn: false } : {};
    const u = await payingUser(t, "alice", { tier, quotaS: 10, credits: "1.00", ...optIn });
    return { token: u.token, quota: 10 };
  }

  for (const blocker of Object.keys(texts)) {
    it(`${blocker}: 429 quota_exceeded and 422 duration_too_long, each with overage_blocked_by`, async () => {
      const c = await blockedCaller(blocker);
      expect((await lease(t, c.token, { duration: c.quota - 2 }, c.ip)).status).toBe(201);
      const r429 = await lease(t, c.token, { duration: 5 }, c.ip);
      const p = expectProblem(r429, 429, "quota_exceeded");
      expect(p.overage_blocked_by).toBe(blocker);
      expect(p.detail).toMatch(texts[blocker]!);
      // Bigger than the whole quota, within the tier's max_duration (xlarge costs ×2).
      const r422 = await lease(t, c.token, { duration: c.quota / 2 + 1, size: "xlarge" }, c.ip);
      const q = expectProblem(r422, 422, "duration_too_long");
      expect(q.overage_blocked_by).toBe(blocker);
      expect(q.detail).toMatch(texts[blocker]!);
    });
  }

  it("an app key without an X-IP-Token (the app pays) is not a user either", async () => {
    t = await billingServer();
    const owner = await payingUser(t, "owner", { credits: "1.00" });
    const app = await t.appFor("demo", owner.id);
    const r = await lease(t, app.key, { duration: 61, size: "xlarge" });
    expect(expectProblem(r, 422, "duration_too_long").overage_blocked_by).toBe("not_a_user");
  });
});
