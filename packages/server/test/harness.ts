import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { normalizeConfig } from "../src/config.js";
import { createServer } from "../src/server.js";
import type { RunningServer } from "../src/server.js";

export const ADMIN = "test-admin-token-0123456789";

/** A real server (fresh SQLite file, real engine) driven in-process through fastify.inject. */
export async function startTestServer(raw: Record<string, unknown> = {}): Promise<{
  server: RunningServer;
  dir: string;
  call: (method: string, url: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string> }) => Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  user: (name: string, tier?: string) => Promise<{ id: string; token: string }>;
  appFor: (name: string, owner: string, maxConcurrency?: number) => Promise<{ id: string; key: string }>;
  ipToken: (app: string, who: { user?: string; ip?: string }) => Promise<string>;
  close: () => Promise<void>;
}> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-test-"));
  const config = normalizeConfig({ ...raw, storage: { url: `sqlite:${join(dir, "test.db")}` } });
  const server = await createServer(config, { adminToken: ADMIN, logger: pino({ level: "silent" }) });
  const call = async (method: string, url: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (opts.token) headers["authorization"] = `Bearer ${opts.token}`;
    const res = await server.app.inject({
      method: method as "GET",
      url,
      headers,
      ...(opts.body !== undefined ? { payload: typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body), headers: { "content-type": "application/json", ...headers } } : {}),
    });
    let body: unknown = res.body;
    try {
      body = res.json();
    } catch {
      /* not JSON */
    }
    return { status: res.statusCode, body, headers: res.headers as Record<string, unknown> };
  };
  const user = async (name: string, tier = "free") => {
    const r = await call("POST", "/v1/admin/users", { token: ADMIN, body: { name, tier } });
    if (r.status !== 201) throw new Error(`create user: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.id as string, token: r.body.token as string };
  };
  const appFor = async (name: string, owner: string, maxConcurrency?: number) => {
    const r = await call("POST", "/v1/admin/apps", { token: ADMIN, body: { name, owner, ...(maxConcurrency ? { max_concurrency: maxConcurrency } : {}) } });
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
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
