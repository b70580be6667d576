import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, lease } from "./harness.js";
import {
  ManualClock,
  T0,
  billingConfig,
  billingServer,
  moneyState,
  payingUser,
  priceMs,
  sumOf,
  walletOf,
} from "./billing-fixture.js";

/** The billing endpoints (docs/billing.md): /v1/me, the wallet, billing settings, admin credit grants; bad input changes nothing. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

describe("GET /v1/me and /v1/me/wallet", () => {
  it("/v1/me: the user, the quota with credits and overage; /v1/me/wallet: grants and transactions", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", { quotaS: 10, credits: "1.50" });
    const me = await t.call("GET", "/v1/me", { token: u.token });
    expect(me.status).toBe(200);
    expect(me.body.user).toEqual({ id: u.id, name: "alice", tier: "pro" });
    expect(me.body.quota).toMatchObject({ quota: 10, left: 10 });
    expect(me.body.credits).toEqual(me.body.quota.credits);
    expect(me.body.credits).toMatchObject({ balance_micros: 1_500_000, held_micros: 0, available_micros: 1_500_000 });
    expect(me.body.overage).toMatchObject({
      available: true,
      enabled: true,
      blocked_by: null,
      price_per_gpu_minute_micros: 100_000,
      monthly_cap_micros: 5_000_000,
      spent_micros: 0,
      month: "2026-12",
      month_ends_at: "2027-01-01T00:00:00.000Z",
    });
    const w = await t.call("GET", "/v1/me/wallet", { token: u.token });
    expect(w.status).toBe(200);
    expect(w.body).toEqual(await walletOf(t, u.id));
    expect(w.body.grants).toHaveLength(1);
    expect(w.body.grants[0]).toMatchObject({ category: "purchased", amount_micros: 1_500_000, expires_at: null });
    expect(w.body.transactions).toEqual([
      expect.objectContaining({ kind: "grant", amount_micros: 1_500_000, grant_id: w.body.grants[0].id }),
    ]);
    // Not for the admin token or an app key; no user-less wallet.
    expectProblem(await t.call("GET", "/v1/me", { token: ADMIN }), 403, "forbidden");
    expectProblem(await t.call("GET", "/v1/me/wallet", {}), 401, "unauthorized");
    expectProblem(await t.call("GET", "/v1/admin/users/nobody/wallet", { token: ADMIN }), 404, "not_found");
    expectProblem(await t.call("GET", `/v1/admin/users/${u.id}/wallet`, { token: u.token }), 403, "forbidden");
  });

  it("PATCH /v1/me/billing turns overage on with a cap, off again, and the cap back to the default", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", { optIn: false });
    const on = await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { overage: true, monthly_cap: "2.5" } });
    expect(on.status).toBe(200);
    expect(on.body.overage).toMatchObject({ enabled: true, blocked_by: null, monthly_cap_micros: 2_500_000 });
    expect(on.body.overage.display.monthly_cap).toBe("$2.50");
    const def = await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { monthly_cap: null } });
    expect(def.body.overage).toMatchObject({ enabled: true, monthly_cap_micros: 5_000_000 });
    const off = await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { overage: false } });
    expect(off.body.overage).toMatchObject({ enabled: false, blocked_by: "not_opted_in", monthly_cap_micros: null });
    expect((await t.call("GET", "/v1/me", { token: u.token })).body.overage).toEqual(off.body.overage);
  });

  for (const [name, config, tier] of [
    ["the operator has overage off", billingConfig({ enabled: false }), "pro"],
    ["the tier is not listed", billingConfig(), "team"],
    ["there is no billing: at all", {}, "pro"],
  ] as const) {
    it(`PATCH /v1/me/billing {overage: true} → 409 overage_not_available when ${name}, nothing changed`, async () => {
      t = await billingServer(config);
      const u = await t.user("alice", tier);
      const before = await moneyState(t, u);
      const r = await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { overage: true } });
      const p = expectProblem(r, 409, "overage_not_available");
      expect(p.blocked_by).toBe(tier === "team" ? "tier_without_overage" : "operator_disabled");
      expect(await moneyState(t, u)).toEqual(before);
    });
  }
});

describe("POST /v1/admin/users/:id/credits", () => {
  it("201 the grant, the same key again 200 the same grant (nothing added), another amount 409", async () => {
    t = await billingServer();
    const u = await t.user("alice", "pro");
    const body = { amount: "10.00", category: "promotional", idempotency_key: "promo-1", priority: 3 };
    const url = `/v1/admin/users/${u.id}/credits`;
    const a = await t.call("POST", url, { token: ADMIN, body });
    expect(a.status).toBe(201);
    expect(a.body).toMatchObject({ category: "promotional", amount_micros: 10_000_000, priority: 3 });
    expect(a.body.display.amount).toBe("$10.00");
    const b = await t.call("POST", url, { token: ADMIN, body });
    expect(b.status).toBe(200);
    expect(b.body).toEqual(a.body);
    const before = await moneyState(t, u);
    expectProblem(
      await t.call("POST", url, { token: ADMIN, body: { ...body, amount: "11.00" } }),
      409,
      "idempotency_key_reused",
    );
    expectProblem(
      await t.call("POST", url, { token: ADMIN, body: { ...body, category: "purchased" } }),
      409,
      "idempotency_key_reused",
    );
    expect(await moneyState(t, u)).toEqual(before);
    const w = await walletOf(t, u.id);
    expect(w.balance_micros).toBe(10_000_000);
    expect(w.transactions.filter((x: any) => x.kind === "grant")).toHaveLength(1);
    // By name too, and the key is the user's own: another user may use it.
    const bob = await t.user("bob", "pro");
    expect((await t.call("POST", `/v1/admin/users/bob/credits`, { token: ADMIN, body })).status).toBe(201);
    expect((await walletOf(t, bob.id)).balance_micros).toBe(10_000_000);
    expectProblem(await t.call("POST", `/v1/admin/users/nobody/credits`, { token: ADMIN, body }), 404, "not_found");
    expectProblem(
      await t.call("POST", url, { token: u.token, body: { ...body, idempotency_key: "x" } }),
      403,
      "forbidden",
    );
  });

  it("bad input — each a 400 problem that changes nothing", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { credits: "1.00" });
    const url = `/v1/admin/users/${u.id}/credits`;
    const ok = { amount: "1.00", category: "purchased", idempotency_key: "k" };
    const bad: Record<string, unknown>[] = [
      { amount: "-1.00" },
      { amount: "-0" },
      { amount: "0" },
      { amount: "0.00" },
      { amount: "0.0000001" },
      { amount: "1.1234567" },
      { amount: "1000000000000.01" },
      { amount: "99999999999999" },
      { amount: "1e3" },
      { amount: "ten" },
      { amount: "" },
      { amount: " 1.00" },
      { amount: "1,000.00" },
      { amount: "NaN" },
      { amount: 10 },
      { amount: 1.5 },
      { amount: null },
      { category: "included" },
      { category: "gift" },
      { expires_at: new Date(T0 - 1000).toISOString() },
      { expires_at: new Date(T0).toISOString() },
      { expires_at: "tomorrow" },
      { priority: -1 },
      { priority: 1.5 },
      { idempotency_key: "" },
      { idempotency_key: "has space" },
      { extra: true },
    ];
    const before = await moneyState(t, u);
    for (const change of bad) {
      const r = await t.call("POST", url, { token: ADMIN, body: { ...ok, ...change } });
      expect(r.status, JSON.stringify(change)).toBe(400);
      expectProblem(r, 400, r.body.code);
    }
    for (const missing of ["amount", "category", "idempotency_key"]) {
      const body: Record<string, unknown> = { ...ok };
      delete body[missing];
      expect((await t.call("POST", url, { token: ADMIN, body })).status, missing).toBe(400);
    }
    for (const cap of ["-1", "1.1234567", "lots", 5, "1000000000000.01"]) {
      const r = await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { overage: false, monthly_cap: cap } });
      expect(r.status, JSON.stringify(cap)).toBe(400);
    }
    expect((await t.call("PATCH", "/v1/me/billing", { token: u.token, body: {} })).status).toBe(400);
    expect((await t.call("PATCH", "/v1/me/billing", { token: u.token, body: { overage: "yes" } })).status).toBe(400);
    expect(await moneyState(t, u)).toEqual(before);
  });

  // Found by this test: amounts up to 1e12 units were accepted, past Number.MAX_SAFE_INTEGER in micro-units, so
  // a micro-unit was lost and the wallet answered 500 for good. Now an amount and a wallet hold at most 1e9 units.
  it("a huge amount is refused or granted exactly — never a 500, never an unreadable wallet", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", {});
    const url = `/v1/admin/users/${u.id}/credits`;
    const exact = await t.call("POST", url, {
      token: ADMIN,
      body: { amount: "999999999.999999", category: "purchased", idempotency_key: "max" },
    });
    expect(exact.status).toBe(201);
    expect(exact.body.amount_micros).toBe(999_999_999_999_999);
    for (const amount of ["0.000002", "9007199254.740993", "10000000000.000001", "999999999999.999999"]) {
      const r = await t.call("POST", url, {
        token: ADMIN,
        body: { amount, category: "purchased", idempotency_key: `huge-${amount}` },
      });
      expect(r.status, amount).toBe(400);
    }
    expect((await t.call("GET", "/v1/me/wallet", { token: u.token })).status).toBe(200);
    expect((await t.call("GET", "/v1/me", { token: u.token })).status).toBe(200);
    // A second grant whose sum with the first is past exact integers: refused, or the wallet still reads.
    const second = await t.call("POST", url, {
      token: ADMIN,
      body: { amount: "9007199254.740991", category: "purchased", idempotency_key: "max-safe-2" },
    });
    expect(second.status).toBe(400);
    expect((await t.call("GET", "/v1/me", { token: u.token })).status).toBe(200);
  });
});

describe("included monthly credits", () => {
  it("granted once, at the first read in a month, expiring at its end; a new month grants anew and resets the spend", async () => {
    const clock = new ManualClock(Date.UTC(2026, 11, 31, 23, 0));
    t = await billingServer(billingConfig({}, { billing: undefined }), clock);
    await t.close();
    const cfg = billingConfig();
    t = await billingServer({ ...cfg, billing: { ...cfg.billing, included_credits: { pro: "2.00" } } }, clock);
    const u = await payingUser(t, "alice", { quotaS: 0 });
    const reads = await Promise.all([0, 1, 2].map(() => t.call("GET", "/v1/me", { token: u.token })));
    for (const r of reads) expect(r.body.credits.balance_micros).toBe(2_000_000);
    let w = await walletOf(t, u.id);
    expect(w.grants).toEqual([
      expect.objectContaining({
        id: `inc_2026-12_${u.id}`,
        category: "included",
        amount_micros: 2_000_000,
        priority: 0,
        effective_at: "2026-12-01T00:00:00.000Z",
        expires_at: "2027-01-01T00:00:00.000Z",
      }),
    ]);
    expect(w.transactions.filter((x: any) => x.kind === "grant")).toHaveLength(1);
    // Spend some of December's credits.
    const l = await lease(t, u.token, { duration: 60 });
    expect(l.body.billing).toMatchObject({ quota_s: 0, overage_s: 60, hold_micros: 100_000 });
    clock.advance(30_000);
    await t.call("POST", `/v1/leases/${l.body.id}/release`, { token: u.token, body: {} });
    expect((await t.call("GET", "/v1/me", { token: u.token })).body.overage.spent_micros).toBe(priceMs(30_000));
    // A new month: December's rest expires, January's credits are granted, the month's spend starts at 0.
    clock.at = Date.UTC(2027, 0, 1, 0, 0, 1);
    const jan = await t.call("GET", "/v1/me", { token: u.token });
    expect(jan.body.credits.balance_micros).toBe(2_000_000);
    expect(jan.body.overage).toMatchObject({ month: "2027-01", spent_micros: 0 });
    w = await walletOf(t, u.id);
    const dec = w.grants.find((g: any) => g.id === `inc_2026-12_${u.id}`);
    expect(dec).toMatchObject({ remaining_micros: 0, held_micros: 0 });
    expect(sumOf(w, "expire", { grant: dec.id })).toBe(2_000_000 - priceMs(30_000));
    expect(w.grants.find((g: any) => g.id === `inc_2027-01_${u.id}`)).toMatchObject({ remaining_micros: 2_000_000 });
    expect(w.transactions.filter((x: any) => x.kind === "grant")).toHaveLength(2);
  });

  it("a tier without included credits gets no grant", async () => {
    const cfg = billingConfig();
    t = await billingServer({ ...cfg, billing: { ...cfg.billing, included_credits: { pro: "2.00" } } });
    const u = await t.user("fred", "free");
    await t.call("GET", "/v1/me", { token: u.token });
    expect((await walletOf(t, u.id)).grants).toEqual([]);
  });
});
