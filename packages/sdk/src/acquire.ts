import {
  EndedEvent,
  GrantedEvent,
  Lease as WireLease,
  QueuedEvent,
  ReleaseResult,
  decodeWire,
} from "@gpupool/contract";
import type { LeaseRequest } from "@gpupool/contract";
import { GpupoolError, ServerUnavailableError, normalizeProblem, sdkProblem } from "./errors.js";
import { problemToError } from "./problem-errors.js";
import { isRecord } from "./json.js";
import { normalizeIpToken, type IpTokenInput } from "./ip-token-header.js";
import { readServerSentEvents, type SseEvent } from "./sse.js";
import type { Transport } from "./transport.js";
import type { Lease, Problem, QueueUpdate, Size } from "./types.js";
import { traceparentFor } from "./trace-context.js";
import { toLease } from "./wire.js";

export interface AcquireOptions {
  /** Longest the call may hold the GPU, in seconds (server default 60). Unused time is refunded. */
  readonly duration?: number | undefined;
  readonly size?: Size | undefined;
  /** Wait for a slot when none is free (server default true); false fails fast with `NoGpuAvailableError`. */
  readonly queue?: boolean | undefined;
  /**
   * Seconds you are willing to wait for a slot (server default and cap: the tier's queue timeout).
   * A call expected to wait longer (or, with no promise to start in time, into the last tenth of
   * it: the operator's `queue.predicted_wait_headroom`) fails at once with `NoGpuAvailableError` (`reason: predicted_wait`, its expected wait in
   * `eta_s`) instead of waiting out the timeout.
   */
  readonly maxWait?: number | undefined;
  /** The end user's `X-IP-Token`, so they are charged instead of the app. */
  readonly ipToken?: IpTokenInput;
  /** Called whenever the queue position (or reason) changes while waiting. */
  readonly onQueue?: ((update: QueueUpdate) => void) | undefined;
  /** Aborting gives up the request: a queued (or just granted) lease is cancelled first. */
  readonly signal?: AbortSignal | undefined;
  /**
   * The request's `Idempotency-Key` (1–255 printable ASCII characters). By default the SDK makes
   * one per call (a UUID); pass your own to make a call you repeat yourself (after a crash, say)
   * return the same lease for 24 h.
   */
  readonly idempotencyKey?: string | undefined;
  /**
   * The call's W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), sent with its lease request
   * so the server's spans join your trace. `gpu()` sends one on the lease and the release request
   * either way: this one, or a new one per call.
   */
  readonly traceparent?: string | undefined;
}

/** Consecutive event-stream drops with no event in between before giving up. */
const MAX_QUIET_RECONNECTS = 3;

export async function acquireLease(transport: Transport, options: AcquireOptions): Promise<Lease> {
  const { signal } = options;
  signal?.throwIfAborted();
  const body: LeaseRequest = {
    ...(options.duration !== undefined ? { duration: options.duration } : {}),
    ...(options.size !== undefined ? { size: options.size } : {}),
    ...(options.queue !== undefined ? { queue: options.queue } : {}),
    ...(options.maxWait !== undefined ? { max_wait: options.maxWait } : {}),
  };

  const key = options.idempotencyKey ?? newIdempotencyKey();
  const traceparent = options.traceparent === undefined ? undefined : traceparentFor(options.traceparent);
  const lease = await admit(transport, body, normalizeIpToken(options.ipToken), key, signal, traceparent);
  if (signal?.aborted === true) {
    await cancelQuietly(transport, lease.id);
    throw signal.reason;
  }
  if (lease.status === "active") return lease;
  if (lease.status !== "queued") throw endedError(lease);
  return followQueue(transport, lease, options);
}

/** Attempts of one lease request when the server cannot be reached or answers 503 (the same key each time). */
const ADMIT_ATTEMPTS = 4;

