import { Heartbeat, Lease, NodeRegistered, Problem, decodeWire } from "@gpupool/contract";
import type { LeaseRequest, NodeRegisterRequest, WireSchema, WireType } from "@gpupool/contract";
import type { NodeDevice } from "./devices.js";
import { deviceJson } from "./devices.js";
import { readServerSentEvents } from "@gpupool/sdk";
import type { SseEvent } from "@gpupool/sdk";

/**
 * A problem (RFC 9457) the agent relays: the control plane's (decoded with the contract), or one
 * the agent writes itself, whose code may be its own (`lease_ended`) or one a newer pool added.
 */
export interface WireProblem extends Readonly<Pick<Problem, "detail" | "status">> {
  /** A `ProblemCode` of the contract, or the agent's own (`lease_ended`, `http_<status>`). */
  readonly code: string;
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

export type LeaseAnswer =
  { readonly kind: "granted"; readonly lease: Lease } | { readonly kind: "queued"; readonly lease: Lease };

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

/** `value` as the contract's `schema`; a mismatch means the pool is not one this agent can work with. */
export function decodeFromPool<S extends WireSchema>(schema: S, value: unknown, what: string): WireType<S> {
  const decoded = decodeWire(schema, value);
  if (!decoded.ok)
    throw new ControlPlaneDown(
      `the control plane sent ${what} that does not match the gpupool wire format (${decoded.message}); is it a gpupool control plane of this agent's version?`,
    );
  return decoded.value;
}

/** A problem body as a refusal: the contract's problem when it is one, else what can be read of it. */
export function asProblem(body: unknown, status: number, fallback: string): WireProblem {
  const decoded = decodeWire(Problem, body);
  if (decoded.ok) return decoded.value;
  const b = isRecord(body) ? body : {};
  const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
  return {
    ...b,
    code: str(b["code"]) ?? `http_${status}`,
    detail: str(b["detail"]) ?? fallback,
    status: typeof b["status"] === "number" ? b["status"] : status,
  };
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
  async register(
    devices: readonly NodeDevice[],
    agentUrl: string,
    previous: string | null = null,
  ): Promise<Registered> {
    const request: NodeRegisterRequest = {
      devices: devices.map(deviceJson),
      agent_url: agentUrl,
      ...(previous !== null ? { previous_registration: previous } : {}),
    };
    const r = decodeFromPool(
      NodeRegistered,
      await this.call("POST", "/v1/nodes/register", { authorization: `Bearer ${this.nodeKey}` }, request),
      "a registration",
    );
    return {
      node: r.node,
      heartbeatIntervalS: r.heartbeat_interval_s,
      heartbeatTimeoutS: r.heartbeat_timeout_s,
      registration: r.registration,
    };
  }

  /** The registration is the one register answered; a heartbeat answer does not repeat it. */
  async heartbeat(registration: string | null = null): Promise<Registered> {
    const h = decodeFromPool(
      Heartbeat,
      await this.call(
        "POST",
        "/v1/nodes/heartbeat",
        { authorization: `Bearer ${this.nodeKey}` },
        registration !== null ? { registration } : {},
      ),
      "a heartbeat answer",
    );
    return {
      node: h.node,
      heartbeatIntervalS: h.heartbeat_interval_s,
      heartbeatTimeoutS: h.heartbeat_timeout_s,
      registration,
    };
  }

  /** POST /v1/leases for an app on this node: 201 → granted, 202 → queued, a problem → ControlPlaneRefusal. */
  async requestLease(
    appKey: string,
    body: LeaseRequest,
    ipToken: string | undefined,
    traceparent?: string,
  ): Promise<LeaseAnswer> {
    const headers: Record<string, string> = { authorization: `Bearer ${appKey}`, "x-gpupool-node-key": this.nodeKey };
    if (ipToken !== undefined) headers["x-ip-token"] = ipToken;
    // The caller's W3C trace context: the pool's spans of this lease join the caller's trace.
    if (traceparent !== undefined) headers["traceparent"] = traceparent;
    const { status, json } = await this.send("POST", "/v1/leases", headers, body);
    const lease = decodeFromPool(Lease, json, "a lease");
    return status === 201 || lease.status === "active" ? { kind: "granted", lease } : { kind: "queued", lease };
  }

  async lease(appKey: string, id: string): Promise<Lease> {
    return decodeFromPool(
      Lease,
      await this.call("GET", `/v1/leases/${encodeURIComponent(id)}`, { authorization: `Bearer ${appKey}` }),
      "a lease",
    );
  }

  async release(appKey: string, id: string, failed: boolean): Promise<void> {
    await this.call(
      "POST",
      `/v1/leases/${encodeURIComponent(id)}/release`,
      { authorization: `Bearer ${appKey}` },
      { failed },
    );
  }

  /** Cancels a queued lease (or releases an active one). */
  async cancel(appKey: string, id: string): Promise<void> {
    await this.call("DELETE", `/v1/leases/${encodeURIComponent(id)}`, { authorization: `Bearer ${appKey}` });
  }

  /** The lease's Server-Sent Events until the stream ends or `signal` aborts. */
  async leaseEvents(appKey: string, id: string, signal: AbortSignal): Promise<AsyncGenerator<SseEvent>> {
    let res: Response;
    try {
      res = await fetch(`${this.base}/v1/leases/${encodeURIComponent(id)}/events`, {
        headers: { authorization: `Bearer ${appKey}`, accept: "text/event-stream" },
        signal,
      });
    } catch (error) {
      throw new ControlPlaneDown(`cannot reach the control plane at ${this.base}: ${networkReason(error)}`);
    }
    if (!res.ok || res.body === null) {
      const text = await res.text().catch(() => "");
      throw this.failure(res, text, "GET", "/v1/leases/:id/events");
    }
    return readServerSentEvents(res.body);
  }

  private async call(method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<unknown> {
    return (await this.send(method, path, headers, body)).json;
  }

  private async send(
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }> {
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          ...headers,
          accept: "application/json",
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
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
      throw new ControlPlaneDown(
        `the control plane at ${this.base} answered ${method} ${path} with something that is not JSON; is --server the gpupool control plane?`,
      );
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
      return new ControlPlaneRefusal(
        p,
        Number.isFinite(retry) && res.headers.get("retry-after") !== null ? retry : null,
      );
    }
    if (res.status === 503 && isRecord(json) && json["code"] === "no_gpu_available")
      return new ControlPlaneRefusal(p, null);
    return new ControlPlaneDown(
      `the control plane at ${this.base} answered ${res.status} to ${method} ${path}: ${p.detail}`,
    );
  }
}
