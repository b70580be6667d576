import { acquireLease, leasePath, type AcquireOptions } from "./acquire.js";
import { createAdminClient, type AdminClient } from "./admin.js";
import { billingMethods, type BillingMethods } from "./billing.js";
import type { IpTokenRequest } from "@gpupool/contract";
import {
  Diagnosis as WireDiagnosis,
  IpToken as WireIpToken,
  Lease as WireLease,
  LeaseList,
  Quota as WireQuota,
  ReleaseResult as WireReleaseResult,
} from "@gpupool/contract";
import { runOnGpu, type GpuFunction, type GpuOptions } from "./gpu.js";
import { normalizeIpToken, type IpTokenInput } from "./ip-token-header.js";
import { traceparentFor } from "./trace-context.js";
import { Transport, type FetchLike } from "./transport.js";
import type { Diagnosis, IpToken, Lease, LeaseStatus, Quota, ReleaseResult, Size } from "./types.js";
import { toDiagnosis, toIpToken, toLease, toQuota, toReleaseResult } from "./wire.js";

export interface ClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:7070` (a path prefix is kept). */
  readonly url: string;
  /** App key: leases are the app's, charged to the `ipToken`'s identity or else to the app. */
  readonly appKey?: string | undefined;
  /** User access token (used when no `appKey` is given): leases charged to that user. Also takes an edge key, for {@link GpupoolClient.ipToken}. */
  readonly token?: string | undefined;
  /** `GPUPOOL_ADMIN_TOKEN`, needed only for `admin` calls. */
  readonly adminToken?: string | undefined;
  /** Replaces the global `fetch` (tests, proxies, instrumentation). */
  readonly fetch?: FetchLike | undefined;
  /** Per-request timeout in milliseconds (default 30 000). Waiting in the queue is not bounded by it. */
  readonly timeoutMs?: number | undefined;
}

/** Which leases `leases()` lists: at most `limit` (1–500, default 50), older than `cursor`'s page. */
export interface LeaseListOptions {
  readonly status?: LeaseStatus | undefined;
  readonly limit?: number | undefined;
  /** `nextCursor` of the page before (from `leasesPage`); absent: the newest. */
  readonly cursor?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface QueryOptions {
  /** The end user's `X-IP-Token`, so the answer is about them rather than the app. */
  readonly ipToken?: IpTokenInput;
  readonly signal?: AbortSignal | undefined;
}

/**
 * A client for one gpupool control plane. Every failure is thrown as a `GpupoolError` subclass.
 * Billing and usage (`me`, `wallet`, `setBilling`, `usage`, …) are in {@link BillingMethods}.
 */
export interface GpupoolClient extends BillingMethods {
  /** The normalized base URL. */
  readonly url: string;
  /**
   * Requests a GPU lease and, when none is free, waits in the queue until it is granted.
   * Resolves with the active lease; the caller must `release` it.
   * Throws `QuotaExceededError`, `QueueTimeoutError`, `InvalidIpTokenError`, … on refusal.
   */
  acquire(options?: AcquireOptions): Promise<Lease>;
  /**
   * Acquires a GPU (following the queue), runs `fn` with it, and always releases it:
   * with `failed: true` when `fn` throws, whose error is then rethrown.
   */
  gpu<T>(options: GpuOptions, fn: GpuFunction<T>): Promise<T>;
  gpu<T>(fn: GpuFunction<T>): Promise<T>;
  /** Ends a lease: the unused part of its reservation is refunded. Idempotent. */
  release(
    id: string,
    options?: { readonly failed?: boolean | undefined; readonly traceparent?: string | undefined },
  ): Promise<ReleaseResult>;
  /** Cancels a queued lease (everything refunded) or releases an active one. */
  cancel(id: string): Promise<ReleaseResult>;
  lease(id: string, options?: { readonly signal?: AbortSignal | undefined }): Promise<Lease>;
  /** Leases visible to the credential, newest first: an app's own, or those charged to a user (one page). */
  leases(options?: LeaseListOptions): Promise<Lease[]>;
  /** A page of `leases`, with the cursor of the next (older) page: pass it as `cursor`; null on the last. */
  leasesPage(options?: LeaseListOptions): Promise<{ leases: Lease[]; nextCursor: string | null }>;
  /** Quota state of the user token's user, or of the `ipToken`'s identity for an app key. */
  quota(options?: QueryOptions): Promise<Quota>;
  /** Explains whom a lease would be charged to and why, and what it would get now, without reserving anything. */
  diagnose(
    options?: QueryOptions & {
      readonly duration?: number | undefined;
      readonly size?: Size | undefined;
      /** Seconds the call would wait for a slot, as `maxWait` in `lease()`. */
      readonly maxWait?: number | undefined;
    },
  ): Promise<Diagnosis>;
  /** Issues an `X-IP-Token` for a viewer of `app` (needs an edge key as `token`, or the admin token). */
  ipToken(request: {
    readonly app: string;
    readonly user?: string | undefined;
    readonly ip?: string | undefined;
  }): Promise<IpToken>;
  readonly admin: AdminClient;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** Creates a client; nothing is sent until the first call. */
export function createClient(options: ClientOptions): GpupoolClient {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs must be a positive number of milliseconds, got ${timeoutMs}.`);
  const fetchImpl = options.fetch ?? globalThis.fetch;
  if (typeof fetchImpl !== "function") {
    throw new TypeError("No fetch implementation: use Node.js 20 or later, or pass `fetch` to createClient.");
  }
  const transport = new Transport({
    url: options.url,
    bearer: options.appKey ?? options.token,
    adminToken: options.adminToken,
    // Bound so a bare `fetch` reference never runs with `this` set to our options object.
    fetch: (input, init) => fetchImpl(input, init),
    timeoutMs,
  });

  const leasesPage = async (o: LeaseListOptions) => {
    const body = await transport.json(
      {
        method: "GET",
        path: "/v1/leases",
        auth: "client",
        query: { status: o.status, limit: o.limit, cursor: o.cursor },
        signal: o.signal,
      },
      LeaseList,
    );
    return { leases: body.leases.map(toLease), nextCursor: body.next_cursor ?? null };
  };
  const release = async (id: string, failed?: boolean, traceparent?: string): Promise<ReleaseResult> =>
    toReleaseResult(
      await transport.json(
        {
          method: "POST",
          path: `${leasePath(id)}/release`,
          auth: "client",
          body: failed === undefined ? {} : { failed },
          traceparent: traceparent === undefined ? undefined : traceparentFor(traceparent),
        },
        WireReleaseResult,
      ),
    );

  // Usage is the whole pool's for the admin: a client with only the admin token reads it as the admin.
  const bearer = options.appKey ?? options.token;
  const billingAuth = bearer === undefined && options.adminToken !== undefined ? "admin" : "client";

  const client: GpupoolClient = {
    ...billingMethods(transport, billingAuth),
    url: transport.baseUrl,
    acquire: (acquireOptions = {}) => acquireLease(transport, acquireOptions),
    gpu<T>(first: GpuOptions | GpuFunction<T>, second?: GpuFunction<T>): Promise<T> {
      const [gpuOptions, fn] = typeof first === "function" ? [{}, first] : [first, second];
      if (fn === undefined) return Promise.reject(new TypeError("gpu(options, fn): fn is missing."));
      return runOnGpu(
        {
          acquire: (o) => acquireLease(transport, o),
          release: (id, o) => release(id, o.failed, o.traceparent),
        },
        gpuOptions,
        fn,
      );
    },
    release: (id, releaseOptions = {}) => release(id, releaseOptions.failed, releaseOptions.traceparent),
    async cancel(id) {
      return toReleaseResult(
        await transport.json({ method: "DELETE", path: leasePath(id), auth: "client" }, WireReleaseResult),
      );
    },
    async lease(id, leaseOptions = {}) {
      return toLease(
        await transport.json(
          { method: "GET", path: leasePath(id), auth: "client", signal: leaseOptions.signal },
          WireLease,
        ),
      );
    },
    async leases(listOptions = {}) {
      return (await leasesPage(listOptions)).leases;
    },
    leasesPage: (listOptions = {}) => leasesPage(listOptions),
    async quota(queryOptions = {}) {
      return toQuota(
        await transport.json(
          {
            method: "GET",
            path: "/v1/quota",
            auth: "client",
            ipToken: normalizeIpToken(queryOptions.ipToken),
            signal: queryOptions.signal,
          },
          WireQuota,
        ),
      );
    },
    async diagnose(diagnoseOptions = {}) {
      return toDiagnosis(
        await transport.json(
          {
            method: "GET",
            path: "/v1/diagnose",
            auth: "client",
            query: {
              duration: diagnoseOptions.duration,
              size: diagnoseOptions.size,
              max_wait: diagnoseOptions.maxWait,
            },
            ipToken: normalizeIpToken(diagnoseOptions.ipToken),
            signal: diagnoseOptions.signal,
          },
          WireDiagnosis,
        ),
      );
    },
    async ipToken({ app, user, ip }) {
      const body: IpTokenRequest = {
        app,
        ...(user !== undefined ? { user } : {}),
        ...(ip !== undefined ? { ip } : {}),
      };
      return toIpToken(
        await transport.json({ method: "POST", path: "/v1/ip-tokens", auth: "issuer", body }, WireIpToken),
      );
    },
    admin: createAdminClient(transport),
  };
  return client;
}
