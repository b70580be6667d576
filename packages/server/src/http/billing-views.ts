import type * as wire from "@gpupool/contract";
import { creditTotals, displayMoney, msToSeconds, spendingOrder } from "@gpupool/core";
import type { CreditTotals } from "@gpupool/core";
import type { GrantRecord, LeaseRecord, UsageRecordRow, WalletTransactionRecord } from "../storage/store.js";
import type { BillingView, OverageView } from "../use-cases/accounts/wallets.js";
import { iso } from "./iso.js";

/** `display` of an object's money fields: each `<name>_micros` as `<name>` for people. */
function display(fields: Readonly<Record<string, number>>, currency: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, micros] of Object.entries(fields)) out[name] = displayMoney(micros, currency);
  return out;
}

export function leaseBillingJson(l: LeaseRecord, currency: string): wire.LeaseBilling {
  return {
    quota_s: msToSeconds(l.quotaMs),
    overage_s: msToSeconds(l.overageMs),
    hold_micros: l.holdMicros,
    charged_micros: l.chargedMicros,
    currency,
    display: display({ hold: l.holdMicros, charged: l.chargedMicros }, currency),
  };
}

export function creditsJson(c: CreditTotals, currency: string): wire.Credits {
  return {
    balance_micros: c.balanceMicros,
    held_micros: c.heldMicros,
    available_micros: c.availableMicros,
    currency,
    display: display({ balance: c.balanceMicros, held: c.heldMicros, available: c.availableMicros }, currency),
  };
}

export function overageJson(o: OverageView, currency: string): wire.Overage {
  return {
    available: o.available,
    enabled: o.enabled,
    blocked_by: o.blockedBy,
    price_per_gpu_minute_micros: o.pricePerMinuteMicros,
    monthly_cap_micros: o.capMicros,
    spent_micros: o.spentMicros,
    held_micros: o.heldMicros,
    month: o.month,
    month_ends_at: iso(o.monthEndsAt),
    currency,
    display: display(
      {
        price_per_gpu_minute: o.pricePerMinuteMicros,
        ...(o.capMicros === null ? {} : { monthly_cap: o.capMicros }),
        spent: o.spentMicros,
        held: o.heldMicros,
      },
      currency,
    ),
  };
}

/** The quota object's billing fields. */
export function quotaBillingJson(b: BillingView): Pick<wire.Quota, "credits" | "overage"> {
  return {
    credits: b.credits === null ? null : creditsJson(b.credits, b.currency),
    overage: overageJson(b.overage, b.currency),
  };
}

export function grantJson(g: GrantRecord, currency: string): wire.WalletGrant {
  return {
    id: g.id,
    category: g.category,
    amount_micros: g.amountMicros,
    remaining_micros: g.remainingMicros,
    held_micros: g.heldMicros,
    priority: g.priority,
    effective_at: iso(g.effectiveAt),
    expires_at: iso(g.expiresAt),
    source: g.source,
    created_at: iso(g.createdAt),
    currency,
    display: display({ amount: g.amountMicros, remaining: g.remainingMicros, held: g.heldMicros }, currency),
  };
}

export function walletJson(
  userId: string,
  grants: readonly GrantRecord[],
  transactions: readonly WalletTransactionRecord[],
  now: number,
  currency: string,
): wire.Wallet {
  const totals = creditTotals(grants, now);
  return {
    user: userId,
    grants: [...grants].sort(spendingOrder).map((g) => grantJson(g, currency)),
    transactions: transactions.map((t) => ({
      id: t.id,
      at: iso(t.at),
      kind: t.kind,
      amount_micros: t.amountMicros,
      grant_id: t.grantId,
      lease_id: t.leaseId,
      display: display({ amount: t.amountMicros }, currency),
    })),
    ...creditsJson(totals, currency),
  };
}

/** Which bucket paid a call's charged seconds: the quota first, the rest credits (docs/billing.md). */
function paidBy(r: UsageRecordRow): wire.UsageCost["paid_by"] {
  if (r.chargedMs === 0) return "nothing";
  if (r.overageMs === 0) return "quota";
  return r.quotaMs === 0 ? "credits" : "quota_and_credits";
}

/** GPU seconds by bucket, for people: "12 s quota + 3 s credits". */
function gpuDisplay(r: UsageRecordRow): string {
  const parts: string[] = [];
  if (r.quotaMs > 0) parts.push(`${msToSeconds(r.quotaMs)} s quota`);
  if (r.overageMs > 0) parts.push(`${msToSeconds(r.overageMs)} s credits`);
  return parts.length === 0 ? "nothing charged" : parts.join(" + ");
}

export function usageCostJson(r: UsageRecordRow, currency: string): wire.UsageCost {
  return {
    paid_by: paidBy(r),
    amount_micros: r.chargedMicros,
    currency,
    display: { amount: displayMoney(r.chargedMicros, currency), gpu: gpuDisplay(r) },
  };
}

/** A usage record; `appNames` names its app (only the name: see Billing.appNames). */
export function usageJson(
  r: UsageRecordRow,
  currency: string,
  appNames: ReadonlyMap<string, string>,
): wire.UsageRecord {
  return {
    id: r.id,
    identity: { kind: r.identityKind, id: r.identityId, tier: r.tier },
    app: r.appId,
    app_name: r.appId === null ? null : (appNames.get(r.appId) ?? null),
    node: r.node,
    size: r.size,
    status: r.status as wire.UsageRecord["status"],
    queued_at: iso(r.queuedAt),
    granted_at: iso(r.grantedAt),
    ended_at: iso(r.endedAt),
    held_ms: r.heldMs,
    reserved_s: msToSeconds(r.reservedMs),
    charged_s: msToSeconds(r.chargedMs),
    quota_s: msToSeconds(r.quotaMs),
    overage_s: msToSeconds(r.overageMs),
    charged_micros: r.chargedMicros,
    refunded_s: msToSeconds(r.refundedMs),
    problem: r.problemCode as wire.UsageRecord["problem"],
    currency,
    cost: usageCostJson(r, currency),
  };
}
