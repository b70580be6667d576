import { decodeGrant, errorOf, invalid, reasonOf } from "./agent-answers.js";
import type { AgentGrant } from "./agent-answers.js";

export type { AgentGrant } from "./agent-answers.js";
import { isRecord, num, numOrNull, str, strOrNull } from "./json.js";
import { GpupoolError, LeaseDeadlineError, ServerUnavailableError, normalizeProblem, sdkProblem } from "./errors.js";
import { problemToError } from "./problem-errors.js";
import { normalizeIpToken, type IpTokenInput } from "./ip-token-header.js";
import { readServerSentEvents } from "./sse.js";
import type { FetchLike } from "./transport.js";
import type { QueueReason, Size } from "./types.js";

export interface AgentClientOptions {
  /**
   * The node agent's device API for this app, e.g. `http://127.0.0.1:7071/apps/<app-key>`
   * (the same value as `SPACES_ZERO_DEVICE_API_URL`).
   */
  readonly url: string;
  /**
   * A process `gpu()` allows on every call: the agent stops it (SIGTERM, then SIGKILL) if a call
   * outlives its deadline. Default: none. Never this app's own pid unless it may be killed: pass
   * a worker's (or use the function's `allow`, for a child started per call).
   */
  readonly pid?: number | undefined;
  /** Replaces the global `fetch`. */
  readonly fetch?: FetchLike | undefined;
  /** Per-request timeout in milliseconds (default 30 000). Waiting in the queue is not bounded by it. */
  readonly timeoutMs?: number | undefined;
}

export interface AgentQueueUpdate {
  readonly position: number | null;
  readonly reason: QueueReason | null;
  readonly etaS: number | null;
}

export interface AgentScheduleOptions {
  /** Longest the call may hold the GPU, in seconds (pool default 60). Unused time is refunded. */
  readonly duration?: number | undefined;
  readonly size?: Size | undefined;
  /** Wait for a slot when none is free (default true); false fails fast with `NoGpuAvailableError`. */
  readonly queue?: boolean | undefined;
  /** The end user's `X-IP-Token`, so they are charged instead of the app. */
  readonly ipToken?: IpTokenInput;
  /** Called while waiting, whenever the agent reports the place in the queue. */
  readonly onQueue?: ((update: AgentQueueUpdate) => void) | undefined;
  /** Aborting gives up the request; the agent cancels a queued lease when the connection closes. */
  readonly signal?: AbortSignal | undefined;
}

export interface AgentGpuOptions extends AgentScheduleOptions {
  /**
   * A process to allow before the function runs: the agent stops it at the deadline. Default: the
   * client's `pid`, else none (the function's `signal` still aborts at the deadline).
   */
  readonly pid?: number | undefined;
  /** Called when releasing fails after the function ran (default: a process warning). */
  readonly onReleaseError?: ((error: unknown, grant: AgentGrant) => void) | undefined;
}

export interface AgentGpuDevice {
  readonly index: number;
  readonly uuid: string;
  readonly name: string | null;
  readonly node: string | null;
  /** Environment for a child process: `CUDA_VISIBLE_DEVICES` set to the granted device's UUID. */
  env(): { CUDA_VISIBLE_DEVICES: string };
}

export interface AgentGpuContext {
  readonly grant: AgentGrant;
  readonly device: AgentGpuDevice;
  /** Aborts at the deadline (reason: `LeaseDeadlineError`) or when the caller's `signal` aborts. */
  readonly signal: AbortSignal;
  /**
   * Lets the agent stop `pid` at the deadline (SIGTERM, then SIGKILL): typically a child process
   * the function started on the granted device. Give the pid of a process this app started.
   */
  readonly allow: (pid: number) => Promise<void>;
}

