import { decodeWire } from "@gpupool/contract";
import type { WireSchema, WireType } from "@gpupool/contract";
import { GpupoolError, ServerUnavailableError, UnauthorizedError, normalizeProblem, sdkProblem } from "./errors.js";
import { meansUnavailable, problemToError, serverUnavailableError } from "./problem-errors.js";
import type { Problem } from "./types.js";

export type FetchLike = typeof globalThis.fetch;

/** Which credential a route needs: the app key / user token, the admin token, or either (ip-token issuing). */
export type Auth = "client" | "admin" | "issuer";

export interface TransportConfig {
  readonly url: string;
  readonly bearer: string | undefined;
  readonly adminToken: string | undefined;
  readonly fetch: FetchLike;
  readonly timeoutMs: number;
}

export interface RequestSpec {
  readonly method: "GET" | "POST" | "PATCH" | "DELETE";
  readonly path: string;
  readonly auth: Auth;
  readonly query?: Readonly<Record<string, string | number | undefined>>;
  readonly body?: unknown;
  readonly ipToken?: string | undefined;
  /** Sent as `Idempotency-Key` (POST /v1/leases: a retry gets the same lease). */
  readonly idempotencyKey?: string | undefined;
  /** Sent as `traceparent` (W3C Trace Context): the server's spans join the caller's trace. */
  readonly traceparent?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** Thrown into the fetch as the abort reason so a timeout can be told apart from the caller's abort. */
class TimeoutSignal extends Error {}

/**
 * Every HTTP exchange with the control plane goes through here, so auth headers, timeouts,
 * and the mapping of failures to typed errors live in one place.
 */
export class Transport {
  readonly #config: TransportConfig;
  readonly #base: string;

  constructor(config: TransportConfig) {
    this.#config = config;
    // Keep any path prefix (a control plane mounted under /gpupool behind a proxy).
    this.#base = new URL(config.url).href.replace(/\/+$/, "");
  }

  get baseUrl(): string {
    return this.#base;
  }

  /**
   * Sends a request and returns the body of a 2xx answer decoded with the contract's `schema`;
   * throws a `GpupoolError` otherwise (`invalid_response` naming the fields when the body does
   * not match: a server of another version, or not a gpupool control plane).
   */
  async json<S extends WireSchema>(spec: RequestSpec, schema: S): Promise<WireType<S>> {
    return (await this.jsonWithStatus(spec, schema)).body;
  }

  /** As `json`, with the answer's status (e.g. 201 created vs 200 the same as before). */
  async jsonWithStatus<S extends WireSchema>(
    spec: RequestSpec,
    schema: S,
  ): Promise<{ status: number; body: WireType<S> }> {
    const url = this.#url(spec);
    const call = this.#start(spec, url, "application/json");
    try {
      const response = await call.response;
      const text = await response.text().catch((error: unknown) => call.fail(error));
      if (!response.ok) throw errorFromResponse(spec.method, url, response, text);
      let body: unknown;
      try {
        body = JSON.parse(text) as unknown;
      } catch (error) {
        throw invalidResponse(
          spec.method,
          url,
          response.status,
          text === "" ? "an empty body" : "a body that is not JSON",
          error,
        );
      }
      const decoded = decodeWire(schema, body);
      if (!decoded.ok)
        throw invalidResponse(
          spec.method,
          url,
          response.status,
          `a body that does not match the gpupool wire format (${decoded.message})`,
        );
      return { status: response.status, body: decoded.value };
    } finally {
      call.done();
    }
  }

  /**
   * Opens a Server-Sent Events stream. The timeout covers only the wait for the response
   * headers: a queue can legitimately stay silent (bar keep-alives) for a long time.
   * The caller ends the stream by aborting `spec.signal`.
   */
  async eventStream(spec: RequestSpec): Promise<{ body: ReadableStream<Uint8Array>; url: string }> {
    const { body, url } = await this.stream(spec, "text/event-stream");
    return { body, url };
  }

  /**
   * Opens a streamed answer of any type (an export): the timeout covers only the wait for the
   * response headers, so a long stream is not cut off. The caller reads or cancels `body`.
   */
  async stream(
    spec: RequestSpec,
    accept: string,
  ): Promise<{ body: ReadableStream<Uint8Array>; url: string; contentType: string }> {
    const url = this.#url(spec);
    const call = this.#start(spec, url, accept);
    try {
      const response = await call.response;
      if (!response.ok) {
        const text = await response.text().catch((error: unknown) => call.fail(error));
        throw errorFromResponse(spec.method, url, response, text);
      }
      if (response.body === null) {
        throw invalidResponse(spec.method, url, response.status, `an empty ${accept} stream`);
      }
      return { body: response.body, url, contentType: response.headers.get("content-type") ?? accept };
    } finally {
      call.stopTimer();
    }
  }

