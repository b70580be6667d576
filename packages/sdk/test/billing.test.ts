import { describe, expect, it } from "vitest";
import {
  createClient,
  CreditsExhaustedError,
  GpupoolError,
  OverageNotAvailableError,
  QuotaExceededError,
  SpendCapReachedError,
} from "../src/index.js";
import { grantObject, meObject, overageOn, summaryObject, usagePage, walletObject } from "./billing-fixtures.js";
import {
  releaseResult,
  sendJson,
  sendProblem,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

describe("the 402s and the 409 of billing become typed errors carrying the amounts", () => {
  it("402 credits_exhausted → CreditsExhaustedError with the hold needed, what is available, and the split", async () => {
    const detail =
      "This call needs $0.083334 of credits for its 50 s past your quota, but $0.05 are available. Add credits or ask for at most 40 s.";
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 402, "credits_exhausted", detail, {
        needed_micros: 83_334,
        available_micros: 50_000,
        quota_s: 10,
        overage_s: 50,
        currency: "USD",
      }),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const error = (await pool.acquire({ duration: 60 }).catch((e: unknown) => e)) as CreditsExhaustedError;
    expect(error).toBeInstanceOf(CreditsExhaustedError);
    expect(error).toBeInstanceOf(GpupoolError);
    expect(error).toMatchObject({
      code: "credits_exhausted",
      status: 402,
      message: detail,
      neededMicros: 83_334,
      availableMicros: 50_000,
      quotaS: 10,
      overageS: 50,
      currency: "USD",
    });
  });

  it("402 spend_cap_reached → SpendCapReachedError with cap, spent, held and when the month ends", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 402, "spend_cap_reached", "Your monthly cap of $5.00 would be passed.", {
        needed_micros: 100_000,
        cap_micros: 5_000_000,
        spent_micros: 4_950_000,
        held_micros: 0,
        month_ends_at: "2025-02-01T00:00:00.000Z",
        currency: "USD",
      }),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const error = (await pool.acquire().catch((e: unknown) => e)) as SpendCapReachedError;
    expect(error).toBeInstanceOf(SpendCapReachedError);
    expect(error).toMatchObject({
      status: 402,
      neededMicros: 100_000,
      capMicros: 5_000_000,
      spentMicros: 4_950_000,
      heldMicros: 0,
      monthEndsAt: new Date("2025-02-01T00:00:00.000Z"),
    });
    expect(error.message).toBe("Your monthly cap of $5.00 would be passed.");
  });

  it("a field missing from the problem is NaN / null, never a zero that reads as an amount", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 402, "spend_cap_reached", "cap", { cap_micros: 5_000_000 }),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const error = (await pool.acquire().catch((e: unknown) => e)) as SpendCapReachedError;
    expect(error.capMicros).toBe(5_000_000);
    expect(error.spentMicros).toBeNaN();
    expect(error.monthEndsAt).toBeNull();
  });

  it("429 quota_exceeded says why credits did not engage (overageBlockedBy)", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 429, "quota_exceeded", "not opted in", {
        requested: 60,
        left: 10,
        tier: "pro",
        next_step: "enable_overage",
        overage_blocked_by: "not_opted_in",
      }),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const error = (await pool.acquire().catch((e: unknown) => e)) as QuotaExceededError;
    expect(error).toBeInstanceOf(QuotaExceededError);
    expect(error.nextStep).toBe("enable_overage");
    expect(error.overageBlockedBy).toBe("not_opted_in");
  });

  it("409 overage_not_available → OverageNotAvailableError naming what blocks it; setBilling sent the body", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 409, "overage_not_available", "The free tier has no overage.", {
        blocked_by: "tier_without_overage",
        tier: "free",
      }),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_bob" });
    const error = (await pool.setBilling({ overage: true }).catch((e: unknown) => e)) as OverageNotAvailableError;
    expect(error).toBeInstanceOf(OverageNotAvailableError);
    expect(error).toMatchObject({ status: 409, blockedBy: "tier_without_overage", tier: "free" });
    expect(server.requests[0]).toMatchObject({ method: "PATCH", path: "/v1/me/billing", body: { overage: true } });
  });
});

