import { openApiDocument } from "@gpupool/contract/openapi";
import { afterEach, describe, expect, it } from "vitest";
import { ADMIN, serveAt, startTestServer } from "../../packages/server/test/harness.js";
import type { TestServer } from "../../packages/server/test/harness.js";
import { ContractMismatch, checkResponse, documentedOperations } from "./check-response.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Every route of the real server, its successes and its main refusals, each response checked
 * against the OpenAPI document generated from @gpupool/contract. A response the contract does
 * not describe (a field, a status, a route) fails here: the docs cannot drift from the server.
 */

type Call = Awaited<ReturnType<TestServer["call"]>>;
const driven = new Set<string>();
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function server(raw: Record<string, unknown> = {}): Promise<TestServer & { checked: TestServer["call"] }> {
  const t = await startTestServer(raw);
  servers.push(t);
  return withChecks(t);
}

function withChecks(t: TestServer): TestServer & { checked: TestServer["call"] } {
  const checked: TestServer["call"] = async (method, url, opts) => {
    const r = await t.call(method, url, opts);
    driven.add(
      `${checkResponse({ method, url, status: r.status, contentType: r.headers["content-type"], body: r.body })} ${r.status}`,
    );
    return r;
  };
  return Object.assign(t, { checked });
}

function expectStatus(r: Call, status: number, code?: string): void {
  expect({ status: r.status, code: (r.body as { code?: string } | null)?.code }, JSON.stringify(r.body)).toEqual({
    status,
    code,
  });
}

/** A user, an app and an edge, with their credentials. */
async function principals(t: TestServer & { checked: TestServer["call"] }) {
  const owner = await t.user("owner", "pro");
  const alice = await t.user("alice", "free");
  const app = await t.appFor("demo-app", owner.id);
  const edge = await t.checked("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "edge-1" } });
  expectStatus(edge, 201);
  return { owner, alice, app, edgeKey: edge.body.key as string };
}

/**
 * Reads a Server-Sent Events response to its end (the stream ends at a lease's outcome); `opened`
 * is called once its first bytes (its first event) arrived.
 */
async function readStream(
  url: string,
  token: string,
  opened: () => void = () => undefined,
  timeoutMs = 10_000,
): Promise<{ status: number; contentType: string | null; text: string }> {
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  let text = "";
  if (res.body) {
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      text += decoder.decode(chunk as Uint8Array, { stream: true });
      opened();
    }
    text += decoder.decode();
  }
  return { status: res.status, contentType: res.headers.get("content-type"), text };
}