/** A UUID (v4) for `Idempotency-Key`: from Web Crypto where there is one (Node 19+, browsers), else random enough. */
function newIdempotencyKey(): string {
  const webCrypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (typeof webCrypto?.randomUUID === "function") return webCrypto.randomUUID();
  const hex = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20)}`;
}

/**
 * POST /v1/leases, with an Idempotency-Key, retried (same key, backing off: 0.25, 0.5, 1 s, or
 * the server's Retry-After up to 5 s) when the server could not be reached or answered 503
 * unavailable — the lease may exist even so (the answer was lost, or a later step failed), and
 * the key makes the retry return it instead of making a second one. A refusal (429, 503
 * `no_gpu_available`, …) is not retried.
 */
async function admitWithRetries(
  transport: Transport,
  body: LeaseRequest,
  ipToken: string | undefined,
  idempotencyKey: string,
  signal: AbortSignal | undefined,
  traceparent: string | undefined,
): Promise<Lease> {
  for (let attempt = 1; ; attempt++) {
    try {
      return toLease(
        await transport.json(
          { method: "POST", path: "/v1/leases", auth: "client", body, ipToken, idempotencyKey, traceparent },
          WireLease,
        ),
      );
    } catch (error) {
      const retryable =
        error instanceof ServerUnavailableError &&
        (error.status === 0 || error.status === 503) &&
        error.code !== "no_gpu_available";
      if (!retryable || attempt >= ADMIT_ATTEMPTS || signal?.aborted === true) throw error;
      const retryAt = (error.problem["retry_at"] as string | undefined) ?? null;
      const asked = retryAt === null ? 0 : new Date(retryAt).getTime() - Date.now();
      const backoff = 250 * 2 ** (attempt - 1) * (0.8 + Math.random() * 0.4);
      await sleep(Math.min(5_000, Math.max(backoff, Number.isFinite(asked) ? asked : 0)), signal);
    }
  }
}

/**
 * The lease request without handing the caller's signal to fetch: if the caller aborts
 * mid-request the lease may already exist server-side, and only the response tells us
 * its id. So we reject at once and cancel the lease in the background when it arrives.
 */
function admit(
  transport: Transport,
  body: LeaseRequest,
  ipToken: string | undefined,
  idempotencyKey: string,
  signal: AbortSignal | undefined,
  traceparent: string | undefined,
): Promise<Lease> {
  const request = admitWithRetries(transport, body, ipToken, idempotencyKey, signal, traceparent);
  if (signal === undefined) return request;
  let onAbort = (): void => {};
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => {
      reject(abortReason(signal));
      void request.then(
        (lease) => cancelQuietly(transport, lease.id),
        () => {},
      );
    };
  });
  signal.addEventListener("abort", onAbort, { once: true });
  return Promise.race([request, aborted]).finally(() => {
    signal.removeEventListener("abort", onAbort);
  });
}

async function followQueue(transport: Transport, queued: Lease, options: AcquireOptions): Promise<Lease> {
  const { signal, onQueue } = options;
  const id = queued.id;
  let lastUpdate = "";
  let quietReconnects = 0;
  // Set once the server has finished the lease itself, so there is nothing left to cancel.
  let settled = false;

  try {
    while (true) {
      let progressed = false;
      let dropped: unknown;
      for await (const event of leaseEvents(transport, id, signal)) {
        if (event.kind !== "dropped") progressed = true;
        switch (event.kind) {
          case "queued": {
            const key = `${event.update.position}/${event.update.reason}`;
            // The stream re-sends the current state on every (re)connect; report changes only.
            if (key !== lastUpdate) {
              lastUpdate = key;
              onQueue?.(event.update);
            }
            break;
          }
          case "granted":
            return event.lease;
          case "failed":
            settled = true;
            throw problemToError(event.problem);
          case "ended":
            settled = true;
            throw endedError(event.lease);
          case "dropped":
            dropped = event.error;
            break;
        }
      }

      // The stream closed without an outcome (proxy timeout, server restart): ask directly.
      const current = toLease(
        await transport.json({ method: "GET", path: leasePath(id), auth: "client", signal }, WireLease),
      );
      if (current.status === "active") return current;
      if (current.status !== "queued") {
        settled = true;
        throw endedError(current);
      }
      quietReconnects = progressed ? 0 : quietReconnects + 1;
      if (quietReconnects >= MAX_QUIET_RECONNECTS) throw lostStream(transport, id, dropped);
      await sleep(Math.min(250 * 2 ** quietReconnects, 2000), signal);
    }
  } catch (error) {
    // Never leave a queued lease behind: it would be granted later and hold a GPU (and
    // the user's reservation) until its deadline with nobody using it.
    if (!settled) await cancelQuietly(transport, id);
    if (signal?.aborted === true) throw signal.reason;
    throw error;
  }
}

type LeaseEvent =
  | { readonly kind: "queued"; readonly update: QueueUpdate }
  | { readonly kind: "granted"; readonly lease: Lease }
  | { readonly kind: "failed"; readonly problem: Problem }
  | { readonly kind: "ended"; readonly lease: Lease }
  | { readonly kind: "dropped"; readonly error: unknown };

/**
 * The lease's event stream as typed events. A connection that breaks ends the sequence
 * with `dropped` rather than throwing, so the caller can tell it from the server's own
 * answers (and from exceptions thrown by its `onQueue` callback).
 */
async function* leaseEvents(
  transport: Transport,
  id: string,
  signal: AbortSignal | undefined,
): AsyncGenerator<LeaseEvent> {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let events: AsyncGenerator<SseEvent> | undefined;
  try {
    let body: ReadableStream<Uint8Array>;
    try {
      ({ body } = await transport.eventStream({
        method: "GET",
        path: `${leasePath(id)}/events`,
        auth: "client",
        signal: controller.signal,
      }));
    } catch (error) {
      if (error instanceof ServerUnavailableError && signal?.aborted !== true) {
        yield { kind: "dropped", error };
        return;
      }
      throw error;
    }
    events = readServerSentEvents(body);
    while (true) {
      let next: IteratorResult<SseEvent>;
      try {
        next = await events.next();
      } catch (error) {
        if (signal?.aborted === true) throw signal.reason;
        yield { kind: "dropped", error };
        return;
      }
      if (next.done === true) return;
      const event = parseLeaseEvent(id, next.value.event, next.value.data);
      if (event !== undefined) yield event;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await events?.return(undefined);
    controller.abort();
  }
}

function parseLeaseEvent(id: string, name: string, data: string): LeaseEvent | undefined {
  if (name !== "queued" && name !== "granted" && name !== "failed" && name !== "ended") return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(data) as unknown;
  } catch (error) {
    throw new GpupoolError(
      sdkProblem("invalid_response", "Invalid response", 200, `Lease ${id} sent a "${name}" event that is not JSON.`),
      { cause: error },
    );
  }
  if (name === "failed") {
    // A problem may carry a code this SDK does not know yet: keep whatever the server said.
    const problem = isRecord(payload) ? payload["problem"] : undefined;
    return {
      kind: "failed",
      problem: isRecord(problem)
        ? normalizeProblem(problem, 0, `Lease ${id} failed while queued.`)
        : sdkProblem("lease_failed", "Lease failed", 0, `Lease ${id} failed while queued.`),
    };
  }
  const decoded =
    name === "queued"
      ? decodeWire(QueuedEvent, payload)
      : decodeWire(name === "granted" ? GrantedEvent : EndedEvent, payload);
  if (!decoded.ok) {
    throw new GpupoolError(
      sdkProblem(
        "invalid_response",
        "Invalid response",
        200,
        `Lease ${id} sent a "${name}" event that does not match the gpupool wire format (${decoded.message}).`,
      ),
    );
  }
  const value = decoded.value;
  if ("position" in value)
    return {
      kind: "queued",
      update: {
        leaseId: id,
        position: value.position,
        reason: value.reason,
        etaS: value.eta_s,
        etaMaxS: value.eta_max_s ?? null,
      },
    };
  return { kind: name === "granted" ? "granted" : "ended", lease: toLease(value.lease) };
}

function endedError(lease: Lease): GpupoolError {
  if (lease.problem !== null) return problemToError(lease.problem);
  return new GpupoolError(
    sdkProblem(
      "lease_ended",
      "Lease ended before it was granted",
      0,
      `Lease ${lease.id} ended as "${lease.status}" before it was granted a GPU; nothing was charged for the wait.`,
    ),
  );
}

function lostStream(transport: Transport, id: string, cause: unknown): ServerUnavailableError {
  const url = `${transport.baseUrl}${leasePath(id)}/events`;
  return new ServerUnavailableError(
    sdkProblem(
      "server_unavailable",
      "gpupool server unavailable",
      0,
      `Lost the queue event stream at ${url} ${MAX_QUIET_RECONNECTS} times in a row; the lease was cancelled.`,
    ),
    { url, cause },
  );
}

/** Best effort: the caller is already failing for another reason, which is what it should see. */
export async function cancelQuietly(transport: Transport, id: string): Promise<void> {
  try {
    await transport.json({ method: "DELETE", path: leasePath(id), auth: "client" }, ReleaseResult);
  } catch {
    // Ignored on purpose; the server's queue timeout or lease deadline bounds the leak.
  }
}

export function leasePath(id: string): string {
  return `/v1/leases/${encodeURIComponent(id)}`;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      if (signal !== undefined) reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * `reason` is typed `any`; whatever the caller aborted with is what fetch itself would
 * reject with (a DOMException "AbortError" by default), so it is passed through unchanged.
 */
function abortReason(signal: AbortSignal): Error {
  return signal.reason as Error;
}