describe("billing fields and calls", () => {
  it("a server older than billing: billing, credits and overage are null, never a zero that reads as paid", async () => {
    const old = wireLease("active");
    delete old["billing"];
    const quota = { ...(old["quota"] as Record<string, unknown>) };
    delete quota["credits"];
    delete quota["overage"];
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, { ...old, quota }));
    const lease = await createClient({ url: server.url, token: "gpu_u_ada" }).lease("ls_1");
    expect(lease.billing).toBeNull();
    expect(lease.quota?.credits).toBeNull();
    expect(lease.quota?.overage).toBeNull();
  });

  it("leases and release results say which bucket paid, camelCased", async () => {
    const billing = {
      quota_s: 10,
      overage_s: 50,
      hold_micros: 83_334,
      charged_micros: 0,
      currency: "USD",
      display: { hold: "$0.083334", charged: "$0.00" },
    };
    server = await startFakeControlPlane((request, res) => {
      if (request.path.endsWith("/release")) {
        const settled = { ...billing, overage_s: 20, hold_micros: 0, charged_micros: 33_334 };
        sendJson(res, 200, { ...releaseResult("ls_1", false), billing: settled });
      } else sendJson(res, 201, wireLease("active", { billing }));
    });
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const lease = await pool.acquire({ duration: 60 });
    expect(lease.billing).toEqual({
      quotaS: 10,
      overageS: 50,
      holdMicros: 83_334,
      chargedMicros: 0,
      currency: "USD",
      display: { hold: "$0.083334", charged: "$0.00" },
    });
    const released = await pool.release(lease.id);
    expect(released.billing).toMatchObject({ quotaS: 10, overageS: 20, holdMicros: 0, chargedMicros: 33_334 });
    expect(released.quota.credits).toBeNull();
    expect(released.quota.overage?.blockedBy).toBe("operator_disabled");
  });

  it("me(), wallet({limit}) and setBilling({monthlyCap}) speak the wire and answer camelCased with Dates", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.path === "/v1/me") sendJson(res, 200, meObject);
      else if (request.path === "/v1/me/wallet") sendJson(res, 200, walletObject);
      else if (request.path === "/v1/me/billing") sendJson(res, 200, { overage: overageOn });
    });
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });

    const me = await pool.me();
    expect(me.user).toEqual({ id: "u_1", name: "ada", tier: "pro" });
    expect(me.credits).toMatchObject({ balanceMicros: 2_500_000, heldMicros: 83_334, availableMicros: 2_416_666 });
    expect(me.overage).toMatchObject({
      enabled: true,
      blockedBy: null,
      monthlyCapMicros: 5_000_000,
      pricePerGpuMinuteMicros: 100_000,
      monthEndsAt: new Date("2025-02-01T00:00:00.000Z"),
    });
    expect(me.quota.credits?.availableMicros).toBe(2_416_666);

    const wallet = await pool.wallet({ limit: 20 });
    expect(server.requests.find((r) => r.path === "/v1/me/wallet")?.query.get("limit")).toBe("20");
    expect(wallet.grants[0]).toMatchObject({ id: "cg_1", category: "purchased", amountMicros: 10_000_000 });
    expect(wallet.grants[0]?.expiresAt).toBeNull();
    expect(wallet.transactions[0]).toMatchObject({ kind: "hold", leaseId: "ls_9", grantId: "cg_1" });
    expect(wallet.transactions[0]?.at).toEqual(new Date("2025-01-01T10:05:00.000Z"));

    const overage = await pool.setBilling({ overage: true, monthlyCap: "5.00" });
    expect(overage.monthlyCapMicros).toBe(5_000_000);
    const cleared = await pool.setBilling({ monthlyCap: null });
    expect(cleared.enabled).toBe(true);
    const patches = server.requests.filter((r) => r.method === "PATCH").map((r) => r.body);
    expect(patches).toEqual([{ overage: true, monthly_cap: "5.00" }, { monthly_cap: null }]);
    expect(server.requests.every((r) => r.headers["authorization"] === "Bearer gpu_u_ada")).toBe(true);
  });

  it("usage() follows next_cursor to the last page, fetching each page only as it is iterated", async () => {
    const pages: Record<string, Record<string, unknown>> = {
      "": usagePage(["ls_1", "ls_2"], "c2"),
      c2: usagePage(["ls_3", "ls_4"], "c3"),
      c3: usagePage(["ls_5"], null),
    };
    server = await startFakeControlPlane((request, res) =>
      sendJson(res, 200, pages[request.query.get("cursor") ?? ""]),
    );
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const from = new Date("2025-01-01T00:00:00.000Z");

    const ids: string[] = [];
    for await (const record of pool.usage({ from, app: "a_demo", limit: 2 })) {
      ids.push(record.id);
      if (ids.length === 1) expect(server.requests).toHaveLength(1);
    }
    expect(ids).toEqual(["ls_1", "ls_2", "ls_3", "ls_4", "ls_5"]);
    expect(server.requests.map((r) => r.query.get("cursor"))).toEqual([null, "c2", "c3"]);
    for (const r of server.requests) {
      expect(r.path).toBe("/v1/usage");
      expect(r.query.get("from")).toBe("2025-01-01T00:00:00.000Z");
      expect(r.query.get("app")).toBe("a_demo");
      expect(r.query.get("limit")).toBe("2");
      expect(r.query.get("format")).toBe("json");
    }

    const sizes: number[] = [];
    for await (const page of pool.usage({ limit: 2 }).pages()) sizes.push(page.records.length);
    expect(sizes).toEqual([2, 2, 1]);

    const page = await pool.usagePage({ cursor: "c3", order: "desc" });
    expect(server.requests[server.requests.length - 1]?.query.get("order")).toBe("desc");
    expect(page.nextCursor).toBeNull();
    expect(page.records[0]).toMatchObject({
      id: "ls_5",
      appName: "demo",
      quotaS: 10,
      overageS: 20,
      chargedMicros: 33_334,
    });
    expect(page.records[0]?.cost).toEqual({
      paidBy: "quota_and_credits",
      amountMicros: 33_334,
      currency: "USD",
      display: { amount: "$0.033334", gpu: "10 s quota + 20 s credits" },
    });
    expect(page.records[0]?.endedAt).toEqual(new Date("2025-01-01T10:00:30.000Z"));
  });

  it("usageSummary sends group_by and answers the groups and total camelCased", async () => {
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, summaryObject));
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const summary = await pool.usageSummary({ groupBy: "app", identity: "user:u_1" });
    expect(server.requests[0]?.path).toBe("/v1/usage/summary");
    expect(server.requests[0]?.query.get("group_by")).toBe("app");
    expect(server.requests[0]?.query.get("identity")).toBe("user:u_1");
    expect(summary.groupBy).toBe("app");
    expect(summary.groups[0]).toMatchObject({
      key: "a_demo",
      name: "demo",
      calls: 2,
      overageS: 20,
      chargedMicros: 33_334,
    });
    expect(summary.total.refusals).toEqual({ queue_timeout: 1 });
  });

  it("usageExport streams the csv as the server writes it, and a refusal is a typed error", async () => {
    const csv = "id,identity_kind,identity_id,tier\nls_1,user,u_1,pro\n";
    server = await startFakeControlPlane((request, res) => {
      if (request.query.get("format") === "ndjson") {
        sendProblem(res, 401, "unauthorized", "The bearer token is not valid.");
        return;
      }
      res.writeHead(200, { "content-type": "text/csv; charset=utf-8" });
      res.write(csv.slice(0, 10));
      setTimeout(() => res.end(csv.slice(10)), 20);
    });
    const pool = createClient({ url: server.url, token: "gpu_u_ada" });
    const exported = await pool.usageExport("csv", { from: "2025-01-01T00:00:00.000Z" });
    expect(exported.contentType).toMatch(/^text\/csv/);
    expect(await exported.text()).toBe(csv);
    expect(server.requests[0]?.headers["accept"]).toBe("text/csv");
    expect(server.requests[0]?.query.get("format")).toBe("csv");

    const refused = await pool.usageExport("ndjson").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(GpupoolError);
    expect((refused as GpupoolError).code).toBe("unauthorized");
  });

  it("a client with only the admin token reads usage as the admin", async () => {
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, usagePage([], null)));
    const admin = createClient({ url: server.url, adminToken: "adm" });
    for await (const record of admin.usage()) expect(record).toBeUndefined();
    expect(server.requests[0]?.headers["authorization"]).toBe("Bearer adm");
  });
});

