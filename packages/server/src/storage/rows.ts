import type { IdentityKind, LedgerState } from "@gpupool/core";
import { decodeDevices } from "./devices-json.js";
import type {
  AppRecord,
  KeyedRecord,
  LeaseRecord,
  LeaseStatus,
  NodeRecord,
  SessionRecord,
  SigningKeyRecord,
  UserRecord,
} from "./store.js";

/**
 * Rows as both adapters return them, by column name. The schemas are the same; only the value
 * types differ a little (PostgreSQL's BIGINT arrives as a string, its BOOLEAN as a boolean,
 * SQLite's as numbers), which these conversions absorb.
 */
export type Row = Record<string, unknown>;

export function n(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

/** TEXT columns come back as strings (or null). */
export function t(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

export function tn(v: unknown): string | null {
  return v === null || v === undefined ? null : t(v);
}

/** SQLite stores booleans as 0/1, PostgreSQL as BOOLEAN. */
function bool(v: unknown): boolean {
  return v === true || Number(v) === 1;
}

export function toUser(r: Row | undefined): UserRecord | null {
  if (!r) return null;
  return {
    id: t(r["id"]),
    name: t(r["name"]),
    tier: t(r["tier"]),
    tokenHash: t(r["token_hash"]),
    quotaOverrideMs: n(r["quota_override_ms"]),
    createdAt: Number(r["created_at"]),
  };
}

export function toApp(r: Row | undefined): AppRecord | null {
  if (!r) return null;
  return {
    id: t(r["id"]),
    name: t(r["name"]),
    ownerId: t(r["owner_id"]),
    keyHash: t(r["key_hash"]),
    maxConcurrency: n(r["max_concurrency"]),
    createdAt: Number(r["created_at"]),
  };
}

export function toKeyed(r: Row | undefined): KeyedRecord | null {
  if (!r) return null;
  return { id: t(r["id"]), name: t(r["name"]), keyHash: t(r["key_hash"]), createdAt: Number(r["created_at"]) };
}

export function toNode(r: Row | undefined): NodeRecord | null {
  const keyed = toKeyed(r);
  if (!r || !keyed) return null;
  return {
    ...keyed,
    devices: decodeDevices(r["devices"]),
    registeredAt: n(r["registered_at"]),
    heartbeatAt: n(r["heartbeat_at"]),
    agentUrl: tn(r["agent_url"]),
  };
}

export function toLedger(r: Row | undefined): LedgerState | null {
  if (!r) return null;
  return {
    windowStartedAt: n(r["window_started_at"]),
    usedMs: Number(r["used_ms"]),
    reservedMs: Number(r["reserved_ms"]),
    bonusMs: Number(r["bonus_ms"]),
    runs: Number(r["runs"]),
  };
}

/** Slot indexes are stored as "0,1" (or NULL before a grant). */
export function encodeSlots(slots: readonly number[] | null): string | null {
  return slots === null ? null : slots.join(",");
}

export function toLease(r: Row | undefined): LeaseRecord | null {
  if (!r) return null;
  const slots = r["slot_indexes"];
  return {
    id: t(r["id"]),
    seq: Number(r["seq"]),
    appId: tn(r["app_id"]),
    identityKind: r["identity_kind"] as IdentityKind,
    identityId: t(r["identity_id"]),
    tier: t(r["tier"]),
    size: t(r["size"]),
    slots: Number(r["slots"]),
    cost: Number(r["cost"]),
    durationMs: Number(r["duration_ms"]),
    reservedMs: Number(r["reserved_ms"]),
    status: r["status"] as LeaseStatus,
    node: tn(r["node"]),
    deviceIndex: n(r["device_index"]),
    deviceUuid: tn(r["device_uuid"]),
    deviceName: tn(r["device_name"]),
    slotIndexes:
      typeof slots === "string"
        ? slots
            .split(",")
            .filter((s) => s !== "")
            .map(Number)
        : null,
    queuedAt: Number(r["queued_at"]),
    grantedAt: n(r["granted_at"]),
    deadline: n(r["deadline"]),
    endedAt: n(r["ended_at"]),
    heldMs: n(r["held_ms"]),
    chargedMs: Number(r["charged_ms"]),
    refundedMs: Number(r["refunded_ms"]),
    failed: bool(r["failed"]),
    windowStartedAt: n(r["window_started_at"]),
    problemCode: tn(r["problem_code"]),
    problemDetail: tn(r["problem_detail"]),
  };
}

export function toSigningKey(r: Row): SigningKeyRecord {
  return {
    kid: t(r["kid"]),
    privateJwk: t(r["private_jwk"]),
    publicJwk: t(r["public_jwk"]),
    createdAt: Number(r["created_at"]),
  };
}

export function toSession(r: Row | undefined): SessionRecord | null {
  if (!r) return null;
  return {
    idHash: t(r["id_hash"]),
    userId: t(r["user_id"]),
    createdAt: Number(r["created_at"]),
    expiresAt: Number(r["expires_at"]),
    revokedAt: n(r["revoked_at"]),
  };
}
