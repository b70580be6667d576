import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, normalizeConfig } from "@gpupool/server";
import type { RunningServer } from "@gpupool/server";
import { startCluster } from "../pg/cluster.js";
import { postgresBin } from "../pg/postgres-url.js";
import type { Cluster } from "../pg/cluster.js";

/**
 * The database goes away and comes back (docs/design.md "Errors"): requests meanwhile get a clear 503 with a
 * stable code, nothing half-done, and the server recovers by itself — no restart — including
 * its role as the leader that places leases. A private cluster, since this one is stopped.
 */

const ADMIN = "outage-test-admin-token-0123456789";
const bin = postgresBin();
let cluster: Cluster;
let server: RunningServer;

async function call(
  method: string,
  url: string,
  token: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const r = await server.app.inject({
    method: method as "GET",
    url,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : null };
}

async function until<T>(check: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(bin === null)("PostgreSQL outage", () => {
  beforeAll(async () => {
    cluster = await startCluster(bin!);
    const config = normalizeConfig({ storage: { url: `${cluster.url}?schema=outage` } });
    server = await createServer(config, {
      adminToken: ADMIN,
      logger: pino({ level: process.env["TEST_LOG"] ?? "silent" }),
    });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
    await cluster?.stop();
  });

  it("answers 503 storage_unavailable while the database is down, and works again once it is back", async () => {
    const owner = await call("POST", "/v1/admin/users", ADMIN, { name: "owner", tier: "pro" });
    const key = (await call("POST", "/v1/admin/apps", ADMIN, { name: "demo", owner: owner.body.id })).body
      .key as string;
    const before = await call("POST", "/v1/leases", key, { duration: 5 });
    expect(before.status).toBe(201);

    cluster.pause();
    const down = await call("POST", "/v1/leases", key, { duration: 5 });
    expect(down.status).toBe(503);
    expect(down.body.code).toBe("storage_unavailable");
    expect(down.body.detail).toMatch(/database/i);
    // The lease needed the leader's session, which broke: this replica stepped down.
    expect(down.body.reason).toBe("leadership_lost");
    expect(JSON.stringify(down.body)).not.toMatch(/postgres:\/\/|127\.0\.0\.1:\d+|\.ts:\d+|node_modules/);
    const ready = await server.app.inject({ method: "GET", url: "/readyz" });
    expect(ready.statusCode).toBe(503);

    cluster.resume();
    // No restart: the pool reconnects, leads again, and grants.
    const again = await until(async () => {
      const r = await call("POST", "/v1/leases", key, { duration: 5 });
      return r.status === 201 ? r : null;
    }, 20_000);
    expect(again.body.device).not.toBeNull();
    const q = await call("GET", "/v1/quota", key);
    // The first lease and this one are reserved; the refused one left nothing behind.
    expect(q.body.reserved + q.body.used).toBe(10);
    expect(server.context.replica.isLeader).toBe(true);
  }, 60_000);
});