describe("admin: credits and wallets", () => {
  it("grantCredits sends the wire body and says whether the key made a grant (201) or had made it (200)", async () => {
    let calls = 0;
    server = await startFakeControlPlane((_request, res) => sendJson(res, calls++ === 0 ? 201 : 200, grantObject));
    const pool = createClient({ url: server.url, adminToken: "adm" });
    const request = {
      amount: "10.00",
      category: "purchased",
      expiresAt: new Date("2027-01-01T00:00:00.000Z"),
      priority: 5,
      source: "stripe:cs_test_1",
      idempotencyKey: "cs_test_1",
    } as const;
    const first = await pool.admin.grantCredits("ada", request);
    expect(first.created).toBe(true);
    expect(first.grant).toMatchObject({ id: "cg_1", amountMicros: 10_000_000, source: "stripe:cs_test_1" });
    const again = await pool.admin.grantCredits("ada", request);
    expect(again.created).toBe(false);
    expect(server.requests[0]).toMatchObject({
      method: "POST",
      path: "/v1/admin/users/ada/credits",
      body: {
        amount: "10.00",
        category: "purchased",
        expires_at: "2027-01-01T00:00:00.000Z",
        priority: 5,
        source: "stripe:cs_test_1",
        idempotency_key: "cs_test_1",
      },
    });
    expect(server.requests[0]?.headers["authorization"]).toBe("Bearer adm");
  });

  it("userWallet reads a user's wallet by name", async () => {
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, walletObject));
    const pool = createClient({ url: server.url, adminToken: "adm" });
    const wallet = await pool.admin.userWallet("ada", { limit: 5 });
    expect(server.requests[0]?.path).toBe("/v1/admin/users/ada/wallet");
    expect(server.requests[0]?.query.get("limit")).toBe("5");
    expect(wallet).toMatchObject({ user: "u_1", balanceMicros: 10_000_000, availableMicros: 9_916_666 });
  });
});
