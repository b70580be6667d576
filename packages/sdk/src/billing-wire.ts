// Billing and usage wire objects (snake_case, ISO times) to the SDK's shapes (camelCase, Dates).
import type * as wire from "@gpupool/contract";
import type {
  Me,
  UsagePage,
  UsageRecord,
  UsageSummary,
  UsageTotals,
  Wallet,
  WalletGrant,
  WalletTransaction,
} from "./billing-types.js";
import { date, dateOrNull, toCredits, toOverage, toQuota } from "./wire.js";

export function toMe(m: wire.Me): Me {
  return {
    user: { id: m.user.id, name: m.user.name, tier: m.user.tier },
    quota: toQuota(m.quota),
    credits: toCredits(m.credits),
    overage: toOverage(m.overage),
  };
}

export function toWalletGrant(g: wire.WalletGrant): WalletGrant {
  return {
    id: g.id,
    category: g.category,
    amountMicros: g.amount_micros,
    remainingMicros: g.remaining_micros,
    heldMicros: g.held_micros,
    priority: g.priority,
    effectiveAt: date(g.effective_at),
    expiresAt: dateOrNull(g.expires_at),
    source: g.source,
    createdAt: date(g.created_at),
    currency: g.currency,
    display: g.display,
  };
}

function toTransaction(t: wire.WalletTransaction): WalletTransaction {
  return {
    id: t.id,
    at: date(t.at),
    kind: t.kind,
    amountMicros: t.amount_micros,
    grantId: t.grant_id,
    leaseId: t.lease_id,
    display: t.display,
  };
}

export function toWallet(w: wire.Wallet): Wallet {
  return {
    user: w.user,
    grants: w.grants.map(toWalletGrant),
    transactions: w.transactions.map(toTransaction),
    balanceMicros: w.balance_micros,
    heldMicros: w.held_micros,
    availableMicros: w.available_micros,
    currency: w.currency,
    display: w.display,
  };
}

export function toUsageRecord(r: wire.UsageRecord): UsageRecord {
  return {
    id: r.id,
    identity: r.identity,
    app: r.app,
    appName: r.app_name,
    node: r.node,
    size: r.size,
    status: r.status,
    queuedAt: date(r.queued_at),
    grantedAt: dateOrNull(r.granted_at),
    endedAt: date(r.ended_at),
    heldMs: r.held_ms,
    reservedS: r.reserved_s,
    chargedS: r.charged_s,
    quotaS: r.quota_s,
    overageS: r.overage_s,
    chargedMicros: r.charged_micros,
    refundedS: r.refunded_s,
    problem: r.problem,
    currency: r.currency,
    cost: {
      paidBy: r.cost.paid_by,
      amountMicros: r.cost.amount_micros,
      currency: r.cost.currency,
      display: r.cost.display,
    },
  };
}

export function toUsagePage(p: wire.UsagePage): UsagePage {
  return { records: p.records.map(toUsageRecord), nextCursor: p.next_cursor };
}

function toTotals(t: wire.UsageTotals): UsageTotals {
  return {
    calls: t.calls,
    granted: t.granted,
    heldS: t.held_s,
    chargedS: t.charged_s,
    quotaS: t.quota_s,
    overageS: t.overage_s,
    chargedMicros: t.charged_micros,
    refusals: t.refusals,
  };
}

export function toUsageSummary(s: wire.UsageSummary): UsageSummary {
  return {
    from: date(s.from),
    to: date(s.to),
    groupBy: s.group_by,
    currency: s.currency,
    groups: s.groups.map((g) => ({ key: g.key, name: g.name, ...toTotals(g) })),
    total: toTotals(s.total),
  };
}
