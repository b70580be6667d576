import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import type { InjectOptions } from "fastify";
import { pino } from "pino";
import { expect } from "vitest";
import { checkServerResponse } from "../../../test/contract/check-response.js";
import { freshPostgresUrl } from "../../../test/pg/postgres-url.js";
import { normalizeConfig } from "../src/config.js";
import type { Clock } from "../src/clock.js";
import type { Storage } from "../src/storage/store.js";
import { createServer } from "../src/main/server.js";
import type { RunningServer } from "../src/main/server.js";

export const ADMIN = "test-admin-token-0123456789";

export interface TestServer {
  server: RunningServer;
  dir: string;
  call: (
    method: string,
    url: string,
    opts?: { token?: string; body?: unknown; headers?: Record<string, string> },
  ) => Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  user: (name: string, tier?: string) => Promise<{ id: string; token: string }>;
  appFor: (name: string, owner: string, maxConcurrency?: number) => Promise<{ id: string; key: string }>;
  ipToken: (app: string, who: { user?: string; ip?: string }) => Promise<string>;
  close: () => Promise<void>;
}

/**
 * The storage a test server in `dir` uses: `dir/test.db`, or with GPUPOOL_TEST_STORAGE=postgres a
 * fresh PostgreSQL schema, remembered in `dir` so a server restarted on the same dir finds its data.
 */
export function storageUrlFor(dir: string): string {
  if (process.env["GPUPOOL_TEST_STORAGE"] !== "postgres") return `sqlite:${join(dir, "test.db")}`;
  const file = join(dir, "postgres-url");
  if (existsSync(file)) return readFileSync(file, "utf8");
  const url = freshPostgresUrl(basename(dir).replace(/^gpupool-/, ""));
  writeFileSync(file, url);
  return url;
}

/** A real server (fresh SQLite file or PostgreSQL schema, real engine) driven in-process through fastify.inject. */
export async function startTestServer(raw: Record<string, unknown> = {}): Promise<TestServer> {
  return serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), raw);
}

/**
 * A server on `dir`'s storage (which may already hold state from an earlier server: restarts).
 * `keepDir` leaves the directory in place on close; `adminToken: null` disables the admin API.
 */
