import type { NodeDevice } from "./devices.js";
import { deviceJson } from "./devices.js";
import { readServerSentEvents } from "@gpupool/sdk";
import type { SseEvent } from "@gpupool/sdk";

/** A problem (RFC 9457) as the control plane sent it; fields are kept loosely typed on purpose. */
export interface WireProblem {
  readonly code: string;
  readonly detail: string;
  readonly status: number;
  readonly [field: string]: unknown;
}

/** The control plane could not be reached, timed out, or failed (5xx). */
export class ControlPlaneDown extends Error {
  override readonly name = "ControlPlaneDown";
}

/** The control plane answered with a problem about this request (4xx). */
export class ControlPlaneRefusal extends Error {
  override readonly name = "ControlPlaneRefusal";
  constructor(
    readonly problem: WireProblem,
    readonly retryAfterS: number | null,
  ) {
    super(`[${problem.code}] ${problem.detail}`);
  }
}

/** The lease fields the agent uses (docs/wire.md has the whole object). */
export interface WireLease {
  readonly id: string;
  readonly status: string;
  readonly app: string | null;
  readonly identity: { readonly kind: string; readonly id: string; readonly tier: string } | null;
  readonly duration: number;
  readonly device: { readonly node: string; readonly index: number; readonly uuid: string; readonly name: string } | null;
  readonly grantedAt: number | null;
  readonly deadline: number | null;
  readonly position: number | null;
  readonly reason: string | null;
  readonly etaS: number | null;
}

export type LeaseAnswer = { readonly kind: "granted"; readonly lease: WireLease } | { readonly kind: "queued"; readonly lease: WireLease };

export interface Registered {
  readonly node: { readonly id: string; readonly name: string };
  readonly heartbeatIntervalS: number;
  readonly heartbeatTimeoutS: number;
  /**
   * Which registration of the node this agent holds (the pool's answer to register): heartbeats
   * carry it, so an agent whose node another agent registered since is told (409). Null from a
   * pool that does not send one.
   */
  readonly registration: string | null;
}

const REQUEST_TIMEOUT_MS = 15_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const time = (v: unknown): number | null => {
  const t = typeof v === "string" ? Date.parse(v) : NaN;
  return Number.isNaN(t) ? null : t;
};

export function decodeLease(v: unknown): WireLease {
  if (!isRecord(v) || typeof v["id"] !== "string" || typeof v["status"] !== "string") {
    throw new ControlPlaneDown("the control plane sent a lease without id or status");
  }
  const identity = isRecord(v["identity"]) ? v["identity"] : null;
  const device = isRecord(v["device"]) ? v["device"] : null;
  return {
    id: v["id"],
    status: v["status"],
    app: str(v["app"]),
    identity: identity === null ? null : { kind: str(identity["kind"]) ?? "", id: str(identity["id"]) ?? "", tier: str(identity["tier"]) ?? "" },
    duration: num(v["duration"]) ?? 0,
    device:
      device === null || num(device["index"]) === null || str(device["uuid"]) === null
        ? null
        : { node: str(device["node"]) ?? "", index: num(device["index"]) ?? 0, uuid: str(device["uuid"]) ?? "", name: str(device["name"]) ?? "" },
    grantedAt: time(v["granted_at"]),
    deadline: time(v["deadline"]),
    position: num(v["position"]),
    reason: str(v["reason"]),
    etaS: num(v["eta_s"]),
  };
}

function asProblem(body: unknown, status: number, fallback: string): WireProblem {
  const b = isRecord(body) ? body : {};
  return { ...b, code: str(b["code"]) ?? `http_${status}`, detail: str(b["detail"]) ?? fallback, status: num(b["status"]) ?? status };
}

function networkReason(error: unknown): string {
  if (error instanceof Error && error.name === "TimeoutError") return `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`;
  const parts: string[] = [];
  let e: unknown = error;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    const text = e.message === "fetch failed" ? "" : e.message;
    if (text !== "" && !parts.includes(text)) parts.push(text);
    else if (typeof code === "string" && !parts.includes(code)) parts.push(code);
    e = e.cause;
  }
  return parts.join(": ") || String(error);
}

/** The agent's only link to the pool: HTTP with the node key (node routes) or the app's key (leases). */
export class ControlPlane {
  private readonly base: string;

  constructor(
    baseUrl: string,
    private readonly nodeKey: string,
  ) {
    this.base = baseUrl.replace(/\/+$/, "");
  }

  get url(): string {
    return this.base;
  }

  /** `previous`: the registration this agent held before (a restart), so the pool lets it take the node back at once. */
  async register(devices: readonly NodeDevice[], agentUrl: string, previous: string | null = null): Promise<Registered> {
    const body = await this.call("POST", "/v1/nodes/register", { authorization: `Bearer ${this.nodeKey}` }, { devices: devices.map(deviceJson), agent_url: agentUrl, ...(previous !== null ? { previous_registration: previous } : {}) });
    return this.timing(body);
  }

