import type * as wire from "@gpupool/contract";
import { msToSeconds } from "@gpupool/core";
import type { Identity, Problem, QueuePlace } from "@gpupool/core";
import type { AppRecord, LeaseRecord, UserRecord } from "../storage/store.js";
import type { IdentityQuota } from "../use-cases/accounts/accounts.js";
import type { PoolView } from "../use-cases/admin/pool-view.js";
import { boundSeconds, expectedSeconds } from "../use-cases/leases/eta.js";
import type { Diagnosis } from "../use-cases/leases/diagnose.js";
import type { Released } from "../use-cases/leases/leases.js";
import type { LeaseUpdate } from "../use-cases/leases/lease-requests.js";
import { leaseBillingJson, quotaBillingJson } from "./billing-views.js";
import { iso } from "./iso.js";

/**
 * The server's answers in the wire format of @gpupool/contract (docs/wire.md is generated from
 * it): every serializer returns the contract's type, so a field the contract does not name, or a
 * missing one, does not compile. Seconds for amounts, ISO 8601 for times.
 */

export { iso };

export function identityJson(identity: Identity): wire.Identity {
  return { kind: identity.kind, id: identity.id, tier: identity.tier };
}

export function quotaJson(q: IdentityQuota): wire.Quota {
  const { identity, view: v } = q;
  return {
    identity: identityJson(identity),
    quota: msToSeconds(v.quotaMs),
    used: msToSeconds(v.usedMs),
    reserved: msToSeconds(v.reservedMs),
    left: msToSeconds(v.leftMs),
    bonus: msToSeconds(v.bonusMs),
    window: msToSeconds(v.windowMs),
    window_started_at: iso(v.windowStartedAt),
    resets_at: iso(v.resetsAt),
    priority: v.priority,
    max_duration: msToSeconds(v.maxDurationMs),
    runs: v.runs,
    max_runs: v.maxRuns,
    ...quotaBillingJson(q.billing),
  };
}

export function quotaOf(q: IdentityQuota | null): wire.Quota | null {
  return q === null ? null : quotaJson(q);
}

export function leaseJson(
  l: LeaseRecord,
  place: QueuePlace | null,
  quota: wire.Quota | null,
  currency: string,
): wire.Lease {
  return {
    id: l.id,
    status: l.status,
    app: l.appId,
    identity: { kind: l.identityKind, id: l.identityId, tier: l.tier },
    size: l.size,
    duration: msToSeconds(l.durationMs),
    reserved: msToSeconds(l.reservedMs),
    cost: l.cost,
    // Set at grant; before that a lease may already name the node it waits for (through an agent).
    node: l.node,
    device:
      l.deviceIndex === null || l.node === null
        ? null
        : {
            node: l.node,
            index: l.deviceIndex,
            uuid: l.deviceUuid ?? "",
            name: l.deviceName ?? "",
            slots: [...(l.slotIndexes ?? [])],
          },
    queued_at: iso(l.queuedAt),
    granted_at: iso(l.grantedAt),
    deadline: iso(l.deadline),
    ended_at: iso(l.endedAt),
    position: place?.position ?? null,
    reason: place?.reason ?? null,
    eta_s: expectedSeconds(place),
    eta_max_s: boundSeconds(place),
    held_ms: l.heldMs,
    charged: msToSeconds(l.chargedMs),
    refunded: msToSeconds(l.refundedMs),
    failed: l.failed,
    billing: leaseBillingJson(l, currency),
    problem:
      l.problemCode === null ? null : { code: l.problemCode as wire.LeaseProblem["code"], detail: l.problemDetail },
    quota,
  };
}

export function releasedJson(r: Released, currency: string): wire.ReleaseResult {
  const l = r.lease;
  return {
    id: l.id,
    status: l.status,
    held_ms: l.heldMs,
    charged: msToSeconds(l.chargedMs),
    refunded: msToSeconds(l.refundedMs),
    billing: leaseBillingJson(l, currency),
    quota: quotaJson(r.quota),
  };
}

/** One Server-Sent Event of a lease's stream: its name and data. */
export function leaseEventJson(
  u: LeaseUpdate,
  currency: string,
): {
  event: wire.LeaseEventName;
  data: wire.QueuedEvent | wire.GrantedEvent | wire.FailedEvent | wire.EndedEvent;
} {
  switch (u.type) {
    case "queued":
      return {
        event: "queued",
        data: {
          position: u.place.position,
          reason: u.place.reason,
          eta_s: expectedSeconds(u.place),
          eta_max_s: boundSeconds(u.place),
        },
      };
    case "failed":
      return { event: "failed", data: { problem: problemJson(u.problem) } };
    case "granted":
    case "ended":
      return { event: u.type, data: { lease: leaseJson(u.lease, null, quotaOf(u.quota), currency) } };
  }
}

export function problemJson(p: Problem): wire.Problem {
  return p;
}

export function userJson(u: UserRecord): wire.User {
  return {
    id: u.id,
    name: u.name,
    tier: u.tier,
    quota_override: u.quotaOverrideMs === null ? null : msToSeconds(u.quotaOverrideMs),
    created_at: iso(u.createdAt),
  };
}

export function appJson(a: AppRecord): wire.App {
  return { id: a.id, name: a.name, owner: a.ownerId, max_concurrency: a.maxConcurrency, created_at: iso(a.createdAt) };
}

export function poolJson(view: PoolView): wire.PoolView {
  return {
    // A replica that does not lead rebuilds the view from the database (see PoolViewer).
    leader: view.source === "leader",
    source: view.source,
    nodes: view.nodes.map((n) => ({
      name: n.name,
      kind: n.kind,
      state: n.state,
      heartbeat_at: iso(n.heartbeatAt),
      agent_url: n.agentUrl,
    })),
    devices: view.devices.map((d) => ({
      node: d.spec.node,
      index: d.spec.index,
      uuid: d.spec.uuid,
      name: d.spec.name,
      memory_mb: d.spec.memoryMb,
      slots: d.holders,
    })),
    slots: view.slots,
    active: view.active.map((l) => ({
      id: l.id,
      app: l.appId,
      identity: `${l.identityKind}:${l.identityId}`,
      size: l.size,
      node: l.node,
      device: l.deviceIndex,
      deadline: iso(l.deadline),
    })),
    queue: view.queue.map((q) => ({ ...q })),
    queued: {
      total: view.queued.total,
      listed: view.queued.listed,
      by_reason: { ...view.queued.byReason },
      by_kind: { ...view.queued.byKind },
    },
  };
}

export function diagnosisJson(d: Diagnosis, buckets: wire.DiagnosisBucket[]): wire.Diagnosis {
  const { durationMs, size } = d.request;
  return {
    identity: d.identity === null ? null : identityJson(d.identity),
    steps: d.steps.map((s) => ({ ...s })),
    request: {
      duration: durationMs / 1000,
      size: size.name,
      cost: size.cost,
      reserves: (durationMs * size.cost) / 1000,
    },
    quota: quotaOf(d.quota),
    buckets,
    verdict:
      d.verdict.outcome === "rejected"
        ? { outcome: "rejected", problem: problemJson(d.verdict.problem) }
        : (d.verdict as wire.DiagnosisVerdict),
    causes: d.causes.map((c) => ({ ...c })),
  };
}