describe("the server's responses match the contract", () => {
  it("health, readiness, metrics and jwks", async () => {
    const t = await server();
    expectStatus(await t.checked("GET", "/healthz"), 200);
    const ready = await t.checked("GET", "/readyz");
    expectStatus(ready, 200);
    expect(ready.body).toMatchObject({ status: "ready", storage: "sqlite", leader: true });
    const metrics = await t.checked("GET", "/metrics");
    expectStatus(metrics, 200);
    expect(typeof metrics.body).toBe("string");
    const jwks = await t.checked("GET", "/.well-known/jwks.json");
    expectStatus(jwks, 200);
    expect(jwks.body.keys.length).toBeGreaterThan(0);
  });

  it("its own documents: the OpenAPI document, and the reference page under a strict CSP with its stylesheet", async () => {
    const t = await server();
    const doc = await t.checked("GET", "/openapi.json");
    expectStatus(doc, 200);
    expect(doc.body).toEqual(JSON.parse(JSON.stringify(openApiDocument())));
    const page = await t.checked("GET", "/docs/api");
    expectStatus(page, 200);
    expect(page.headers["content-security-policy"]).toMatch(/default-src 'none'/);
    expect(page.headers["content-security-policy"]).not.toMatch(/script-src|unsafe-inline/);
    expect(page.headers["x-frame-options"]).toBe("DENY");
    expect(page.body).toContain('href="/docs/api.css"');
    expect(page.body).toContain("/v1/leases");
    expect(page.body).not.toMatch(/<script|style=|onclick=/i);
    const css = await t.checked("GET", "/docs/api.css");
    expectStatus(css, 200);
    expect(String(css.headers["content-type"])).toMatch(/^text\/css/);
  });

  it("readyz answers 503 storage_unavailable when the database does not answer", async () => {
    const t = await server();
    await t.server.context.store.close();
    expectStatus(await t.checked("GET", "/readyz"), 503, "storage_unavailable");
    // The store is closed already; closing the server closes it again, which must not fail the test.
    servers.splice(servers.indexOf(t), 1);
    await t.server.app.close();
    rmSync(t.dir, { recursive: true, force: true });
  });

  it("admin: users, apps, nodes, edges, sessions, and their refusals", async () => {
    const t = await server();
    const created = await t.checked("POST", "/v1/admin/users", { token: ADMIN, body: { name: "ada", tier: "pro" } });
    expectStatus(created, 201);
    const ada = created.body as { id: string; token: string };
    expectStatus(await t.checked("POST", "/v1/admin/users", { token: ADMIN, body: { name: "ada" } }), 409, "conflict");
    expectStatus(
      await t.checked("POST", "/v1/admin/users", { token: ADMIN, body: { name: "bob", tier: "gold" } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/users", { token: ADMIN, body: { name: "bob", extra: 1 } }),
      400,
      "invalid_request",
    );
    expectStatus(await t.checked("POST", "/v1/admin/users", { body: { name: "bob" } }), 401, "unauthorized");
    expectStatus(
      await t.checked("POST", "/v1/admin/users", { token: ada.token, body: { name: "bob" } }),
      403,
      "forbidden",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/users", {
        token: ADMIN,
        body: "{not json",
        headers: { "content-type": "application/json" },
      }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/users", {
        token: ADMIN,
        body: "name=bob",
        headers: { "content-type": "text/plain" },
      }),
      415,
      "unsupported_media_type",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/users", { token: ADMIN, body: { name: "x".repeat(70 * 1024) } }),
      413,
      "payload_too_large",
    );

    expectStatus(await t.checked("GET", "/v1/admin/users", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", `/v1/admin/users/${ada.id}`, { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/admin/users/u_nobody", { token: ADMIN }), 404, "not_found");
    const patched = await t.checked("PATCH", `/v1/admin/users/${ada.id}`, {
      token: ADMIN,
      body: { tier: "team", quota: 600, bonus: 30 },
    });
    expectStatus(patched, 200);
    expect(patched.body).toMatchObject({ tier: "team", quota_override: 600 });
    expectStatus(await t.checked("PATCH", `/v1/admin/users/${ada.id}`, { token: ADMIN, body: { quota: null } }), 200);
    expectStatus(
      await t.checked("PATCH", `/v1/admin/users/${ada.id}`, { token: ADMIN, body: {} }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("PATCH", "/v1/admin/users/u_nobody", { token: ADMIN, body: { bonus: 10 } }),
      404,
      "not_found",
    );

    const app = await t.checked("POST", "/v1/admin/apps", {
      token: ADMIN,
      body: { name: "sdxl", owner: ada.id, max_concurrency: 2 },
    });
    expectStatus(app, 201);
    expectStatus(
      await t.checked("POST", "/v1/admin/apps", { token: ADMIN, body: { name: "free-app", owner: "ada" } }),
      201,
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/apps", { token: ADMIN, body: { name: "sdxl", owner: ada.id } }),
      409,
      "conflict",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/apps", { token: ADMIN, body: { name: "other", owner: "nobody" } }),
      400,
      "invalid_request",
    );
    expectStatus(await t.checked("GET", "/v1/admin/apps", { token: ADMIN }), 200);
    const limited = await t.checked("PATCH", "/v1/admin/apps/sdxl", { token: ADMIN, body: { max_concurrency: 4 } });
    expectStatus(limited, 200);
    expect(limited.body).toMatchObject({ id: app.body.id, max_concurrency: 4 });
    expectStatus(
      await t.checked("PATCH", `/v1/admin/apps/${app.body.id}`, { token: ADMIN, body: { max_concurrency: null } }),
      200,
    );
    expectStatus(
      await t.checked("PATCH", `/v1/admin/apps/${app.body.id}`, { token: ADMIN, body: { max_concurrency: 0 } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("PATCH", "/v1/admin/apps/a_nobody", { token: ADMIN, body: { max_concurrency: 1 } }),
      404,
      "not_found",
    );

    expectStatus(await t.checked("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host" } }), 201);
    expectStatus(
      await t.checked("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host" } }),
      409,
      "conflict",
    );
    expectStatus(await t.checked("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "edge" } }), 201);
    expectStatus(
      await t.checked("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "bad name!" } }),
      400,
      "invalid_request",
    );

    expectStatus(await t.checked("DELETE", `/v1/admin/users/${ada.id}/sessions`, { token: ADMIN }), 200);
    expectStatus(await t.checked("DELETE", "/v1/admin/users/u_nobody/sessions", { token: ADMIN }), 404, "not_found");
    expectStatus(await t.checked("GET", "/v1/admin/pool", { token: ADMIN }), 200);
  });

  it("admin routes of a server without an admin token answer 403 admin_disabled", async () => {
    const t = withChecks(await serveAt(mkdtempSync(join(tmpdir(), "gpupool-contract-")), {}, { adminToken: null }));
    servers.push(t);
    expectStatus(await t.checked("GET", "/v1/admin/users", { token: "not-a-generated-key" }), 403, "admin_disabled");
    expectStatus(await t.checked("GET", "/v1/admin/pool", { token: "not-a-generated-key" }), 403, "admin_disabled");
  });

  it("identity tokens and sessions", async () => {
    const t = await server();
    const { alice, app, edgeKey } = await principals(t);
    const minted = await t.checked("POST", "/v1/ip-tokens", { token: edgeKey, body: { app: app.id, user: alice.id } });
    expectStatus(minted, 201);
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", { token: ADMIN, body: { app: "demo-app", ip: "2001:db8::1" } }),
      201,
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", {
        token: edgeKey,
        body: { app: app.id, user: alice.id, ip: "203.0.113.7" },
      }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", { token: edgeKey, body: { app: "nope", ip: "203.0.113.7" } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", { token: edgeKey, body: { app: app.id, ip: "not-an-ip" } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", { body: { app: app.id, ip: "203.0.113.7" } }),
      401,
      "unauthorized",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens", { token: app.key, body: { app: app.id, ip: "203.0.113.7" } }),
      403,
      "forbidden",
    );

    const other = await t.appFor("other-app", alice.id);
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens/reissue", {
        token: edgeKey,
        body: { token: minted.body.token, app: other.id },
      }),
      201,
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens/reissue", {
        token: edgeKey,
        body: { token: "eyJhbGciOiJub25lIn0.e30.", app: other.id },
      }),
      401,
      "invalid_ip_token",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens/reissue", {
        token: edgeKey,
        body: { token: minted.body.token, app: "nope" },
      }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/ip-tokens/reissue", {
        token: ADMIN,
        body: { token: minted.body.token, app: other.id },
      }),
      403,
      "forbidden",
    );

    const opened = await t.checked("POST", "/v1/sessions", {
      token: edgeKey,
      body: { token: alice.token, name: "alice" },
    });
    expectStatus(opened, 201);
    expectStatus(
      await t.checked("POST", "/v1/sessions", { token: edgeKey, body: { token: "ut_wrong" } }),
      401,
      "invalid_credentials",
    );
    expectStatus(
      await t.checked("POST", "/v1/sessions/resolve", { token: edgeKey, body: { session: opened.body.session } }),
      200,
    );
    expectStatus(
      await t.checked("POST", "/v1/sessions/revoke", { token: edgeKey, body: { session: opened.body.session } }),
      200,
    );
    expectStatus(
      await t.checked("POST", "/v1/sessions/revoke", { token: edgeKey, body: { session: opened.body.session } }),
      200,
    );
    expectStatus(
      await t.checked("POST", "/v1/sessions/resolve", { token: edgeKey, body: { session: opened.body.session } }),
      401,
      "invalid_session",
    );
    expectStatus(
      await t.checked("POST", "/v1/sessions/resolve", { token: ADMIN, body: { session: "x" } }),
      403,
      "forbidden",
    );
  });

  it("leases: granted, queued, listed, released, cancelled, and every refusal of a lease request", async () => {
    // One GPU of two slots; a queue of one; anonymous callers get 2 minutes a day.
    const t = await server({
      pool: { simulated: [{ node: "sim-0", gpus: 1 }] },
      queue: { timeout: "30s", max_length: 1 },
    });
    const { owner, alice, app } = await principals(t);
    const viewer = await t.ipToken(app.id, { user: alice.id });
    const anon = await t.ipToken(app.id, { ip: "203.0.113.7" });

    const first = await t.checked("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 30, size: "large" },
      headers: { "x-ip-token": viewer },
    });
    expectStatus(first, 201);
    const second = await t.checked("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 100 },
      headers: { "x-ip-token": anon },
    });
    expectStatus(second, 201);
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, body: { queue: false } }),
      503,
      "no_gpu_available",
    ); // queue_disabled
    const queued = await t.checked("POST", "/v1/leases", { token: app.key, body: { duration: 10 } });
    expectStatus(queued, 202);
    expect(queued.body).toMatchObject({ status: "queued", position: 1, reason: "node" });
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, body: { duration: 10 } }),
      503,
      "no_gpu_available",
    ); // queue_full
    expectStatus(
      await t.checked("POST", "/v1/leases", {
        token: app.key,
        body: { duration: 100 },
        headers: { "x-ip-token": anon },
      }),
      429,
      "quota_exceeded",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", {
        token: app.key,
        body: { duration: 600 },
        headers: { "x-ip-token": anon },
      }),
      422,
      "duration_too_long",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: app.key, headers: { "x-ip-token": "garbage" } }),
      401,
      "invalid_ip_token",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, headers: { "x-ip-token": viewer } }),
      401,
      "invalid_ip_token",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: app.key, body: { size: "huge" } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: app.key, headers: { "x-gpupool-node-key": "nk_forged" } }),
      401,
      "unauthorized",
    );
    expectStatus(await t.checked("POST", "/v1/leases", {}), 401, "unauthorized");
    expectStatus(await t.checked("POST", "/v1/leases", { token: ADMIN }), 403, "forbidden");

    expectStatus(await t.checked("GET", "/v1/leases", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/leases?status=queued&limit=5", { token: app.key }), 200);
    expectStatus(await t.checked("GET", "/v1/leases?status=lost", { token: app.key }), 400, "invalid_request");
    expectStatus(await t.checked("GET", `/v1/leases/${queued.body.id}`, { token: app.key }), 200);
    expectStatus(await t.checked("GET", `/v1/leases/${first.body.id}`, { token: alice.token }), 200);
    expectStatus(await t.checked("GET", "/v1/leases/ls_nope", { token: app.key }), 404, "not_found");
    expectStatus(await t.checked("GET", `/v1/leases/${second.body.id}`, { token: owner.token }), 404, "not_found");
    expectStatus(await t.checked("GET", "/v1/admin/pool", { token: ADMIN }), 200);

    expectStatus(await t.checked("DELETE", `/v1/leases/${queued.body.id}`, { token: app.key }), 200);
    const released = await t.checked("POST", `/v1/leases/${first.body.id}/release`, {
      token: app.key,
      body: { failed: true },
    });
    expectStatus(released, 200);
    expectStatus(await t.checked("POST", `/v1/leases/${first.body.id}/release`, { token: app.key }), 200);
    expectStatus(
      await t.checked("POST", `/v1/leases/${second.body.id}/release`, { token: app.key, body: { failed: "no" } }),
      400,
      "invalid_request",
    );
    expectStatus(await t.checked("POST", "/v1/leases/ls_nope/release", { token: app.key }), 404, "not_found");
    expectStatus(await t.checked("DELETE", `/v1/leases/${second.body.id}`, { token: app.key }), 200);
    const own = await t.checked("POST", "/v1/leases", { token: owner.token, body: { duration: 5 } });
    expectStatus(own, 201);
    expectStatus(await t.checked("DELETE", `/v1/leases/${own.body.id}`, { token: owner.token }), 200);

    // The event stream of leases that already ended: a cancelled one, and released ones.
    for (const id of [queued.body.id, first.body.id]) {
      const events = await t.checked("GET", `/v1/leases/${id}/events`, { token: app.key });
      expectStatus(events, 200);
      expect(String(events.body)).toMatch(/^event: ended\n/);
    }
    expectStatus(await t.checked("GET", "/v1/leases/ls_nope/events", { token: app.key }), 404, "not_found");
    expectStatus(await t.checked("GET", `/v1/leases/${first.body.id}/events`), 401, "unauthorized");
  });

  it("lease events as they happen: queued then granted, queued then a queue timeout (live and replayed)", async () => {
    const t = await server({
      pool: { simulated: [{ node: "sim-0", gpus: 1 }] },
      // Queued until the timeout rather than refused at once for its expected wait (predicted_wait).
      // 3 s: the stream below must be open (and sent `queued`) before the timeout, on a machine
      // that may stall (with 1 s, a stall made it replay only `failed`).
      queue: { timeout: "3s", predicted_wait: false },
      server: { port: 0 },
    });
    const url = await t.server.listen();
    const { owner, app } = await principals(t);
    const blockers = [
      await t.checked("POST", "/v1/leases", { token: owner.token }),
      await t.checked("POST", "/v1/leases", { token: owner.token }),
    ];
    const waiting = await t.checked("POST", "/v1/leases", { token: app.key, body: { duration: 5 } });
    expectStatus(waiting, 202);

    // Times out after 3 s: `queued` then `failed` (with `waited`).
    const timedOut = await readStream(`${url}/v1/leases/${waiting.body.id}/events`, app.key);
    checkResponse({
      method: "GET",
      url: `/v1/leases/${waiting.body.id}/events`,
      status: timedOut.status,
      contentType: timedOut.contentType,
      body: timedOut.text,
    });
    expect(timedOut.text).toMatch(/event: queued[\s\S]*event: failed/);
    // Opened again on the failed lease: the failure is sent at once.
    const replayed = await t.checked("GET", `/v1/leases/${waiting.body.id}/events`, { token: app.key });
    expect(String(replayed.body)).toMatch(/^event: failed\n/);
    expectStatus(await t.checked("GET", `/v1/leases/${waiting.body.id}`, { token: app.key }), 200);

    // Queued, then granted when a blocker is released.
    const next = await t.checked("POST", "/v1/leases", { token: app.key, body: { duration: 5 } });
    expectStatus(next, 202);
    // Released once the stream has sent its first event (`queued`), not after a fixed 200 ms that a
    // stall could outlast (it then saw only `granted`).
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const stream = readStream(`${url}/v1/leases/${next.body.id}/events`, app.key, opened);
    await Promise.race([open, stream]);
    expectStatus(await t.checked("POST", `/v1/leases/${blockers[0]!.body.id}/release`, { token: owner.token }), 200);
    const granted = await stream;
    checkResponse({
      method: "GET",
      url: `/v1/leases/${next.body.id}/events`,
      status: granted.status,
      contentType: granted.contentType,
      body: granted.text,
    });
    expect(granted.text).toMatch(/event: queued[\s\S]*event: granted/);
    const replayedGrant = await t.checked("GET", `/v1/leases/${next.body.id}/events`, { token: app.key });
    expect(String(replayedGrant.body)).toMatch(/^event: granted\n/);
    driven.add("leaseEvents live");
  });

  it("a runs limit, and a size no GPU can take", async () => {
    const t = await server({
      pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] },
      quota: {
        tiers: {
          anonymous: { quota: "2m", max_runs: 1 },
          free: { quota: "3.5m", priority: 2 },
          pro: { quota: "25m", priority: 3, max_duration: "300s" },
        },
      },
    });
    const { app } = await principals(t);
    const granted = await t.checked("POST", "/v1/leases", { token: app.key, body: { duration: 5 } });
    expectStatus(granted, 201);
    expectStatus(await t.checked("POST", `/v1/leases/${granted.body.id}/release`, { token: app.key }), 200);
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: app.key, body: { duration: 5 } }),
      429,
      "runs_exceeded",
    );
    const owner = await t.user("big", "pro");
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, body: { size: "xlarge" } }),
      503,
      "no_gpu_available",
    ); // no_capacity
    expectStatus(await t.checked("GET", "/v1/diagnose?size=xlarge", { token: owner.token }), 200);
  });

  it("billing: me, wallet, settings, credits, usage, and their refusals", async () => {
    const t = await server({
      pool: { simulated: [{ node: "sim-0", gpus: 1 }] },
      quota: {
        tiers: { anonymous: { quota: "2m" }, free: { quota: "1m" }, pro: { quota: "20s", max_duration: "300s" } },
      },
      billing: {
        included_credits: { pro: "0.05" },
        overage: { enabled: true, tiers: ["pro"], price_per_gpu_minute: "0.10", default_monthly_cap: "0.08" },
      },
    });
    const { owner, alice } = await principals(t);
    expectStatus(await t.checked("GET", "/v1/me", { token: owner.token }), 200);
    expectStatus(await t.checked("GET", "/v1/me", { token: ADMIN }), 403, "forbidden");
    expectStatus(
      await t.checked("PATCH", "/v1/me/billing", { token: alice.token, body: { overage: true } }),
      409,
      "overage_not_available",
    );
    expectStatus(await t.checked("PATCH", "/v1/me/billing", { token: owner.token, body: {} }), 400, "invalid_request");
    expectStatus(await t.checked("PATCH", "/v1/me/billing", { token: owner.token, body: { overage: true } }), 200);
    const split = await t.checked("POST", "/v1/leases", { token: owner.token, body: { duration: 30 } });
    expectStatus(split, 201);
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, body: { duration: 60 } }),
      402,
      "credits_exhausted",
    );
    expectStatus(await t.checked("POST", `/v1/leases/${split.body.id}/release`, { token: owner.token }), 200);
    const credits = { amount: "1.00", category: "purchased", idempotency_key: "pay_1" };
    expectStatus(await t.checked("POST", `/v1/admin/users/${owner.id}/credits`, { token: ADMIN, body: credits }), 201);
    expectStatus(await t.checked("POST", `/v1/admin/users/${owner.id}/credits`, { token: ADMIN, body: credits }), 200);
    expectStatus(
      await t.checked("POST", `/v1/admin/users/${owner.id}/credits`, {
        token: ADMIN,
        body: { ...credits, amount: "2.00" },
      }),
      409,
      "idempotency_key_reused",
    );
    expectStatus(
      await t.checked("POST", `/v1/admin/users/${owner.id}/credits`, {
        token: ADMIN,
        body: { ...credits, amount: "-1" },
      }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/admin/users/nobody/credits", { token: ADMIN, body: credits }),
      404,
      "not_found",
    );
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: owner.token, body: { duration: 300 } }),
      402,
      "spend_cap_reached",
    );
    expectStatus(await t.checked("GET", "/v1/me/wallet?limit=5", { token: owner.token }), 200);
    expectStatus(await t.checked("GET", `/v1/admin/users/${owner.id}/wallet`, { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/admin/users/nobody/wallet", { token: ADMIN }), 404, "not_found");
    expectStatus(await t.checked("GET", "/v1/usage?limit=1", { token: owner.token }), 200);
    expectStatus(await t.checked("GET", "/v1/usage", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/usage?cursor=nope", { token: ADMIN }), 400, "invalid_request");
    expectStatus(await t.checked("GET", "/v1/usage/summary?group_by=tier", { token: owner.token }), 200);
    expectStatus(
      await t.checked("GET", "/v1/usage/summary?group_by=week", { token: owner.token }),
      400,
      "invalid_request",
    );
  });

  it("quota and diagnose, for each way a call is charged", async () => {
    const t = await server({ pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
    const { owner, alice, app } = await principals(t);
    const viewer = await t.ipToken(app.id, { user: alice.id });
    const anon = await t.ipToken(app.id, { ip: "203.0.113.7" });
    expectStatus(await t.checked("GET", "/v1/quota", { token: owner.token }), 200);
    expectStatus(await t.checked("GET", "/v1/quota", { token: app.key }), 200);
    expectStatus(await t.checked("GET", "/v1/quota", { token: app.key, headers: { "x-ip-token": viewer } }), 200);
    expectStatus(
      await t.checked("GET", "/v1/quota", { token: app.key, headers: { "x-ip-token": "garbage" } }),
      401,
      "invalid_ip_token",
    );
    expectStatus(await t.checked("GET", "/v1/quota", { token: ADMIN }), 403, "forbidden");

    expectStatus(await t.checked("GET", "/v1/diagnose", { token: owner.token }), 200); // granted
    expectStatus(
      await t.checked("GET", "/v1/diagnose?duration=600&size=large", {
        token: app.key,
        headers: { "x-ip-token": anon },
      }),
      200,
    ); // rejected
    expectStatus(await t.checked("GET", "/v1/diagnose", { token: app.key, headers: { "x-ip-token": "garbage" } }), 200); // rejected before attribution
    await t.checked("POST", "/v1/leases", { token: owner.token, body: { size: "xlarge", duration: 30 } });
    expectStatus(
      await t.checked("GET", "/v1/diagnose?duration=30", { token: app.key, headers: { "x-ip-token": viewer } }),
      200,
    ); // queued
    expectStatus(await t.checked("GET", "/v1/diagnose?duration=0", { token: owner.token }), 400, "invalid_request");
    expectStatus(await t.checked("GET", "/v1/diagnose?size=huge", { token: owner.token }), 400, "invalid_request");
    expectStatus(await t.checked("GET", "/v1/diagnose"), 401, "unauthorized");
  });

  it("node agents: register, heartbeat, and what the pool tells an agent that must register again", async () => {
    const t = await server({ pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
    const { app } = await principals(t);
    const node = await t.checked("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host" } });
    const configured = await t.checked("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "sim-0" } });
    const key = node.body.key as string;
    const gpu = { index: 0, uuid: "GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff", name: "NVIDIA A100", memory_mb: 81920 };
    expectStatus(await t.checked("POST", "/v1/nodes/heartbeat", { token: key }), 409, "node_not_registered");
    expectStatus(
      await t.checked("POST", "/v1/leases", { token: app.key, headers: { "x-gpupool-node-key": key } }),
      503,
      "no_gpu_available",
    ); // node_not_registered
    const registered = await t.checked("POST", "/v1/nodes/register", {
      token: key,
      body: { devices: [gpu], agent_url: "http://127.0.0.1:7071" },
    });
    expectStatus(registered, 200);
    expectStatus(
      await t.checked("POST", "/v1/nodes/heartbeat", {
        token: key,
        body: { registration: registered.body.registration },
      }),
      200,
    );
    expectStatus(await t.checked("POST", "/v1/nodes/heartbeat", { token: key }), 200);
    expectStatus(
      await t.checked("POST", "/v1/nodes/heartbeat", { token: key, body: { registration: "0" } }),
      409,
      "node_not_registered",
    ); // replaced
    expectStatus(
      await t.checked("POST", "/v1/nodes/heartbeat", { token: key, body: { registration: 5 } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/nodes/register", { token: key, body: { devices: [gpu, gpu] } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/nodes/register", { token: key, body: { devices: [{ ...gpu, memory_mb: -1 }] } }),
      400,
      "invalid_request",
    );
    expectStatus(
      await t.checked("POST", "/v1/nodes/register", { token: configured.body.key, body: { devices: [gpu] } }),
      409,
      "conflict",
    );
    expectStatus(
      await t.checked("POST", "/v1/nodes/register", { token: app.key, body: { devices: [] } }),
      403,
      "forbidden",
    );
    const via = await t.checked("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 5 },
      headers: { "x-gpupool-node-key": key },
    });
    expectStatus(via, 201);
    expectStatus(await t.checked("GET", "/v1/admin/pool", { token: ADMIN }), 200);
  });

  it("dashboard: sign-in by token and by one-time link, the session, sign-out, and their refusals", async () => {
    const t = await server({ server: { port: 0 } });
    const { alice } = await principals(t);
    const link = await t.checked("POST", "/v1/dashboard/links", { token: alice.token });
    expectStatus(link, 201);
    const code = String(link.body.url).split("#signin=")[1]!;
    const signedIn = await t.checked("POST", "/v1/dashboard/session", { body: { code } });
    expectStatus(signedIn, 201);
    const cookie = String(signedIn.headers["set-cookie"]).split(";")[0]!;
    expectStatus(await t.checked("POST", "/v1/dashboard/session", { body: { code } }), 401, "invalid_credentials");
    expectStatus(
      await t.checked("POST", "/v1/dashboard/session", {
        body: { token: ADMIN },
        headers: { origin: "https://evil.example" },
      }),
      403,
      "csrf_failed",
    );
    expectStatus(await t.checked("POST", "/v1/dashboard/session", { body: {} }), 400, "invalid_request");
    expectStatus(await t.checked("GET", "/v1/dashboard/session", { headers: { cookie } }), 200);
    expectStatus(await t.checked("DELETE", "/v1/dashboard/session", { headers: { cookie } }), 403, "csrf_failed");
    expectStatus(
      await t.checked("DELETE", "/v1/dashboard/session", {
        headers: { cookie, "x-csrf-token": signedIn.body.csrf_token },
      }),
      204,
    );
    expectStatus(await t.checked("GET", "/v1/dashboard/session", { headers: { cookie } }), 401, "invalid_session");
    const admin = await t.checked("POST", "/v1/dashboard/session", { body: { token: ADMIN } });
    expectStatus(admin, 201);
    expectStatus(await t.checked("GET", "/v1/admin/users?q=ali&limit=1", { token: ADMIN }), 200);
    // What its views read.
    expectStatus(await t.checked("GET", "/v1/admin/queue", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/admin/queue/entries?limit=10", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/admin/queue/entries?cursor=x", { token: ADMIN }), 400, "invalid_request");
    expectStatus(await t.checked("GET", "/v1/admin/refusals?hours=2", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/admin/refusals?hours=500", { token: ADMIN }), 400, "invalid_request");
    expectStatus(await t.checked("PATCH", `/v1/admin/users/${alice.id}`, { token: ADMIN, body: { tier: "pro" } }), 200);
    const audit = await t.checked("GET", "/v1/admin/audit?limit=5", { token: ADMIN });
    expectStatus(audit, 200);
    expect(audit.body.entries).toHaveLength(1);
    expectStatus(await t.checked("GET", "/v1/apps/stats?days=7", { token: ADMIN }), 200);
    expectStatus(await t.checked("GET", "/v1/apps/stats", { token: alice.token }), 200);
    // The live streams: their first events, as a browser reads them.
    const url = await t.server.listen();
    for (const [path, token, last] of [
      ["/v1/me/events", alice.token, "me"],
      ["/v1/admin/pool/events", ADMIN, "queue"],
    ] as const) {
      const ctl = new AbortController();
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: ctl.signal });
      const reader = res.body!.getReader();
      let text = "";
      while (!text.includes(`event: ${last}\n`) || !text.endsWith("\n\n"))
        text += new TextDecoder().decode((await reader.read()).value);
      ctl.abort();
      driven.add(
        `${checkResponse({ method: "GET", url: path, status: res.status, contentType: res.headers.get("content-type"), body: text })} ${res.status}`,
      );
    }
    // Its pages: built or not, / is a page; an asset the build does not have is a 404 problem.
    expectStatus(await t.checked("GET", "/"), 200);
    expectStatus(await t.checked("GET", "/assets/not-built-000000.js"), 404, "not_found");
    // A file at the build's root that is not there, asked for as anything but a page: a 404 problem.
    expectStatus(await t.checked("GET", "/not-built-000000.txt"), 404, "not_found");
  });

  it("the checker refuses what the contract does not describe", () => {
    expect(() =>
      checkResponse({ method: "GET", url: "/v1/nope", status: 404, contentType: "application/problem+json", body: {} }),
    ).toThrow(/undocumented route/);
    expect(() =>
      checkResponse({ method: "GET", url: "/healthz", status: 418, contentType: "application/json", body: {} }),
    ).toThrow(/418 is not documented/);
    expect(() =>
      checkResponse({ method: "GET", url: "/healthz", status: 200, contentType: "text/html", body: "" }),
    ).toThrow(/content type/);
    expect(() =>
      checkResponse({
        method: "GET",
        url: "/healthz",
        status: 200,
        contentType: "application/json",
        body: { status: "ok", extra: 1 },
      }),
    ).toThrow(ContractMismatch);
    expect(() =>
      checkResponse({
        method: "GET",
        url: "/v1/quota",
        status: 200,
        contentType: "application/json",
        body: { left: 3 },
      }),
    ).toThrow(/does not match/);
    expect(() =>
      checkResponse({
        method: "GET",
        url: "/v1/leases/ls_1/events",
        status: 200,
        contentType: "text/event-stream",
        body: "event: paused\ndata: {}\n\n",
      }),
    ).toThrow(/"paused"/);
    expect(
      checkResponse({
        method: "GET",
        url: "http://127.0.0.1:7070/healthz?x=1",
        status: 200,
        contentType: "application/json; charset=utf-8",
        body: '{"status":"ok"}',
      }),
    ).toBe("healthz");
  });

  it("drove every documented operation (this runs last)", () => {
    const operations = documentedOperations();
    const seen = new Set([...driven].map((d) => d.split(" ")[0]));
    const missing = [...operations.keys()].filter((id) => !seen.has(id)).map((id) => operations.get(id));
    expect(missing).toEqual([]);
  });
});
