// Billing and usage answers as the server sends them, each checked against the contract.
import { Me, UsagePage, UsageRecord, UsageSummary, Wallet, WalletGrant } from "@gpupool/contract";
import { overageOff, quotaObject } from "./fake-control-plane.js";

export const credits = {
  balance_micros: 2_500_000,
  held_micros: 83_334,
  available_micros: 2_416_666,
  currency: "USD",
  display: { balance: "$2.50", held: "$0.083334", available: "$2.416666" },
};

export const overageOn = {
  ...overageOff,
  available: true,
  enabled: true,
  blocked_by: null,
  price_per_gpu_minute_micros: 100_000,
  monthly_cap_micros: 5_000_000,
  spent_micros: 1_000_000,
  held_micros: 83_334,
  display: { price_per_gpu_minute: "$0.10", monthly_cap: "$5.00", spent: "$1.00", held: "$0.083334" },
};

export const meObject = Me.parse({
  user: { id: "u_1", name: "ada", tier: "pro" },
  quota: { ...quotaObject, identity: { kind: "user", id: "u_1", tier: "pro" }, credits, overage: overageOn },
  credits,
  overage: overageOn,
});

export const grantObject = WalletGrant.parse({
  id: "cg_1",
  category: "purchased",
  amount_micros: 10_000_000,
  remaining_micros: 10_000_000,
  held_micros: 0,
  priority: 10,
  effective_at: "2025-01-01T10:00:00.000Z",
  expires_at: null,
  source: "stripe:cs_test_1",
  created_at: "2025-01-01T10:00:00.000Z",
  currency: "USD",
  display: { amount: "$10.00", remaining: "$10.00", held: "$0.00" },
});

export const walletObject = Wallet.parse({
  user: "u_1",
  grants: [grantObject],
  transactions: [
    {
      id: "wt_2",
      at: "2025-01-01T10:05:00.000Z",
      kind: "hold",
      amount_micros: 83_334,
      grant_id: "cg_1",
      lease_id: "ls_9",
      display: { amount: "$0.083334" },
    },
  ],
  balance_micros: 10_000_000,
  held_micros: 83_334,
  available_micros: 9_916_666,
  currency: "USD",
  display: { balance: "$10.00", held: "$0.083334", available: "$9.916666" },
});

export function usageRecord(id: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return UsageRecord.parse({
    id,
    identity: { kind: "user", id: "u_1", tier: "pro" },
    app: "a_demo",
    app_name: "demo",
    node: "sim-0",
    size: "large",
    status: "released",
    queued_at: "2025-01-01T10:00:00.000Z",
    granted_at: "2025-01-01T10:00:00.000Z",
    ended_at: "2025-01-01T10:00:30.000Z",
    held_ms: 30_000,
    reserved_s: 60,
    charged_s: 30,
    quota_s: 10,
    overage_s: 20,
    charged_micros: 33_334,
    refunded_s: 30,
    problem: null,
    currency: "USD",
    cost: {
      paid_by: "quota_and_credits",
      amount_micros: 33_334,
      currency: "USD",
      display: { amount: "$0.033334", gpu: "10 s quota + 20 s credits" },
    },
    ...overrides,
  });
}

export function usagePage(ids: readonly string[], nextCursor: string | null): Record<string, unknown> {
  return UsagePage.parse({ records: ids.map((id) => usageRecord(id)), next_cursor: nextCursor });
}

const totals = {
  calls: 2,
  granted: 1,
  held_s: 30,
  charged_s: 30,
  quota_s: 10,
  overage_s: 20,
  charged_micros: 33_334,
  refusals: { queue_timeout: 1 },
};

export const summaryObject = UsageSummary.parse({
  from: "2025-01-01T00:00:00.000Z",
  to: "2025-01-08T00:00:00.000Z",
  group_by: "app",
  currency: "USD",
  groups: [{ key: "a_demo", name: "demo", ...totals }],
  total: totals,
});
