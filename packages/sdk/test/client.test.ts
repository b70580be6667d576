import type { IncomingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import { createClient, forwardIpToken, UnauthorizedError } from "../src/index.js";
import {
  quotaObject,
  releaseResult,
  sendJson,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

describe("client calls", () => {
  it("converts wire objects to camelCase with Dates", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.path === "/v1/quota") sendJson(res, 200, quotaObject);
      else if (request.path === "/v1/leases/ls_1")
        sendJson(res, 200, wireLease("released", { held_ms: 1234, charged: 2 }));
      else if (request.path === "/v1/leases")
        sendJson(res, 200, { leases: [wireLease("active"), wireLease("queued")] });
      else if (request.path === "/v1/leases/ls_1/release") sendJson(res, 200, releaseResult("ls_1", false));
    });
    const pool = createClient({ url: server.url, token: "ut_user" });

    const quota = await pool.quota();
    expect(quota).toMatchObject({
      identity: { kind: "ip", id: "203.0.113.7", tier: "anonymous" },
      left: 30,
      maxDuration: 120,
      maxRuns: null,
      windowStartedAt: new Date("2025-01-01T10:00:00.000Z"),
      resetsAt: new Date("2025-01-02T10:00:00.000Z"),
    });

    const lease = await pool.lease("ls_1");
    expect(lease.heldMs).toBe(1234);
    expect(lease.charged).toBe(2);
    expect(lease.queuedAt).toBeInstanceOf(Date);
    expect(lease.quota?.left).toBe(30);

    const leases = await pool.leases({ status: "active", limit: 5 });
    expect(leases.map((l) => l.status)).toEqual(["active", "queued"]);
    const list = server.requests.find((r) => r.path === "/v1/leases");
    expect(list?.query.get("status")).toBe("active");
    expect(list?.query.get("limit")).toBe("5");

    const released = await pool.release("ls_1", { failed: false });
    expect(released).toMatchObject({ id: "ls_1", status: "released", heldMs: 1234, charged: 2, refunded: 58 });

    expect(server.requests.every((r) => r.headers["authorization"] === "Bearer ut_user")).toBe(true);
  });

  it("cancel sends DELETE; diagnose sends the query and X-IP-Token", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "DELETE") {
        sendJson(res, 200, { ...releaseResult("ls_1", false), status: "cancelled", held_ms: null });
      } else {
        sendJson(res, 200, {
          identity: { kind: "user", id: "u_1", tier: "free" },
          steps: [{ step: "x-ip-token", outcome: "ok", detail: "token for user:u_1" }],
          quota: quotaObject,
          request: { duration: 60, size: "xlarge", cost: 2, reserves: 120 },
          buckets: [
            { bucket: "gpu_quota", applies: true, detail: "charged to your GPU quota" },
            { bucket: "credits", applies: false, detail: "credits do not extend it" },
          ],
          verdict: { outcome: "queued", position: 2, reason: "concurrency", eta_s: 40, eta_max_s: 55 },
          causes: [],
        });
      }
    });
    const pool = createClient({ url: `${server.url}/`, appKey: "ak_test" });

    const cancelled = await pool.cancel("ls_1");
    expect(cancelled.status).toBe("cancelled");
    expect(server.requests[0]).toMatchObject({ method: "DELETE", path: "/v1/leases/ls_1" });

    const diagnosis = await pool.diagnose({ duration: 60, size: "xlarge", ipToken: ["ipt_1"] });
    expect(diagnosis.verdict).toEqual({
      outcome: "queued",
      position: 2,
      reason: "concurrency",
      etaS: 40,
      etaMaxS: 55,
      problem: null,
    });
    expect(diagnosis.request).toEqual({ duration: 60, size: "xlarge", cost: 2, reserves: 120 });
    expect(diagnosis.buckets).toEqual([
      { bucket: "gpu_quota", applies: true, detail: "charged to your GPU quota" },
      { bucket: "credits", applies: false, detail: "credits do not extend it" },
    ]);
    expect(diagnosis.steps[0]?.step).toBe("x-ip-token");
    const request = server.requests[1];
    expect(request?.path).toBe("/v1/diagnose");
    expect(request?.query.get("duration")).toBe("60");
    expect(request?.query.get("size")).toBe("xlarge");
    expect(request?.headers["x-ip-token"]).toBe("ipt_1");
  });

  it("keeps a path prefix in the base URL", async () => {
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, quotaObject));
    const pool = createClient({ url: `${server.url}/gpupool/`, appKey: "ak_test" });
    await pool.quota();
    expect(server.requests[0]?.path).toBe("/gpupool/v1/quota");
  });

  it("ipToken issues a token with the admin token when given, else the client's token", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendJson(res, 201, {
        token: "eyJ.x.y",
        expires_at: "2025-01-01T10:10:00.000Z",
        subject: "ip:203.0.113.7",
        app: "a_demo",
      }),
    );
    const edge = createClient({ url: server.url, token: "ek_edge" });
    const token = await edge.ipToken({ app: "a_demo", ip: "203.0.113.7" });
    expect(token).toEqual({
      token: "eyJ.x.y",
      expiresAt: new Date("2025-01-01T10:10:00.000Z"),
      subject: "ip:203.0.113.7",
    });
    expect(server.requests[0]?.body).toEqual({ app: "a_demo", ip: "203.0.113.7" });
    expect(server.requests[0]?.headers["authorization"]).toBe("Bearer ek_edge");

    const admin = createClient({ url: server.url, appKey: "ak", adminToken: "adm" });
    await admin.ipToken({ app: "a_demo", user: "u_1" });
    expect(server.requests[1]?.headers["authorization"]).toBe("Bearer adm");
  });
});

