import type { Me, Overage, UsageRecord, UsageSummary, Wallet } from "@gpupool/sdk";
import { describe, expect, it } from "vitest";
import {
  blockerWords,
  money,
  overageLines,
  renderMe,
  renderUsageRecords,
  renderUsageSummary,
  renderWallet,
} from "../src/render-billing.js";
import { renderQuota } from "../src/render.js";

const now = new Date("2025-01-10T12:00:00Z");

const overage = (o: Partial<Overage> = {}): Overage => ({
  available: true,
  enabled: true,
  blockedBy: null,
  pricePerGpuMinuteMicros: 100_000,
  monthlyCapMicros: 5_000_000,
  spentMicros: 1_250_000,
  heldMicros: 83_334,
  month: "2025-01",
  monthEndsAt: new Date("2025-02-01T00:00:00Z"),
  currency: "USD",
  display: {},
  ...o,
});

const me = (o: Partial<Overage> = {}, tier = "pro"): Me => ({
  user: { id: "u_1", name: "ada", tier },
  quota: {
    identity: { kind: "user", id: "u_1", tier },
    quota: 1500,
    used: 1490,
    reserved: 0,
    left: 10,
    bonus: 0,
    window: 86_400,
    windowStartedAt: new Date("2025-01-10T08:00:00Z"),
    resetsAt: new Date("2025-01-11T08:00:00Z"),
    priority: 3,
    maxDuration: 300,
    runs: 4,
    maxRuns: null,
    credits: null,
    overage: overage(o),
  },
  credits: {
    balanceMicros: 2_000_000,
    heldMicros: 83_334,
    availableMicros: 1_916_666,
    currency: "USD",
    display: {},
  },
  overage: overage(o),
});

