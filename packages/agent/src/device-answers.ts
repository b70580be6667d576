// How control-plane answers become device API answers (docs/agent.md has the table).
// The `spaces` client reads only the status, two headers, and for 200/429 a small JSON body;
// every answer also carries the pool's `detail` (body field and X-Gpupool-Detail header), so a
// person reading logs or curl output sees why.
import type { Lease } from "@gpupool/contract";
import { problem } from "@gpupool/core";
import type { WireProblem } from "./control-plane.js";
import type { LocalLease } from "./local-leases.js";

export type AuthLevel = "regular" | "pro";

export interface DeviceAnswer {
  readonly status: number;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Record<string, unknown>;
}

/** The grant as the `spaces` client parses it (ScheduleResponse), plus fields it ignores. */
export interface GrantJson {
  readonly idle: boolean;
  readonly nvidiaIndex: number;
  readonly nvidiaUUID: string;
  readonly allowToken: string;
  readonly leaseId: string;
  readonly deadline: string;
  readonly node: string;
  readonly name: string;
}

const PRO_TIERS = new Set(["pro", "team", "enterprise"]);

/**
 * `X-Authenticated`: `pro` for paying user tiers, `regular` for other signed-in users, absent for
 * IP and app identities (the client then suggests signing in rather than upgrading).
 */
export function authLevel(identity: { readonly kind: string; readonly tier: string } | null): AuthLevel | null {
  if (identity === null || identity.kind !== "user") return null;
  return PRO_TIERS.has(identity.tier) ? "pro" : "regular";
}

/** `identity` in problems is "<kind>:<id>"; the tier is a field of its own. */
function problemAuthLevel(p: WireProblem): AuthLevel | null {
  const identity = typeof p["identity"] === "string" ? p["identity"] : "";
  const tier = typeof p["tier"] === "string" ? p["tier"] : "";
  return authLevel({ kind: identity.split(":")[0] ?? "", tier });
}

/** Header values must be Latin-1; details use typographic punctuation ("…", "–"). */
export function headerSafe(text: string): string {
  return text
    .replace(/[\u2026]/g, "...")
    .replace(/[\u2013\u2014]/g, "-")
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/[\u201c\u201d]/g, '"')
    .replace(/[^\x20-\x7e]/g, "?")
    .slice(0, 1000);
}