const CREATED = "2025-01-01T09:00:00.000Z";

describe("admin", () => {
  it("uses the admin token and converts the answers", async () => {
    server = await startFakeControlPlane((request, res) => {
      const key = `${request.method} ${request.path}`;
      switch (key) {
        case "POST /v1/admin/users":
          return sendJson(res, 201, {
            id: "u_1",
            name: "ada",
            tier: "pro",
            quota_override: null,
            created_at: CREATED,
            token: "ut_secret",
          });
        case "GET /v1/admin/users":
          return sendJson(res, 200, {
            users: [{ id: "u_1", name: "ada", tier: "pro", quota_override: null, created_at: CREATED }],
          });
        case "PATCH /v1/admin/users/u_1":
          return sendJson(res, 200, {
            id: "u_1",
            name: "ada",
            tier: "team",
            quota_override: 600,
            created_at: CREATED,
            quota: quotaObject,
          });
        case "POST /v1/admin/apps":
          return sendJson(res, 201, {
            id: "a_1",
            name: "sdxl",
            owner: "u_1",
            max_concurrency: 2,
            created_at: CREATED,
            key: "ak_secret",
          });
        case "GET /v1/admin/apps":
          return sendJson(res, 200, {
            apps: [{ id: "a_1", name: "sdxl", owner: "u_1", max_concurrency: null, created_at: CREATED }],
          });
        case "POST /v1/admin/nodes":
          return sendJson(res, 201, { id: "n_1", name: "gpu-box", key: "nk_secret" });
        case "POST /v1/admin/edges":
          return sendJson(res, 201, { id: "e_1", name: "edge", key: "ek_secret" });
        case "GET /v1/admin/pool":
          return sendJson(res, 200, {
            leader: true,
            source: "leader",
            nodes: [
              {
                name: "gpu-host",
                kind: "agent",
                state: "up",
                heartbeat_at: CREATED,
                agent_url: "http://127.0.0.1:7071",
              },
            ],
            devices: [
              { node: "gpu-host", index: 0, uuid: "GPU-1", name: "H200", memory_mb: 144384, slots: ["ls_1", null] },
            ],
            slots: { total: 2, busy: 1 },
            active: [
              {
                id: "ls_1",
                app: "a_1",
                identity: "user:u_1",
                size: "large",
                node: "gpu-host",
                device: 0,
                deadline: CREATED,
              },
            ],
            queue: [{ lease: "ls_2", position: 1, reason: "node", identity: "ip:203.0.113.7", app: "a_1", slots: 2 }],
            queued: { total: 1, listed: 1, by_reason: { node: 1 }, by_kind: { ip: 1 } },
          });
        default:
          return sendJson(res, 404, {});
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_app", adminToken: "adm_secret" });

    expect(await pool.admin.createUser({ name: "ada", tier: "pro" })).toEqual({
      id: "u_1",
      name: "ada",
      tier: "pro",
      token: "ut_secret",
    });
    expect(await pool.admin.listUsers()).toEqual([
      { id: "u_1", name: "ada", tier: "pro", quotaOverride: null, quota: null },
    ]);
    const updated = await pool.admin.updateUser("u_1", { tier: "team", quota: 600, bonus: 30 });
    expect(updated.quotaOverride).toBe(600);
    expect(await pool.admin.createApp({ name: "sdxl", owner: "u_1", maxConcurrency: 2 })).toEqual({
      id: "a_1",
      name: "sdxl",
      owner: "u_1",
      maxConcurrency: 2,
      key: "ak_secret",
    });
    expect(await pool.admin.listApps()).toEqual([{ id: "a_1", name: "sdxl", owner: "u_1", maxConcurrency: null }]);
    expect((await pool.admin.createNode({ name: "gpu-box" })).key).toBe("nk_secret");
    expect((await pool.admin.createEdge({ name: "edge" })).key).toBe("ek_secret");
    expect(await pool.admin.pool()).toEqual({
      leader: true,
      source: "leader",
      nodes: [
        {
          name: "gpu-host",
          kind: "agent",
          state: "up",
          heartbeatAt: new Date(CREATED),
          agentUrl: "http://127.0.0.1:7071",
        },
      ],
      devices: [{ node: "gpu-host", index: 0, uuid: "GPU-1", name: "H200", memoryMb: 144384, slots: ["ls_1", null] }],
      slots: { total: 2, busy: 1 },
      active: [
        {
          id: "ls_1",
          app: "a_1",
          identity: "user:u_1",
          size: "large",
          node: "gpu-host",
          device: 0,
          deadline: new Date(CREATED),
        },
      ],
      queue: [{ lease: "ls_2", position: 1, reason: "node", identity: "ip:203.0.113.7", app: "a_1", slots: 2 }],
      queued: { total: 1, listed: 1, byReason: { node: 1 }, byKind: { ip: 1 } },
    });

    expect(server.requests.every((r) => r.headers["authorization"] === "Bearer adm_secret")).toBe(true);
    expect(server.requests.find((r) => r.method === "PATCH")?.body).toEqual({ tier: "team", quota: 600, bonus: 30 });
    expect(server.requests.find((r) => r.path === "/v1/admin/apps" && r.method === "POST")?.body).toEqual({
      name: "sdxl",
      owner: "u_1",
      max_concurrency: 2,
    });
  });

  it("fails before sending anything when no admin token was given", async () => {
    server = await startFakeControlPlane((_request, res) => sendJson(res, 200, []));
    const pool = createClient({ url: server.url, appKey: "ak_app" });

    const error = await pool.admin.listUsers().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(UnauthorizedError);
    expect((error as Error).message).toContain("adminToken");
    expect(server.requests).toHaveLength(0);
  });
});

describe("pages", () => {
  it("listUsers and listApps follow next_cursor to the last page; leasesPage passes the cursor and hands back the next", async () => {
    const user = (n: number) => ({
      id: `u_${n}`,
      name: `u${n}`,
      tier: "free",
      quota_override: null,
      created_at: "2025-01-01T00:00:00.000Z",
    });
    server = await startFakeControlPlane((request, res) => {
      const cursor = request.query.get("cursor");
      if (request.path === "/v1/admin/users")
        return sendJson(
          res,
          200,
          cursor === null ? { users: [user(1), user(2)], next_cursor: "c2" } : { users: [user(3)], next_cursor: null },
        );
      if (request.path === "/v1/admin/apps") return sendJson(res, 200, { apps: [] });
      if (request.path === "/v1/leases")
        return sendJson(res, 200, { leases: [wireLease("active")], next_cursor: cursor === "older" ? null : "older" });
      return sendJson(res, 404, {});
    });
    const pool = createClient({ url: server.url, token: "ut_user", adminToken: "adm_secret" });
    expect((await pool.admin.listUsers()).map((u) => u.id)).toEqual(["u_1", "u_2", "u_3"]);
    expect(server.requests.filter((r) => r.path === "/v1/admin/users").map((r) => r.query.get("cursor"))).toEqual([
      null,
      "c2",
    ]);
    // A server older than pages sends no next_cursor: one page, all there is.
    expect(await pool.admin.listApps()).toEqual([]);
    const first = await pool.leasesPage({ limit: 1 });
    expect(first.nextCursor).toBe("older");
    const second = await pool.leasesPage({ limit: 1, cursor: first.nextCursor! });
    expect(second.nextCursor).toBeNull();
    expect(server.requests.filter((r) => r.path === "/v1/leases").map((r) => r.query.get("cursor"))).toEqual([
      null,
      "older",
    ]);
  });
});

describe("forwardIpToken", () => {
  it("reads x-ip-token from Node headers and WHATWG Headers", () => {
    expect(forwardIpToken({ "x-ip-token": "ipt_1", host: "app" })).toBe("ipt_1");
    expect(forwardIpToken({ "X-IP-Token": "ipt_2" })).toBe("ipt_2");
    expect(forwardIpToken({ "x-ip-token": ["ipt_3"] })).toBe("ipt_3");
    expect(forwardIpToken({ host: "app" })).toBeUndefined();
    expect(forwardIpToken({ "x-ip-token": "" })).toBeUndefined();
    expect(forwardIpToken(new Headers({ "X-IP-Token": "ipt_4" }))).toBe("ipt_4");
    expect(forwardIpToken(new Headers())).toBeUndefined();
    expect(forwardIpToken(undefined)).toBeUndefined();
    const incoming: IncomingHttpHeaders = { "x-ip-token": "ipt_5", "set-cookie": ["a=b"] };
    expect(forwardIpToken(incoming)).toBe("ipt_5");
  });
});