describe("render billing", () => {
  it("money: micro-units with the currency's symbol, exact", () => {
    expect(money(83_334, "USD")).toBe("$0.083334");
    expect(money(5_000_000, "USD")).toBe("$5.00");
    expect(money(1_500_000, "CHF")).toBe("1.50 CHF");
    expect(money(null, "USD")).toBe("?");
  });

  it("me: quota left and reset, credits, overage on with the cap and what is left of it", () => {
    const text = renderMe(me(), now);
    expect(text).toMatch(/^ada \(u_1\), tier pro$/m);
    expect(text).toMatch(/quota +10s left of 25m \(10 of 1500 s\)/);
    expect(text).toMatch(/resets .*\(in 20h\)/);
    expect(text).toMatch(/credits +balance \$2\.00, held \$0\.083334 by calls in flight, available \$1\.916666/);
    expect(text).toMatch(/overage +on: calls past the quota are paid from credits, cap \$5\.00 a month/);
    expect(text).toMatch(/spent \$1\.25 \+ held \$0\.083334 this month \(2025-01/);
    expect(text).toMatch(/\$3\.666666 of the cap left/);
    expect(text).toMatch(/price \$0\.10 per GPU-minute/);
  });

  it("me: when credits do not engage, it says why in words and what to do, for each reason", () => {
    const notOptedIn = renderMe(me({ enabled: false, blockedBy: "not_opted_in", monthlyCapMicros: null }), now);
    expect(notOptedIn).toMatch(/overage +off: you have not turned it on/);
    expect(notOptedIn.replace(/\s+/g, " ")).toContain("`gpupool billing overage on`");
    const free = renderMe(me({ available: false, enabled: false, blockedBy: "tier_without_overage" }, "free"), now);
    expect(free).toMatch(/off: the free tier has no overage: credits do not extend its quota/);
    expect(free).not.toMatch(/price/);
    expect(blockerWords("operator_disabled", "pro")).toMatch(/this pool does not offer overage/);
    expect(blockerWords("not_a_user", "anonymous")).toMatch(/Sign in/);
    expect(overageLines(overage({ enabled: false, blockedBy: "not_opted_in" }), "", now)[0]).toMatch(/^off: /);
  });

  it("wallet: grants in spending order with expiry, transactions with their lease", () => {
    const wallet: Wallet = {
      user: "u_1",
      grants: [
        {
          id: "inc_2025-01_u_1",
          category: "included",
          amountMicros: 2_000_000,
          remainingMicros: 1_966_666,
          heldMicros: 0,
          priority: 0,
          effectiveAt: new Date("2025-01-01T00:00:00Z"),
          expiresAt: new Date("2025-02-01T00:00:00Z"),
          source: "monthly credits of the pro tier, 2025-01",
          createdAt: new Date("2025-01-01T00:00:00Z"),
          currency: "USD",
          display: {},
        },
      ],
      transactions: [
        {
          id: "wt_1",
          at: new Date("2025-01-10T11:59:00Z"),
          kind: "spend",
          amountMicros: 33_334,
          grantId: "inc_2025-01_u_1",
          leaseId: "ls_1",
          display: {},
        },
      ],
      balanceMicros: 1_966_666,
      heldMicros: 0,
      availableMicros: 1_966_666,
      currency: "USD",
      display: {},
    };
    const text = renderWallet(wallet, now);
    expect(text).toMatch(/^Wallet of u_1: balance \$1\.966666, held \$0\.00, available \$1\.966666$/m);
    expect(text).toMatch(/inc_2025-01_u_1 +included +\$2\.00 +\$1\.966666 +\$0\.00 +0 +2025-02-01 \(in 21d 12h\)/);
    expect(text).toMatch(/wt_1 +1m ago +spend +\$0\.033334 +inc_2025-01_u_1 +ls_1/);
  });

  it("usage: records with the quota and overage parts and the money, and the totals under them", () => {
    const record = (id: string, overageS: number, micros: number): UsageRecord => ({
      id,
      identity: { kind: "user", id: "u_1", tier: "pro" },
      app: null,
      appName: null,
      node: "sim-0",
      size: "large",
      status: "released",
      queuedAt: now,
      grantedAt: now,
      endedAt: new Date(now.getTime() - 60_000),
      heldMs: 30_000,
      reservedS: 60,
      chargedS: 10 + overageS,
      quotaS: 10,
      overageS,
      chargedMicros: micros,
      refundedS: 50 - overageS,
      problem: null,
      currency: "USD",
      cost: {
        paidBy: overageS > 0 ? "quota_and_credits" : "quota",
        amountMicros: micros,
        currency: "USD",
        display: { amount: "", gpu: "" },
      },
    });
    const text = renderUsageRecords([record("ls_1", 20, 33_334), record("ls_2", 0, 0)], now);
    expect(text).toMatch(/ls_1 +1m ago +user:u_1 +- +large +released +30s +30s +10s +20s +\$0\.033334/);
    expect(text).toMatch(/2 record\(s\): charged 40s \(quota 20s, overage 20s\), paid \$0\.033334 from credits/);
    expect(renderUsageRecords([], now)).toBe("No usage records in this range.");
  });

  it("usage summary: one row per group, a total, refusals by code", () => {
    const totals = {
      calls: 3,
      granted: 2,
      heldS: 40,
      chargedS: 40,
      quotaS: 20,
      overageS: 20,
      chargedMicros: 33_334,
      refusals: { queue_timeout: 1 },
    };
    const summary: UsageSummary = {
      from: new Date("2025-01-03T00:00:00Z"),
      to: now,
      groupBy: "day",
      currency: "USD",
      groups: [{ key: "2025-01-09", name: null, ...totals }],
      total: totals,
    };
    const text = renderUsageSummary(summary);
    expect(text).toMatch(/^DAY +CALLS +GRANTED/m);
    expect(text).toMatch(/2025-01-09 +3 +2 +40s +40s +20s +20s +\$0\.033334 +queue_timeout 1/);
    expect(text).toMatch(/^total +3 /m);
  });

  it("quota: credits and whether they pay past the quota, beside the quota itself", () => {
    const on = renderQuota({ ...me().quota, credits: me().credits }, now);
    expect(on).toMatch(/credits +\$1\.916666 available \(\$2\.00 balance, \$0\.083334 held\)/);
    expect(on).toMatch(/overage +on: credits pay for calls past the quota, cap \$5\.00 a month/);
    const off = renderQuota(me({ available: false, enabled: false, blockedBy: "operator_disabled" }).quota, now);
    expect(off).not.toMatch(/credits +\$/);
    expect(off).toMatch(/overage +off: this pool does not offer overage/);
  });
});