function seconds(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function untilS(iso: unknown, now: number): number | null {
  const t = typeof iso === "string" ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? null : (t - now) / 1000;
}

function withAuth(headers: Record<string, string>, level: AuthLevel | null): Record<string, string> {
  return level === null ? headers : { ...headers, "x-authenticated": level };
}

/** A problem answered as problem+json, with its own status: a code is never sent with another code's status. */
export function problemAnswer(p: WireProblem, extraHeaders: Record<string, string> = {}): DeviceAnswer {
  const { code, detail, status } = p;
  return {
    status,
    contentType: "application/problem+json",
    headers: { ...extraHeaders, "x-gpupool-detail": headerSafe(detail) },
    body: {
      ...p,
      type: typeof p["type"] === "string" ? p["type"] : `urn:gpupool:problem:${code}`,
      title: typeof p["title"] === "string" ? p["title"] : code,
      status,
      code,
      detail,
    },
  };
}

/** The /schedule query parameter each field of the pool's POST /v1/leases body comes from. */
const QUERY_PARAMETER_OF: Readonly<Record<string, string>> = {
  size: "gpuSize",
  duration: "durationSeconds",
  queue: "enableQueue",
};

/**
 * The pool validates the body the agent built from the query ("size must be one of large,
 * xlarge"); the caller wrote query parameters, so the answer names those (gpuSize). A problem
 * about anything else is passed on as it is.
 */
function inQueryTerms(p: WireProblem): WireProblem {
  const raw = Array.isArray(p["errors"]) ? (p["errors"] as unknown[]) : [];
  const errors = raw.map((e) => {
    const r = typeof e === "object" && e !== null ? (e as Record<string, unknown>) : {};
    const field = typeof r["field"] === "string" ? r["field"] : "";
    return {
      field: QUERY_PARAMETER_OF[field] ?? null,
      message: typeof r["message"] === "string" ? r["message"] : "is invalid",
    };
  });
  if (errors.length === 0 || errors.some((e) => e.field === null)) return p;
  const named = errors.map((e) => ({ field: e.field ?? "", message: e.message }));
  return {
    ...p,
    detail: `The /schedule query is invalid: ${named.map((e) => `${e.field} ${e.message}`).join("; ")}. Nothing was requested.`,
    errors: named,
  };
}

/**
 * A refusal of POST /v1/leases, as the `spaces` client understands it:
 * quota → 429 `{left, wait > 0}`; a duration over the maximum → 429 `{wait: -1}`; the daily
 * runs limit → 429 `{wait: 0}`; no GPU → 503; a bad X-IP-Token → 401. A bad app key is 403
 * `forbidden` (not 401, which the client reports as an expired viewer token).
 */
export function refusalAnswer(p: WireProblem, retryAfterS: number | null, now: number): DeviceAnswer {
  const auth = problemAuthLevel(p);
  const quota = (left: number, wait: number): DeviceAnswer => ({
    status: 429,
    contentType: "application/json",
    headers: withAuth({ "x-gpupool-detail": headerSafe(p.detail) }, auth),
    // The client's QuotaInfos is `left: int, wait: timedelta` (seconds); other fields are ignored.
    body: { ...p, left: Math.max(0, Math.floor(left)), wait },
  });
  switch (p.code) {
    case "quota_exceeded": {
      const wait = untilS(p["retry_at"], now) ?? retryAfterS ?? untilS(p["resets_at"], now) ?? 60;
      return quota(seconds(p["left"]) ?? 0, Math.max(1, Math.ceil(wait)));
    }
    case "duration_too_long":
      // The client ignores `left` here (it reports the maximum duration); 0 unless the pool said.
      return quota(seconds(p["left"]) ?? 0, -1);
    case "runs_exceeded":
      return quota(seconds(p["left"]) ?? 0, 0);
    case "no_gpu_available":
      return problemAnswer(p, withAuth({}, auth));
    case "unauthorized":
      // 403 `forbidden`, not 401: the client reads a 401 as the viewer's token having expired.
      return problemAnswer(
        problem(
          "forbidden",
          `The pool refused the app key of this request (the one in SPACES_ZERO_DEVICE_API_URL, .../apps/<app-key>): ${p.detail}`,
          { reason: "app_key_refused" },
        ),
      );
    case "invalid_request":
      return problemAnswer(inQueryTerms(p));
    default:
      // Any other refusal is about the request and keeps its code and status; a refusal that is
      // not a 4xx means the pool is unwell, which is what the agent's 503 says.
      return p.status >= 400 && p.status < 500
        ? problemAnswer(p)
        : problemAnswer(
            problem("control_plane_unavailable", `The GPU pool could not take the request now: ${p.detail}`),
          );
  }
}

export function grantJson(lease: LocalLease, token: string, idle: boolean, node: string): GrantJson {
  return {
    idle,
    nvidiaIndex: lease.device.index,
    nvidiaUUID: lease.device.uuid,
    allowToken: token,
    leaseId: lease.leaseId,
    deadline: new Date(lease.deadlineAt).toISOString(),
    node,
    name: lease.device.name,
  };
}

/** How long the lease may hold the GPU, measured on the control plane's own clock. */
export function leaseSpanMs(lease: Lease): number {
  if (lease.deadline !== null && lease.granted_at !== null)
    return Math.max(0, Date.parse(lease.deadline) - Date.parse(lease.granted_at));
  return Math.max(0, lease.duration * 1000);
}