/** A client of a node agent's device API (docs/agent.md): the way an app on a GPU host borrows that host's GPUs. */
export interface AgentClient {
  readonly url: string;
  /** Asks for a GPU on this host, following the queue; resolves with the grant. */
  schedule(options?: AgentScheduleOptions): Promise<AgentGrant>;
  /** Lets the agent stop `pid` (default: the client's `pid` option) at the grant's deadline. */
  allow(grant: AgentGrant, pid?: number): Promise<void>;
  /** Releases the grant: `"released"`, or `"not_used"` when no process was ever allowed on it. */
  release(grant: AgentGrant, options?: { readonly failed?: boolean | undefined }): Promise<"released" | "not_used">;
  /** How many requests the agent is waiting on in the queue. */
  queueSize(): Promise<number>;
  /**
   * Schedules a GPU, allows the `pid` option's process if any (never this process by default),
   * runs `fn`, and always releases (with `failed` when `fn` throws, whose error is then rethrown).
   */
  gpu<T>(options: AgentGpuOptions, fn: (context: AgentGpuContext) => T | Promise<T>): Promise<T>;
  gpu<T>(fn: (context: AgentGpuContext) => T | Promise<T>): Promise<T>;
}

const MAX_TIMER_MS = 2_147_483_647;

/** Creates a client of the node agent at `options.url`; nothing is sent until the first call. */
export function createAgentClient(options: AgentClientOptions): AgentClient {
  const base = new URL(options.url).href.replace(/\/+$/, "");
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const defaultPid = options.pid;

  async function request(
    method: "GET" | "POST",
    path: string,
    query: Record<string, string | undefined>,
    signal?: AbortSignal,
    stream = false,
  ): Promise<Response> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v);
    const url = `${base}${path}${params.toString() === "" ? "" : `?${params.toString()}`}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const response = await fetchImpl(url, {
        method,
        signal: controller.signal,
        headers: { accept: stream ? "text/event-stream, application/json" : "application/json" },
      });
      if (!response.ok) throw await errorOf(method, url, response);
      return response;
    } catch (error) {
      if (signal?.aborted === true) throw signal.reason;
      if (error instanceof GpupoolError) throw error;
      const why =
        controller.signal.aborted && !(signal?.aborted ?? false)
          ? `it did not answer within ${timeoutMs} ms`
          : reasonOf(error);
      throw new ServerUnavailableError(
        sdkProblem(
          "server_unavailable",
          "gpupool agent unavailable",
          0,
          `Could not reach the gpupool agent at ${url}: ${why}.`,
        ),
        { url, cause: error },
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  const client: AgentClient = {
    url: base,
    async schedule(o = {}) {
      o.signal?.throwIfAborted();
      const query = {
        enableQueue: String(o.queue ?? true),
        durationSeconds: o.duration === undefined ? undefined : String(o.duration),
        gpuSize: o.size,
        token: normalizeIpToken(o.ipToken),
      };
      const response = await request("POST", "/schedule", query, o.signal, true);
      if (!(response.headers.get("content-type") ?? "").includes("text/event-stream"))
        return decodeGrant(await response.json().catch(() => null));
      return followQueue(response, o);
    },
    async allow(grant, allowPid = defaultPid) {
      if (allowPid === undefined)
        throw new TypeError(
          "allow(grant, pid): say which process the agent may stop at the deadline (a worker or child process of this app).",
        );
      await request("POST", "/allow", { allowToken: grant.allowToken, pid: String(allowPid) });
    },
    async release(grant, o = {}) {
      const response = await request("POST", "/release", {
        allowToken: grant.allowToken,
        fail: String(o.failed ?? false),
      });
      return response.status === 204 ? "not_used" : "released";
    },
    async queueSize() {
      return num(await (await request("GET", "/queue-size", {})).json());
    },
    gpu<T>(
      first: AgentGpuOptions | ((c: AgentGpuContext) => T | Promise<T>),
      second?: (c: AgentGpuContext) => T | Promise<T>,
    ): Promise<T> {
      const [o, fn] = typeof first === "function" ? [{}, first] : [first, second];
      if (fn === undefined) return Promise.reject(new TypeError("gpu(options, fn): fn is missing."));
      return runOnAgentGpu(client, { ...o, pid: o.pid ?? defaultPid }, fn);
    },
  };
  return client;
}

async function runOnAgentGpu<T>(
  client: AgentClient,
  options: AgentGpuOptions,
  fn: (c: AgentGpuContext) => T | Promise<T>,
): Promise<T> {
  const grant = await client.schedule(options);
  const release = async (failed: boolean) => {
    try {
      await client.release(grant, { failed });
    } catch (error) {
      // Past the deadline the agent has already stopped the lease: nothing is left to release.
      if (
        error instanceof GpupoolError &&
        error.code === "not_found" &&
        grant.deadline !== null &&
        Date.now() >= grant.deadline.getTime()
      )
        return;
      if (options.onReleaseError !== undefined) {
        try {
          options.onReleaseError(error, grant);
        } catch {
          // A throwing reporter must not replace the function's own result or error.
        }
      } else {
        const why = error instanceof Error ? error.message : String(error);
        globalThis.process?.emitWarning(
          `Releasing the GPU of lease ${grant.leaseId ?? "?"} failed (${why}); it will expire at its deadline and be charged in full.`,
          { type: "GpupoolReleaseWarning", code: "GPUPOOL_RELEASE_FAILED" },
        );
      }
    }
  };
  // Nothing is allowed unless the caller said which process: an allowed process is stopped when the
  // call outlives its deadline, and by default that must not be the app itself.
  if (options.pid !== undefined) {
    try {
      await client.allow(grant, options.pid);
    } catch (error) {
      await release(true);
      throw error;
    }
  }
  const controller = new AbortController();
  const caller = options.signal;
  const onCallerAbort = () => controller.abort(caller?.reason);
  caller?.addEventListener("abort", onCallerAbort, { once: true });
  // Same host as the agent, so its deadline is on our clock.
  const timer =
    grant.deadline === null
      ? undefined
      : setTimeout(
          () => controller.abort(new LeaseDeadlineError(grant.leaseId ?? "", grant.deadline)),
          Math.min(Math.max(0, grant.deadline.getTime() - Date.now()), MAX_TIMER_MS),
        );
  const device: AgentGpuDevice = {
    index: grant.index,
    uuid: grant.uuid,
    name: grant.name,
    node: grant.node,
    env: () => ({ CUDA_VISIBLE_DEVICES: grant.uuid }),
  };
  let result: T;
  try {
    result = await fn({ grant, device, signal: controller.signal, allow: (pid) => client.allow(grant, pid) });
  } catch (error) {
    clearTimeout(timer);
    caller?.removeEventListener("abort", onCallerAbort);
    await release(true);
    throw error;
  }
  clearTimeout(timer);
  caller?.removeEventListener("abort", onCallerAbort);
  await release(false);
  return result;
}

async function followQueue(response: Response, o: AgentScheduleOptions): Promise<AgentGrant> {
  if (response.body === null) throw invalid("an empty event stream");
  for await (const event of readServerSentEvents(response.body)) {
    let data: unknown = null;
    try {
      data = JSON.parse(event.data) as unknown;
    } catch {
      data = event.data;
    }
    if (event.event === "ping") {
      if (isRecord(data))
        o.onQueue?.({
          position: numOrNull(data["position"]),
          reason: strOrNull(data["reason"]) as QueueReason | null,
          etaS: numOrNull(data["eta_s"]),
        });
    } else if (event.event === "succeeded") {
      return decodeGrant(data);
    } else if (event.event === "failed") {
      const detail = isRecord(data) ? str(data["detail"]) : String(data);
      throw problemToError(
        normalizeProblem(
          isRecord(data) ? data : {},
          isRecord(data) && typeof data["status"] === "number" ? data["status"] : 503,
          detail || "The queued request failed.",
        ),
      );
    }
  }
  if (o.signal?.aborted === true) throw o.signal.reason;
  throw new ServerUnavailableError(
    sdkProblem(
      "server_unavailable",
      "gpupool agent unavailable",
      0,
      "The agent's queue stream ended without a grant or a failure.",
    ),
    { url: response.url },
  );
}