export async function serveAt(
  dir: string,
  raw: Record<string, unknown> = {},
  options: {
    keepDir?: boolean;
    adminToken?: string | null;
    storageUrl?: string;
    clock?: Clock;
    storage?: Storage;
  } = {},
): Promise<TestServer> {
  // storageUrl: this storage rather than the dir's (e.g. several replicas on one PostgreSQL schema).
  const config = normalizeConfig({ ...raw, storage: { url: options.storageUrl ?? storageUrlFor(dir) } });
  const server = await createServer(config, {
    adminToken: options.adminToken === undefined ? ADMIN : options.adminToken,
    logger: pino({ level: process.env.TEST_LOG ?? "silent" }),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.storage ? { storage: options.storage } : {}),
  });
  checkEveryAnswer(server);
  const call: TestServer["call"] = async (method, url, opts = {}) => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers["authorization"] = `Bearer ${opts.token}`;
    const res = await server.app.inject({
      method: method as "GET",
      url,
      headers,
      ...(opts.body !== undefined
        ? {
            payload: typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body),
            headers: { "content-type": "application/json", ...headers },
          }
        : {}),
    });
    return { status: res.statusCode, body: bodyOf(res), headers: res.headers };
  };
  const user = async (name: string, tier = "free") => {
    const r = await call("POST", "/v1/admin/users", { token: ADMIN, body: { name, tier } });
    if (r.status !== 201) throw new Error(`create user: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id as string, token: r.body.token as string };
  };
  const appFor = async (name: string, owner: string, maxConcurrency?: number) => {
    const r = await call("POST", "/v1/admin/apps", {
      token: ADMIN,
      body: { name, owner, ...(maxConcurrency ? { max_concurrency: maxConcurrency } : {}) },
    });
    if (r.status !== 201) throw new Error(`create app: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id as string, key: r.body.key as string };
  };
  const ipToken = async (app: string, who: { user?: string; ip?: string }) => {
    const r = await call("POST", "/v1/ip-tokens", { token: ADMIN, body: { app, ...who } });
    if (r.status !== 201) throw new Error(`ip token: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.token as string;
  };
  return {
    server,
    dir,
    call,
    user,
    appFor,
    ipToken,
    close: async () => {
      await server.close();
      await options.storage?.close();
      if (!options.keepDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A JSON answer parsed (problem+json too); anything else as text. */
function bodyOf(res: { body: string; headers: Record<string, unknown>; json: () => unknown }): unknown {
  const type = res.headers["content-type"];
  // JSON bodies only: an NDJSON export of one record would parse as JSON too.
  if (typeof type === "string" && /^application\/(?:[a-z.+-]*\+)?json\b/.test(type))
    try {
      return res.json();
    } catch {
      /* not JSON */
    }
  return res.body;
}

/**
 * Every answer the server gives a test must be what the contract (and so the OpenAPI document and
 * docs/wire.md) says: `app.inject` checks each one, also when a test injects a raw request itself.
 */
export function checkEveryAnswer(server: RunningServer): void {
  const app = server.app;
  const inject = app.inject.bind(app);
  const checked = async (opts: InjectOptions) => {
    const res = await inject(opts);
    const method = String(opts.method ?? "GET");
    const url = typeof opts.url === "string" ? opts.url : typeof opts.path === "string" ? opts.path : "/";
    checkServerResponse({
      method,
      url,
      status: res.statusCode,
      contentType: res.headers["content-type"],
      body: bodyOf(res),
    });
    return res;
  };
  app.inject = checked as typeof app.inject;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws). */
export async function waitFor<T>(check: () => Promise<T> | T, timeoutMs = 3000, everyMs = 20): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`waitFor: condition not met within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

type Response = Awaited<ReturnType<TestServer["call"]>>;

/**
 * Asserts an RFC 9457 problem: status, stable code, a detail a person can read, the
 * problem+json content type, and no stack trace or source path anywhere in it.
 */
export function expectProblem(res: Response, status: number, code: string): any {
  expect({ status: res.status, code: res.body?.code }, JSON.stringify(res.body)).toEqual({ status, code });
  expect(String(res.headers["content-type"])).toMatch(/^application\/problem\+json/);
  expect(res.body.status).toBe(status);
  expect(typeof res.body.detail).toBe("string");
  expect(res.body.detail.length).toBeGreaterThan(10);
  expect(res.body.type).toBe(`urn:gpupool:problem:${code}`);
  const text = JSON.stringify(res.body);
  expect(text).not.toMatch(/"stack"|\\n\s*at |\.(ts|js):\d+|node_modules|file:\/\//);
  return res.body;
}

/** The quota object an identity sees (user token, or app key + optional X-IP-Token). */
export async function quotaOf(t: TestServer, token: string, ipToken?: string): Promise<any> {
  const r = await t.call("GET", "/v1/quota", { token, ...(ipToken ? { headers: { "x-ip-token": ipToken } } : {}) });
  if (r.status !== 200) throw new Error(`quota: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** POST /v1/leases with an optional X-IP-Token. */
export function lease(
  t: TestServer,
  token: string,
  body: Record<string, unknown> = {},
  ipToken?: string,
): Promise<Response> {
  return t.call("POST", "/v1/leases", { token, body, ...(ipToken ? { headers: { "x-ip-token": ipToken } } : {}) });
}

/** Every lease in the store, as the admin sees it. */
export async function allLeases(t: TestServer): Promise<any[]> {
  const r = await t.call("GET", "/v1/leases?limit=500", { token: ADMIN });
  if (r.status !== 200) throw new Error(`leases: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.leases;
}

/** The in-process admission of a granted-or-queued call charged to IP `ip` (a replica's `admit`): 60 s on `size`. */
export function ipCall<S>(ip: string, size: S) {
  return {
    appId: null,
    charged: { kind: "ip" as const, id: ip },
    via: "ip-token" as const,
    durationMs: 60_000,
    size,
    queue: true,
    node: null,
    idempotency: null,
  };
}
