import type * as wire from "@gpupool/contract";
import { msToSeconds } from "@gpupool/core";
import type { AuditRecord, UserRecord } from "../storage/store.js";
import type { IdentityQuota } from "../use-cases/accounts/accounts.js";
import type { AppSummary, QueueSummary, RefusalsSummary } from "../use-cases/admin/dashboard-views.js";
import { creditsJson, overageJson } from "./billing-views.js";
import { iso } from "./iso.js";
import { quotaJson } from "./views.js";

/** The dashboard's answers in the wire format of @gpupool/contract. */

const seconds = (ms: number | null): number | null => (ms === null ? null : msToSeconds(ms));

/** `GET /v1/me` (also the `me` event of `GET /v1/me/events`). */
export function meJson(user: UserRecord, quota: IdentityQuota): wire.Me {
  const b = quota.billing;
  return {
    user: { id: user.id, name: user.name, tier: user.tier },
    quota: quotaJson(quota),
    // A user always has a wallet (empty until credits are granted).
    credits: creditsJson(b.credits ?? { balanceMicros: 0, heldMicros: 0, availableMicros: 0 }, b.currency),
    overage: overageJson(b.overage, b.currency),
  };
}

export function queueJson(q: QueueSummary): wire.QueueView {
  return {
    leader: q.leader,
    depth: q.depth,
    oldest_wait_s: seconds(q.oldestWaitMs),
    tiers: q.tiers.map((t) => ({ tier: t.tier, depth: t.depth, oldest_wait_s: seconds(t.oldestWaitMs) })),
    last_hour: {
      granted: q.lastHour.granted,
      wait_p50_s: seconds(q.lastHour.waitP50Ms),
      wait_p95_s: seconds(q.lastHour.waitP95Ms),
    },
  };
}

export function refusalsJson(r: RefusalsSummary): wire.RefusalsView {
  return {
    from: iso(r.from),
    to: iso(r.to),
    hours: r.hours.map((h) => ({ hour: iso(h.hour), refusals: h.counts })),
    total: r.total,
  };
}

export function auditJson(e: AuditRecord): wire.AuditEntry {
  let detail: Record<string, unknown> = {};
  try {
    detail = JSON.parse(e.detail) as Record<string, unknown>;
  } catch {
    // Written by this server as JSON; an unreadable one is shown empty rather than failing the page.
  }
  return {
    id: e.id,
    at: iso(e.at),
    action: e.action,
    target: e.target,
    actor: e.actor === "dashboard" ? "dashboard" : "admin_token",
    detail,
  };
}

export function appStatsJson(a: AppSummary): wire.AppStats {
  const pair = (p: { p50: number | null; p95: number | null }) => ({ p50_s: seconds(p.p50), p95_s: seconds(p.p95) });
  return {
    app: a.app.id,
    name: a.app.name,
    owner: a.app.ownerId,
    calls: a.calls,
    granted: a.granted,
    gpu_s: msToSeconds(a.heldMs),
    charged_s: msToSeconds(a.chargedMs),
    refusals: a.refusals,
    wait: pair(a.waitMs),
    requested: pair(a.requestedMs),
    held: pair(a.heldMsPercentiles),
    suggested_duration_s: a.suggestedDurationS,
  };
}
