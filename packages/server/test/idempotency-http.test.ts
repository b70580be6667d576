import { afterEach, describe, expect, it } from "vitest";
import { forgetExpiredKeys, IDEMPOTENCY_KEY_TTL_MS } from "../src/use-cases/leases/idempotency.js";
import { ADMIN, expectProblem, quotaOf, startTestServer } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * `Idempotency-Key` on `POST /v1/leases` (one server: SQLite, or PostgreSQL under
 * GPUPOOL_TEST_STORAGE=postgres): a retry gets the lease its first request made, never a second
 * one; the same key for another request is refused; a bad key is a 400.
 */
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function pool(): Promise<{ t: TestServer; key: string; other: string; user: { id: string; token: string } }> {
  const t = await startTestServer({ pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
  servers.push(t);
  const user = await t.user("ada", "pro");
  const app = await t.appFor("demo", user.id);
  const other = await t.appFor("other", user.id);
  return { t, key: app.key, other: other.key, user };
}

function post(t: TestServer, token: string, body: Record<string, unknown>, key?: string) {
  return t.call("POST", "/v1/leases", {
    token,
    body,
    ...(key === undefined ? {} : { headers: { "idempotency-key": key } }),
  });
}

describe("Idempotency-Key on POST /v1/leases", () => {
  it("a retry with the same key gets the same granted lease (201, same body), reserved once", async () => {
    const { t, key } = await pool();
    const first = await post(t, key, { duration: 30 }, "retry-1");
    expect(first.status).toBe(201);
    const again = await post(t, key, { duration: 30 }, "retry-1");
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers["location"]).toBe(`/v1/leases/${first.body.id}`);
    const leases = (await t.call("GET", "/v1/leases?limit=50", { token: ADMIN })).body.leases;
    expect(leases.map((l: { id: string }) => l.id)).toEqual([first.body.id]);
    expect((await quotaOf(t, key)).reserved).toBe(30);
    // Without a key, the same body is a new request.
    const fresh = await post(t, key, { duration: 30 });
    expect(fresh.body.id).not.toBe(first.body.id);
  });

  it("a queued lease is returned queued (202) with its place; once it ended without a GPU, 200 with the lease as it ended", async () => {
    const { t, key } = await pool();
    // Every slot held (the app's own quota: 120 s).
    for (let i = 0; ; i++) {
      const r = await post(t, key, { duration: 20 });
      if (r.status === 202) {
        expect((await t.call("DELETE", `/v1/leases/${r.body.id}`, { token: key })).status).toBe(200);
        break;
      }
      expect(r.status).toBe(201);
    }
    const first = await post(t, key, { duration: 10 }, "queued-1");
    expect(first.status).toBe(202);
    const again = await post(t, key, { duration: 10 }, "queued-1");
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ id: first.body.id, status: "queued", position: first.body.position });
    expect((await t.call("DELETE", `/v1/leases/${first.body.id}`, { token: key })).status).toBe(200);
    const ended = await post(t, key, { duration: 10 }, "queued-1");
    expect(ended.status).toBe(200);
    expect(ended.body).toMatchObject({ id: first.body.id, status: "cancelled" });
  });

  it("the same key with a different request is 409 idempotency_key_reused naming the lease; nothing changes", async () => {
    const { t, key } = await pool();
    const first = await post(t, key, { duration: 30 }, "k-2");
    expect(first.status).toBe(201);
    const before = await quotaOf(t, key);
    for (const body of [{ duration: 31 }, { duration: 30, queue: false }, { duration: 30, size: "xlarge" }]) {
      const refused = expectProblem(await post(t, key, body, "k-2"), 409, "idempotency_key_reused");
      expect(refused.lease).toBe(first.body.id);
    }
    expect(await quotaOf(t, key)).toEqual(before);
  });

  it("a key belongs to its caller: another app, or the same app for another person, gets its own lease", async () => {
    const { t, key, other, user } = await pool();
    const app = (await t.call("GET", "/v1/leases?limit=1", { token: key })).body;
    expect(app.leases).toEqual([]);
    const a = await post(t, key, { duration: 5 }, "shared-key");
    const b = await post(t, other, { duration: 5 }, "shared-key");
    const c = await post(t, user.token, { duration: 5 }, "shared-key");
    const ipToken = await t.ipToken(a.body.app, { ip: "203.0.113.9" });
    const d = await t.call("POST", "/v1/leases", {
      token: key,
      body: { duration: 5 },
      headers: { "idempotency-key": "shared-key", "x-ip-token": ipToken },
    });
    const ids = [a, b, c, d].map((r) => {
      expect([201, 202]).toContain(r.status);
      return r.body.id as string;
    });
    expect(new Set(ids).size).toBe(4);
  });

  it("keys are deleted once expired (the table keeps about a day of them), never before", async () => {
    const { t, key } = await pool();
    const first = await post(t, key, { duration: 5 }, "kept-a-day");
    expect(first.status).toBe(201);
    const { store } = t.server.context;
    expect(await forgetExpiredKeys(store, Date.now())).toBe(0);
    expect((await post(t, key, { duration: 5 }, "kept-a-day")).body.id).toBe(first.body.id);
    // A day later, by the sweep's clock: gone, and the key is new again.
    expect(await forgetExpiredKeys(store, Date.now() + IDEMPOTENCY_KEY_TTL_MS + 1_000, 1)).toBe(1);
    const again = await post(t, key, { duration: 5 }, "kept-a-day");
    expect(again.status).toBe(201);
    expect(again.body.id).not.toBe(first.body.id);
  });

  it("a bad key is 400 invalid_request naming the header, and nothing is reserved", async () => {
    const { t, key } = await pool();
    for (const bad of ["", "has space", "x".repeat(256), "naïve"]) {
      const r = await t.call("POST", "/v1/leases", {
        token: key,
        body: { duration: 5 },
        headers: { "idempotency-key": bad },
      });
      const p = expectProblem(r, 400, "invalid_request");
      expect(p.errors).toEqual([expect.objectContaining({ field: "Idempotency-Key" })]);
    }
    expect((await post(t, key, { duration: 5 }, "x".repeat(255))).status).toBe(201);
    expect((await quotaOf(t, key)).reserved).toBe(5);
  });

  it("twenty concurrent requests with one key make one lease, and every answer names it", async () => {
    const { t, key } = await pool();
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(t, key, { duration: 7 }, "burst")));
    expect(new Set(answers.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(answers.map((r) => r.body.id)).size).toBe(1);
    expect((await quotaOf(t, key)).reserved).toBe(7);
  });
});
