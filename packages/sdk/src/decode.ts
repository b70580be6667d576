import type {
  App,
  CreatedApp,
  CreatedPrincipal,
  CreatedUser,
  Device,
  Diagnosis,
  DiagnosisCause,
  DiagnosisStep,
  DiagnosisBucket,
  DiagnosisRequest,
  DiagnosisVerdict,
  Identity,
  IdentityKind,
  IpToken,
  Lease,
  LeaseStatus,
  Problem,
  QueueReason,
  Quota,
  ReleaseResult,
  User,
} from "./types.js";

// The decoders are lenient on purpose: a field the server omits becomes null / NaN / ""
// instead of a crash, because an SDK that is a minor version behind (or ahead) of the
// control plane should still hand the caller whatever it could read.

type Wire = Readonly<Record<string, unknown>>;

export function isRecord(value: unknown): value is Wire {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function record(value: unknown): Wire {
  return isRecord(value) ? value : {};
}

export function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

export function strOrNull(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

/** NaN (not 0) for a missing amount, so a server bug never reads as "0 seconds left". */
export function num(value: unknown): number {
  return typeof value === "number" ? value : Number.NaN;
}

export function numOrNull(value: unknown): number | null {
  return typeof value === "number" ? value : null;
}

export function dateOrNull(value: unknown): Date | null {
  if (typeof value !== "string" && typeof value !== "number") return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function list<T>(value: unknown, decode: (item: unknown) => T): T[] {
  return Array.isArray(value) ? value.map(decode) : [];
}

export function isProblem(value: unknown): value is Problem {
  return isRecord(value) && typeof value["code"] === "string";
}

export function problemOrNull(value: unknown): Problem | null {
  return isProblem(value) ? value : null;
}

export function decodeIdentity(value: unknown): Identity {
  const w = record(value);
  return { kind: str(w["kind"]) as IdentityKind, id: str(w["id"]), tier: str(w["tier"]) };
}

export function decodeQuota(value: unknown): Quota {
  const w = record(value);
  return {
    identity: decodeIdentity(w["identity"]),
    quota: num(w["quota"]),
    used: num(w["used"]),
    reserved: num(w["reserved"]),
    left: num(w["left"]),
    bonus: numOrNull(w["bonus"]) ?? 0,
    window: num(w["window"]),
    windowStartedAt: dateOrNull(w["window_started_at"]),
    resetsAt: dateOrNull(w["resets_at"]),
    priority: num(w["priority"]),
    maxDuration: num(w["max_duration"]),
    runs: numOrNull(w["runs"]),
    maxRuns: numOrNull(w["max_runs"]),
  };
}

function quotaOrNull(value: unknown): Quota | null {
  return isRecord(value) ? decodeQuota(value) : null;
}

function decodeDevice(value: unknown): Device | null {
  if (!isRecord(value)) return null;
  return {
    node: str(value["node"]),
    index: num(value["index"]),
    uuid: str(value["uuid"]),
    name: str(value["name"]),
    slots: list(value["slots"], num),
  };
}

export function decodeLease(value: unknown): Lease {
  const w = record(value);
  return {
    id: str(w["id"]),
    status: str(w["status"]) as LeaseStatus,
    app: strOrNull(w["app"]),
    identity: decodeIdentity(w["identity"]),
    size: str(w["size"]),
    duration: num(w["duration"]),
    reserved: num(w["reserved"]),
    cost: num(w["cost"]),
    device: decodeDevice(w["device"]),
    queuedAt: dateOrNull(w["queued_at"]),
    grantedAt: dateOrNull(w["granted_at"]),
    deadline: dateOrNull(w["deadline"]),
    endedAt: dateOrNull(w["ended_at"]),
    position: numOrNull(w["position"]),
    reason: strOrNull(w["reason"]) as QueueReason | null,
    heldMs: numOrNull(w["held_ms"]),
    charged: numOrNull(w["charged"]) ?? 0,
    refunded: numOrNull(w["refunded"]) ?? 0,
    problem: problemOrNull(w["problem"]),
    quota: quotaOrNull(w["quota"]),
  };
}

export function decodeReleaseResult(value: unknown): ReleaseResult {
  const w = record(value);
  return {
    id: str(w["id"]),
    status: str(w["status"]) as LeaseStatus,
    heldMs: numOrNull(w["held_ms"]),
    charged: numOrNull(w["charged"]) ?? 0,
    refunded: numOrNull(w["refunded"]) ?? 0,
    quota: quotaOrNull(w["quota"]),
  };
}

function decodeStep(value: unknown): DiagnosisStep {
  const w = record(value);
  return { step: str(w["step"]), outcome: str(w["outcome"]), detail: str(w["detail"]) };
}

function decodeCause(value: unknown): DiagnosisCause {
  const w = record(value);
  return { rank: num(w["rank"]), cause: str(w["cause"]), fix: str(w["fix"]) };
}

function decodeVerdict(value: unknown): DiagnosisVerdict {
  const w = record(value);
  return {
    outcome: str(w["outcome"]) as DiagnosisVerdict["outcome"],
    position: numOrNull(w["position"]),
    reason: w["reason"] === "node" || w["reason"] === "concurrency" ? w["reason"] : null,
    etaS: numOrNull(w["eta_s"]),
    problem: problemOrNull(w["problem"]),
  };
}

function decodeBucket(value: unknown): DiagnosisBucket {
  const w = record(value);
  return { bucket: str(w["bucket"]), applies: w["applies"] === true, detail: str(w["detail"]) };
}

function decodeRequest(value: unknown): DiagnosisRequest | null {
  if (value === null || value === undefined) return null;
  const w = record(value);
  return { duration: num(w["duration"]), size: str(w["size"]), cost: num(w["cost"]), reserves: num(w["reserves"]) };
}

export function decodeDiagnosis(value: unknown): Diagnosis {
  const w = record(value);
  return {
    identity: w["identity"] === null || w["identity"] === undefined ? null : decodeIdentity(w["identity"]),
    steps: list(w["steps"], decodeStep),
    request: decodeRequest(w["request"]),
    quota: quotaOrNull(w["quota"]),
    buckets: list(w["buckets"], decodeBucket),
    verdict: decodeVerdict(w["verdict"]),
    causes: list(w["causes"], decodeCause),
  };
}

export function decodeIpToken(value: unknown): IpToken {
  const w = record(value);
  return {
    token: str(w["token"]),
    expiresAt: dateOrNull(w["expires_at"]),
    subject: str(w["subject"]),
  };
}

export function decodeUser(value: unknown): User {
  const w = record(value);
  return {
    id: str(w["id"]),
    name: str(w["name"]),
    tier: str(w["tier"]),
    quotaOverride: numOrNull(w["quota_override"]),
    quota: quotaOrNull(w["quota"]),
  };
}

export function decodeCreatedUser(value: unknown): CreatedUser {
  const w = record(value);
  return { id: str(w["id"]), name: str(w["name"]), tier: str(w["tier"]), token: str(w["token"]) };
}

export function decodeApp(value: unknown): App {
  const w = record(value);
  return {
    id: str(w["id"]),
    name: str(w["name"]),
    owner: str(w["owner"]),
    maxConcurrency: numOrNull(w["max_concurrency"]),
  };
}

export function decodeCreatedApp(value: unknown): CreatedApp {
  return { ...decodeApp(value), key: str(record(value)["key"]) };
}

export function decodePrincipal(value: unknown): CreatedPrincipal {
  const w = record(value);
  return { id: str(w["id"]), name: str(w["name"]), key: str(w["key"]) };
}

/**
 * Reads a list that the server may send bare (`[...]`) or wrapped (`{ users: [...] }`);
 * the admin list routes are not pinned down in docs/wire.md, so accept both.
 */
export function decodeList<T>(value: unknown, key: string, decode: (item: unknown) => T): T[] {
  if (Array.isArray(value)) return value.map(decode);
  return list(record(value)[key], decode);
}

/** Deep snake_case → camelCase of object keys, for shapes the SDK does not model field by field. */
export function camelize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelize);
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())] = camelize(inner);
  }
  return out;
}
