import { msToSeconds } from "@gpupool/core";
import type { Identity, QuotaView, WaitReason } from "@gpupool/core";
import type { LeaseRecord } from "../storage/store.js";

/**
 * `new Date(ms).toISOString()`, with the part up to the second kept for the few seconds a response
 * names (now, a deadline, a window's reset): formatting dates was ~2% of a lease request.
 */
const secondsPrefix = new Map<number, string>();
export function iso(ms: number | null): string | null {
  if (ms === null) return null;
  if (!Number.isInteger(ms) || ms < 0 || ms >= 253_402_300_800_000) return new Date(ms).toISOString(); // outside years 1970–9999
  const second = Math.floor(ms / 1000);
  let prefix = secondsPrefix.get(second);
  if (prefix === undefined) {
    if (secondsPrefix.size >= 256) secondsPrefix.clear();
    prefix = new Date(second * 1000).toISOString().slice(0, 20); // "2026-11-30T23:59:59."
    secondsPrefix.set(second, prefix);
  }
  const millis = ms - second * 1000;
  return `${prefix}${millis < 10 ? "00" : millis < 100 ? "0" : ""}${millis}Z`;
}

/** The quota object of the wire format (docs/wire.md): seconds and ISO times. */
export function quotaJson(identity: Identity, v: QuotaView): Record<string, unknown> {
  return {
    identity: { kind: identity.kind, id: identity.id, tier: identity.tier },
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
  };
}

export function leaseJson(
  l: LeaseRecord,
  place: { position: number; reason: WaitReason; etaMs?: number | null } | null,
  quota: Record<string, unknown> | null,
): Record<string, unknown> {
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
        : { node: l.node, index: l.deviceIndex, uuid: l.deviceUuid, name: l.deviceName, slots: l.slotIndexes ?? [] },
    queued_at: iso(l.queuedAt),
    granted_at: iso(l.grantedAt),
    deadline: iso(l.deadline),
    ended_at: iso(l.endedAt),
    position: place?.position ?? null,
    reason: place?.reason ?? null,
    eta_s: place?.etaMs === undefined || place.etaMs === null ? null : Math.ceil(place.etaMs / 1000),
    held_ms: l.heldMs,
    charged: msToSeconds(l.chargedMs),
    refunded: msToSeconds(l.refundedMs),
    failed: l.failed,
    problem: l.problemCode === null ? null : { code: l.problemCode, detail: l.problemDetail },
    quota,
  };
}
