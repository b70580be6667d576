import type { LeaseRecord, UsageRecordRow } from "../../storage/store.js";

/**
 * The usage record of a lease that just ended (docs/billing.md): what it held, what it was charged and
 * which bucket paid — the quota first, the rest overage. Its id is the lease's. Its wallet
 * transactions, if it held credits, are added by the settlement (Accounts.step).
 */
export function usageRecordOf(lease: LeaseRecord): UsageRecordRow {
  const quotaMs = Math.min(lease.chargedMs, lease.quotaMs);
  return {
    id: lease.id,
    identityKind: lease.identityKind,
    identityId: lease.identityId,
    tier: lease.tier,
    appId: lease.appId,
    node: lease.node,
    size: lease.size,
    status: lease.status,
    queuedAt: lease.queuedAt,
    grantedAt: lease.grantedAt,
    endedAt: lease.endedAt ?? lease.queuedAt,
    heldMs: lease.heldMs ?? 0,
    reservedMs: lease.reservedMs,
    chargedMs: lease.chargedMs,
    quotaMs,
    overageMs: lease.chargedMs - quotaMs,
    chargedMicros: lease.chargedMicros,
    refundedMs: lease.refundedMs,
    problemCode: lease.problemCode,
    wallet: null,
  };
}