  async heartbeat(registration: string | null = null): Promise<Registered> {
    return this.timing(await this.call("POST", "/v1/nodes/heartbeat", { authorization: `Bearer ${this.nodeKey}` }, registration !== null ? { registration } : {}));
  }

  /** POST /v1/leases for an app on this node: 201 → granted, 202 → queued, a problem → ControlPlaneRefusal. */
  async requestLease(appKey: string, body: { duration?: number; size?: string; queue: boolean }, ipToken: string | undefined): Promise<LeaseAnswer> {
    const headers: Record<string, string> = { authorization: `Bearer ${appKey}`, "x-gpupool-node-key": this.nodeKey };
    if (ipToken !== undefined) headers["x-ip-token"] = ipToken;
    const { status, json } = await this.send("POST", "/v1/leases", headers, body);
    const lease = decodeLease(json);
    return status === 201 || lease.status === "active" ? { kind: "granted", lease } : { kind: "queued", lease };
  }

  async lease(appKey: string, id: string): Promise<WireLease> {
    return decodeLease(await this.call("GET", `/v1/leases/${encodeURIComponent(id)}`, { authorization: `Bearer ${appKey}` }));
  }

  async release(appKey: string, id: string, failed: boolean): Promise<void> {
    await this.call("POST", `/v1/leases/${encodeURIComponent(id)}/release`, { authorization: `Bearer ${appKey}` }, { failed });
  }

  /** Cancels a queued lease (or releases an active one). */
  async cancel(appKey: string, id: string): Promise<void> {
    await this.call("DELETE", `/v1/leases/${encodeURIComponent(id)}`, { authorization: `Bearer ${appKey}` });
  }

  /** The lease's Server-Sent Events until the stream ends or `signal` aborts. */
  async leaseEvents(appKey: string, id: string, signal: AbortSignal): Promise<AsyncGenerator<SseEvent>> {
    let res: Response;
    try {
      res = await fetch(`${this.base}/v1/leases/${encodeURIComponent(id)}/events`, { headers: { authorization: `Bearer ${appKey}`, accept: "text/event-stream" }, signal });
    } catch (error) {
      throw new ControlPlaneDown(`cannot reach the control plane at ${this.base}: ${networkReason(error)}`);
    }
    if (!res.ok || res.body === null) {
      const text = await res.text().catch(() => "");
      throw this.failure(res, text, "GET", "/v1/leases/:id/events");
    }
    return readServerSentEvents(res.body);
  }

  private timing(body: unknown): Registered {
    const b = isRecord(body) ? body : {};
    const node = isRecord(b["node"]) ? b["node"] : {};
    return {
      node: { id: str(node["id"]) ?? "", name: str(node["name"]) ?? "" },
      heartbeatIntervalS: num(b["heartbeat_interval_s"]) ?? 5,
      heartbeatTimeoutS: num(b["heartbeat_timeout_s"]) ?? 20,
      registration: str(b["registration"]),
    };
  }

  private async call(method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<unknown> {
    return (await this.send(method, path, headers, body)).json;
  }

  private async send(method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; json: unknown }> {
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: { ...headers, accept: "application/json", ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      text = await res.text();
    } catch (error) {
      throw new ControlPlaneDown(`cannot reach the control plane at ${this.base}: ${networkReason(error)}`);
    }
    if (!res.ok) throw this.failure(res, text, method, path);
    try {
      return { status: res.status, json: text === "" ? null : (JSON.parse(text) as unknown) };
    } catch {
      throw new ControlPlaneDown(`the control plane at ${this.base} answered ${method} ${path} with something that is not JSON; is --server the gpupool control plane?`);
    }
  }

  private failure(res: Response, text: string, method: string, path: string): Error {
    let json: unknown = null;
    try {
      json = text === "" ? null : JSON.parse(text);
    } catch {
      /* a proxy's HTML page: described below */
    }
    const p = asProblem(json, res.status, `${method} ${path} answered ${res.status}`);
    // 4xx with a problem body is an answer about the request; anything else means the pool is unwell.
    if (res.status >= 400 && res.status < 500 && isRecord(json) && typeof json["code"] === "string") {
      const retry = Number(res.headers.get("retry-after"));
      return new ControlPlaneRefusal(p, Number.isFinite(retry) && res.headers.get("retry-after") !== null ? retry : null);
    }
    if (res.status === 503 && isRecord(json) && json["code"] === "no_gpu_available") return new ControlPlaneRefusal(p, null);
    return new ControlPlaneDown(`the control plane at ${this.base} answered ${res.status} to ${method} ${path}: ${p.detail}`);
  }
}