  #url(spec: RequestSpec): string {
    let url = this.#base + spec.path;
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(spec.query ?? {})) {
      if (value !== undefined) params.set(key, String(value));
    }
    const search = params.toString();
    if (search !== "") url += `?${search}`;
    return url;
  }

  #headers(spec: RequestSpec, accept: string): Record<string, string> {
    const headers: Record<string, string> = { accept };
    const token = this.#token(spec.auth);
    if (token !== undefined) headers["authorization"] = `Bearer ${token}`;
    if (spec.ipToken !== undefined) headers["x-ip-token"] = spec.ipToken;
    if (spec.idempotencyKey !== undefined) headers["idempotency-key"] = spec.idempotencyKey;
    if (spec.traceparent !== undefined) headers["traceparent"] = spec.traceparent;
    if (spec.body !== undefined) headers["content-type"] = "application/json";
    return headers;
  }

  #token(auth: Auth): string | undefined {
    const { bearer, adminToken } = this.#config;
    if (auth === "client") return bearer;
    if (auth === "issuer") return adminToken ?? bearer;
    if (adminToken === undefined) {
      // Fail before the request: a 401 from the server would not say which option is missing.
      throw new UnauthorizedError(
        sdkProblem(
          "unauthorized",
          "Admin token missing",
          0,
          "This is an admin call: pass adminToken (the server's GPUPOOL_ADMIN_TOKEN) to createClient.",
        ),
      );
    }
    return adminToken;
  }

  #start(spec: RequestSpec, url: string, accept: string) {
    const headers = this.#headers(spec, accept);
    const controller = new AbortController();
    const { timeoutMs } = this.#config;
    const timer = setTimeout(() => controller.abort(new TimeoutSignal()), timeoutMs);
    const caller = spec.signal;
    const onCallerAbort = () => controller.abort(caller?.reason);
    if (caller?.aborted === true) controller.abort(caller.reason);
    else caller?.addEventListener("abort", onCallerAbort, { once: true });

    const fail = (error: unknown): never => {
      if (caller?.aborted === true) throw caller.reason;
      if (controller.signal.reason instanceof TimeoutSignal) {
        throw unavailable(url, `it did not answer within ${timeoutMs} ms`, error);
      }
      if (error instanceof GpupoolError) throw error;
      throw unavailable(url, networkReason(error), error);
    };

    const init: RequestInit = { method: spec.method, headers, signal: controller.signal };
    if (spec.body !== undefined) init.body = JSON.stringify(spec.body);
    const response = this.#config.fetch(url, init).catch(fail);
    return {
      response,
      fail,
      stopTimer: () => clearTimeout(timer),
      done: () => {
        clearTimeout(timer);
        caller?.removeEventListener("abort", onCallerAbort);
      },
    };
  }
}

function unavailable(url: string, why: string, cause: unknown): ServerUnavailableError {
  const detail = `Could not reach the gpupool server at ${url}: ${why}.`;
  return new ServerUnavailableError(sdkProblem("server_unavailable", "gpupool server unavailable", 0, detail), {
    url,
    cause,
  });
}

/** undici hides the real reason (ECONNREFUSED, ENOTFOUND…) in `cause`, sometimes as an AggregateError. */
function networkReason(error: unknown): string {
  const messages: string[] = [];
  const visit = (value: unknown, depth: number): void => {
    if (depth > 4 || !(value instanceof Error)) return;
    if (value instanceof AggregateError) {
      for (const inner of value.errors) visit(inner, depth + 1);
    }
    const code = (value as { code?: unknown }).code;
    const text = value.message || (typeof code === "string" ? code : "");
    if (text !== "" && text !== "fetch failed" && !messages.includes(text)) messages.push(text);
    visit(value.cause, depth + 1);
  };
  visit(error, 0);
  return messages.length > 0 ? messages.join("; ") : String(error);
}

function invalidResponse(method: string, url: string, status: number, what: string, cause?: unknown): GpupoolError {
  const detail = `${method} ${url} answered ${status} with ${what}; is this URL a gpupool control plane of this SDK's version?`;
  return new GpupoolError(sdkProblem("invalid_response", "Invalid response", status, detail), {
    cause,
  });
}

function errorFromResponse(method: string, url: string, response: Response, text: string): GpupoolError {
  let body: unknown = null;
  try {
    body = text === "" ? null : (JSON.parse(text) as unknown);
  } catch {
    // A proxy's HTML error page: keep the status, describe it ourselves.
  }
  const status = response.status;
  const fallback = `${method} ${url} answered ${status} ${response.statusText}`.trim() + ".";
  const problem = withRetryAt(normalizeProblem(body, status, fallback), response.headers);
  if (status >= 500 && meansUnavailable(problem.code)) {
    return serverUnavailableError(problem, {
      url,
      message: `The gpupool server at ${url} failed (${status}): ${problem.detail}`,
    });
  }
  return problemToError(problem, { url });
}

/** Derives `retry_at` from `Retry-After` when the body lacks it, so `retryAt` is set either way. */
function withRetryAt(problem: Problem, headers: Headers): Problem {
  if (problem["retry_at"] !== undefined) return problem;
  const header = headers.get("retry-after");
  if (header === null) return problem;
  const seconds = Number(header);
  const at = Number.isFinite(seconds) ? new Date(Date.now() + seconds * 1000) : new Date(header);
  return Number.isNaN(at.getTime()) ? problem : { ...problem, retry_at: at.toISOString() };
}
