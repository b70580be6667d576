// From the contract's wire objects (snake_case, ISO times) to the SDK's public shapes (camelCase,
// Dates). Decoding itself is the contract's: see Transport.decoded.
import { PROBLEM_STATUS, PROBLEM_TITLES, problemType } from "@gpupool/contract";
import type * as wire from "@gpupool/contract";
import type {
  App,
  CreatedApp,
  CreatedPrincipal,
  CreatedUser,
  Diagnosis,
  DiagnosisVerdict,
  Credits,
  IpToken,
  Lease,
  LeaseBilling,
  Overage,
  PoolState,
  Problem,
  Quota,
  ReleaseResult,
  User,
} from "./types.js";

export const date = (iso: string): Date => new Date(iso);
export const dateOrNull = (iso: string | null): Date | null => (iso === null ? null : new Date(iso));

export function toLeaseBilling(b: wire.LeaseBilling): LeaseBilling {
  return {
    quotaS: b.quota_s,
    overageS: b.overage_s,
    holdMicros: b.hold_micros,
    chargedMicros: b.charged_micros,
    currency: b.currency,
    display: b.display,
  };
}

export function toCredits(c: wire.Credits): Credits {
  return {
    balanceMicros: c.balance_micros,
    heldMicros: c.held_micros,
    availableMicros: c.available_micros,
    currency: c.currency,
    display: c.display,
  };
}

export function toOverage(o: wire.Overage): Overage {
  return {
    available: o.available,
    enabled: o.enabled,
    blockedBy: o.blocked_by,
    pricePerGpuMinuteMicros: o.price_per_gpu_minute_micros,
    monthlyCapMicros: o.monthly_cap_micros,
    spentMicros: o.spent_micros,
    heldMicros: o.held_micros,
    month: o.month,
    monthEndsAt: date(o.month_ends_at),
    currency: o.currency,
    display: o.display,
  };
}

export function toQuota(q: wire.Quota): Quota {
  return {
    identity: q.identity,
    quota: q.quota,
    used: q.used,
    reserved: q.reserved,
    left: q.left,
    bonus: q.bonus,
    window: q.window,
    windowStartedAt: dateOrNull(q.window_started_at),
    resetsAt: dateOrNull(q.resets_at),
    priority: q.priority,
    maxDuration: q.max_duration,
    runs: q.runs,
    maxRuns: q.max_runs,
    // Absent from servers older than billing: null, as for an identity without a wallet.
    credits: q.credits == null ? null : toCredits(q.credits),
    overage: q.overage === undefined ? null : toOverage(q.overage),
  };
}

/** A lease's `{ code, detail }` as a whole problem: the status and title come with the code. */
function leaseProblem(p: wire.LeaseProblem): Problem {
  return {
    type: problemType(p.code),
    title: PROBLEM_TITLES[p.code],
    status: PROBLEM_STATUS[p.code],
    detail: p.detail ?? PROBLEM_TITLES[p.code],
    code: p.code,
  };
}

export function toLease(l: wire.Lease): Lease {
  return {
    id: l.id,
    status: l.status,
    app: l.app,
    identity: l.identity,
    size: l.size,
    duration: l.duration,
    reserved: l.reserved,
    cost: l.cost,
    node: l.node,
    device: l.device,
    queuedAt: date(l.queued_at),
    grantedAt: dateOrNull(l.granted_at),
    deadline: dateOrNull(l.deadline),
    endedAt: dateOrNull(l.ended_at),
    position: l.position,
    reason: l.reason,
    etaS: l.eta_s,
    etaMaxS: l.eta_max_s ?? null,
    heldMs: l.held_ms,
    charged: l.charged,
    refunded: l.refunded,
    failed: l.failed,
    billing: l.billing === undefined ? null : toLeaseBilling(l.billing),
    problem: l.problem === null ? null : leaseProblem(l.problem),
    quota: l.quota === null ? null : toQuota(l.quota),
  };
}

export function toReleaseResult(r: wire.ReleaseResult): ReleaseResult {
  return {
    id: r.id,
    status: r.status,
    heldMs: r.held_ms,
    charged: r.charged,
    refunded: r.refunded,
    billing: r.billing === undefined ? null : toLeaseBilling(r.billing),
    quota: toQuota(r.quota),
  };
}

function toVerdict(v: wire.DiagnosisVerdict): DiagnosisVerdict {
  switch (v.outcome) {
    case "granted":
    case "admitted":
      return { outcome: v.outcome, position: null, reason: null, etaS: null, etaMaxS: null, problem: null };
    case "queued":
      return {
        outcome: v.outcome,
        position: v.position,
        reason: v.reason,
        etaS: v.eta_s,
        etaMaxS: v.eta_max_s ?? null,
        problem: null,
      };
    case "rejected":
      return { outcome: v.outcome, position: null, reason: null, etaS: null, etaMaxS: null, problem: v.problem };
  }
}

export function toDiagnosis(d: wire.Diagnosis): Diagnosis {
  return {
    identity: d.identity,
    steps: d.steps,
    request: d.request,
    quota: d.quota === null ? null : toQuota(d.quota),
    buckets: d.buckets,
    verdict: toVerdict(d.verdict),
    causes: d.causes,
  };
}

export function toIpToken(t: wire.IpToken): IpToken {
  return { token: t.token, expiresAt: date(t.expires_at), subject: t.subject };
}

export function toUser(u: wire.User | wire.UserWithQuota): User {
  return {
    id: u.id,
    name: u.name,
    tier: u.tier,
    quotaOverride: u.quota_override,
    quota: "quota" in u ? toQuota(u.quota) : null,
  };
}

export function toCreatedUser(u: wire.CreatedUser): CreatedUser {
  return { id: u.id, name: u.name, tier: u.tier, token: u.token };
}

export function toApp(a: wire.App): App {
  return { id: a.id, name: a.name, owner: a.owner, maxConcurrency: a.max_concurrency };
}

export function toCreatedApp(a: wire.CreatedApp): CreatedApp {
  return { ...toApp(a), key: a.key };
}

export function toCreatedPrincipal(k: wire.CreatedKey): CreatedPrincipal {
  return { id: k.id, name: k.name, key: k.key };
}

export function toPoolState(p: wire.PoolView): PoolState {
  return {
    leader: p.leader,
    source: p.source,
    nodes: p.nodes.map((n) => ({
      name: n.name,
      kind: n.kind,
      state: n.state,
      heartbeatAt: dateOrNull(n.heartbeat_at),
      agentUrl: n.agent_url,
    })),
    devices: p.devices.map((d) => ({
      node: d.node,
      index: d.index,
      uuid: d.uuid,
      name: d.name,
      memoryMb: d.memory_mb,
      slots: d.slots,
    })),
    slots: p.slots,
    active: p.active.map((a) => ({
      id: a.id,
      app: a.app,
      identity: a.identity,
      size: a.size,
      node: a.node,
      device: a.device,
      deadline: dateOrNull(a.deadline),
    })),
    queue: p.queue,
    queued: {
      total: p.queued.total,
      listed: p.queued.listed,
      byReason: p.queued.by_reason,
      byKind: p.queued.by_kind,
    },
  };
}
