import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, lease } from "./harness.js";
import { ManualClock, T0, billingConfig, billingServer, payingUser, sumOf, walletOf } from "./billing-fixture.js";

/** The usage ledger (docs/billing.md) — pages, exports, who sees what, summaries, and totals that reconcile. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const RANGE = `from=${new Date(T0 - 86_400_000).toISOString()}&to=${new Date(T0 + 30 * 86_400_000).toISOString()}`;

async function usage(token: string, query = ""): Promise<any[]> {
  const r = await t.call("GET", `/v1/usage?${RANGE}&limit=1000${query}`, { token });
  expect(r.status).toBe(200);
  expect(r.body.next_cursor).toBeNull();
  return r.body.records;
}

async function ended(token: string, body: Record<string, unknown> = {}, ip?: string): Promise<string> {
  const l = await lease(t, token, { duration: 5, ...body }, ip);
  expect([201, 202]).toContain(l.status);
  await t.call("POST", `/v1/leases/${l.body.id}/release`, {
    token,
    body: {},
    ...(ip ? { headers: { "x-ip-token": ip } } : {}),
  });
  return l.body.id;
}

/** A GET without the harness's contract check (see the next test for why). */
async function raw(url: string, token: string) {
  const r = await t.server.app.inject({ method: "GET", url, headers: { authorization: `Bearer ${token}` } });
  return { status: r.statusCode, body: r.body, headers: r.headers };
}

describe("GET /v1/usage", () => {
  // Found by this test: the OpenAPI document once gave listUsage's 200 as application/json only.
  it("the ndjson and csv answers are the content types the OpenAPI document gives", async () => {
    t = await billingServer();
    const u = await payingUser(t, "alice", {});
    await ended(u.token);
    for (const format of ["ndjson", "csv"])
      expect((await t.call("GET", `/v1/usage?${RANGE}&format=${format}`, { token: u.token })).status).toBe(200);
  });

  it("json pages follow next_cursor with no duplicate and no gap, also among records that ended at the same instant", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 1000 });
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) {
      ids.push(await ended(u.token, { duration: 1 + (i % 3) }));
      if (i % 4 === 0) clock.advance(1000); // several end at the same ms
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: any = await t.call("GET", `/v1/usage?${RANGE}&limit=4${cursor ? `&cursor=${cursor}` : ""}`, {
        token: u.token,
      });
      expect(r.status).toBe(200);
      expect(r.body.records.length).toBeLessThanOrEqual(4);
      seen.push(...r.body.records.map((x: any) => x.id));
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor !== null && pages < 50);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual([...ids].sort());
    expect(pages).toBe(6);
    // Oldest first.
    const all = await usage(u.token);
    expect(all.map((x) => x.id)).toEqual(seen);
    const ends = all.map((x) => Date.parse(x.ended_at));
    expect(ends).toEqual([...ends].sort((a, b) => a - b));
    expect((await t.call("GET", `/v1/usage?${RANGE}&cursor=bm90LWEtY3Vyc29y`, { token: u.token })).status).toBe(400);
  });

  it("ndjson and csv stream the whole range, the same records as the json pages", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 5, credits: "1.00" });
    for (let i = 0; i < 7; i++) {
      const l = await lease(t, u.token, { duration: 4 });
      clock.advance(2500 + i * 300);
      await t.call("POST", `/v1/leases/${l.body.id}/release`, { token: u.token, body: {} });
    }
    const json = await usage(u.token);
    expect(json).toHaveLength(7);
    expect(json.some((r) => r.charged_micros > 0)).toBe(true);
    const nd = await raw(`/v1/usage?${RANGE}&format=ndjson`, u.token);
    expect(nd.status).toBe(200);
    expect(String(nd.headers["content-type"])).toMatch(/^application\/x-ndjson/);
    const lines = String(nd.body).trimEnd().split("\n");
    expect(lines.map((l) => JSON.parse(l))).toEqual(json);
    const csv = await raw(`/v1/usage?${RANGE}&format=csv`, u.token);
    expect(String(csv.headers["content-type"])).toMatch(/^text\/csv/);
    const rows = String(csv.body)
      .trimEnd()
      .split("\r\n")
      .map((l) => l.split(","));
    const header = rows[0]!;
    expect(rows).toHaveLength(8);
    const col = (name: string) => rows.slice(1).map((r) => r[header.indexOf(name)]);
    expect(col("id")).toEqual(json.map((r) => r.id));
    expect(col("charged_micros")).toEqual(json.map((r) => String(r.charged_micros)));
    expect(col("quota_s")).toEqual(json.map((r) => String(r.quota_s)));
    expect(col("overage_s")).toEqual(json.map((r) => String(r.overage_s)));
    expect(col("identity_id")).toEqual(json.map(() => u.id));
  });

  it("a user sees their own records and their apps', not others'; the admin sees all", async () => {
    t = await billingServer();
    const alice = await payingUser(t, "alice", {});
    const bob = await payingUser(t, "bob", {});
    const carol = await payingUser(t, "carol", {});
    const appA = await t.appFor("alices-app", alice.id);
    const appC = await t.appFor("carols-app", carol.id);
    const aliceOwn = await ended(alice.token);
    const viaAIp = await ended(appA.key, {}, await t.ipToken(appA.id, { ip: "198.51.100.1" }));
    const viaABob = await ended(appA.key, {}, await t.ipToken(appA.id, { user: bob.id }));
    const bobOwn = await ended(bob.token);
    const viaCIp = await ended(appC.key, {}, await t.ipToken(appC.id, { ip: "198.51.100.2" }));
    const ids = async (token: string, q = "") => (await usage(token, q)).map((r) => r.id).sort();
    expect(await ids(alice.token)).toEqual([aliceOwn, viaAIp, viaABob].sort());
    expect(await ids(bob.token)).toEqual([viaABob, bobOwn].sort());
    expect(await ids(carol.token)).toEqual([viaCIp].sort());
    expect(await ids(ADMIN)).toEqual([aliceOwn, viaAIp, viaABob, bobOwn, viaCIp].sort());
    // Filters narrow within what one may see, never widen it.
    expect(await ids(alice.token, `&identity=user:${bob.id}`)).toEqual([viaABob]);
    expect(await ids(alice.token, `&app=${appC.id}`)).toEqual([]);
    expect(await ids(ADMIN, `&app=${appA.id}`)).toEqual([viaAIp, viaABob].sort());
    const summary = await t.call("GET", `/v1/usage/summary?${RANGE}&group_by=identity`, { token: bob.token });
    expect(summary.body.total.calls).toBe(2);
    expect((await t.call("GET", `/v1/usage?${RANGE}`, { token: appA.key })).status).toBe(403);
  });

  it("/v1/usage/summary by day, app, identity and tier: groups add up to the records", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const alice = await payingUser(t, "alice", { quotaS: 5, credits: "0.02" });
    const app = await t.appFor("demo", alice.id);
    const fred = await t.user("fred", "free");
    for (let day = 0; day < 3; day++) {
      await ended(alice.token, { duration: 4 });
      await ended(app.key, {}, await t.ipToken(app.id, { ip: `198.51.100.${day + 1}` }));
      await ended(fred.token, { duration: 2 });
      clock.advance(86_400_000);
    }
    expect((await lease(t, alice.token, { duration: 100 })).status).toBe(402);
    const records = await usage(ADMIN);
    const keyOf: Record<string, (r: any) => string> = {
      day: (r) => r.ended_at.slice(0, 10),
      app: (r) => r.app ?? "",
      identity: (r) => `${r.identity.kind}:${r.identity.id}`,
      tier: (r) => r.identity.tier,
    };
    for (const [by, key] of Object.entries(keyOf)) {
      const s = await t.call("GET", `/v1/usage/summary?${RANGE}&group_by=${by}`, { token: ADMIN });
      expect(s.status).toBe(200);
      expect(s.body.group_by).toBe(by);
      const expected = new Map<string, { calls: number; charged_micros: number; quota_ms: number }>();
      for (const r of records) {
        const e = expected.get(key(r)) ?? { calls: 0, charged_micros: 0, quota_ms: 0 };
        expected.set(key(r), {
          calls: e.calls + 1,
          charged_micros: e.charged_micros + r.charged_micros,
          quota_ms: e.quota_ms + Math.round(r.quota_s * 1000),
        });
      }
      for (const [k, e] of expected) {
        const g = s.body.groups.find((x: any) => x.key === k);
        expect(g, `${by} ${k}`).toMatchObject({
          calls: e.calls,
          charged_micros: e.charged_micros,
          quota_s: e.quota_ms / 1000,
        });
      }
      expect(s.body.total.calls).toBe(records.length);
      expect(s.body.total.charged_micros).toBe(records.reduce((n, r) => n + r.charged_micros, 0));
      expect(s.body.total.refusals.credits_exhausted).toBe(1);
    }
    const days = await t.call("GET", `/v1/usage/summary?${RANGE}&group_by=day`, { token: ADMIN });
    expect(days.body.groups.filter((g: any) => g.calls > 0).map((g: any) => g.key)).toEqual([
      "2026-12-15",
      "2026-12-16",
      "2026-12-17",
    ]);
  });
});

type Op =
  | { kind: "admit"; who: number; duration: number; xlarge: boolean }
  | { kind: "release"; pick: number }
  | { kind: "cancel"; pick: number }
  | { kind: "wait"; ms: number }
  | { kind: "credits"; who: number; cents: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("admit" as const),
    who: fc.nat(2),
    duration: fc.integer({ min: 1, max: 40 }),
    xlarge: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("cancel" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 30_000 }) }),
  fc.record({ kind: fc.constant("credits" as const), who: fc.nat(2), cents: fc.integer({ min: 1, max: 10 }) }),
);

describe("reconciliation (property)", () => {
  it("per identity: usage quota_s sums to what its ledger counted, charged_micros to its wallet's spends", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 25 }), async (ops) => {
        const clock = new ManualClock();
        const cfg = billingConfig({}, { pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 2 }] } });
        t = await billingServer(cfg, clock);
        try {
          const users = [
            await payingUser(t, `u${run}a`, { quotaS: 20, credits: "0.05", cap: "0.04" }),
            await payingUser(t, `u${run}b`, { quotaS: 30, credits: "0.10", optIn: false }),
            await payingUser(t, `u${run}c`, { quotaS: 10, credits: "0.03" }),
          ];
          run++;
          const live: { id: string; token: string }[] = [];
          for (const o of ops) {
            if (o.kind === "admit") {
              const u = users[o.who]!;
              const body = { duration: o.duration, ...(o.xlarge ? { size: "xlarge" } : {}) };
              const r = await lease(t, u.token, body);
              if (r.status === 201 || r.status === 202) live.push({ id: r.body.id, token: u.token });
              else expect([402, 422, 429, 503]).toContain(r.status);
            } else if (o.kind === "wait") clock.advance(o.ms);
            else if (o.kind === "credits") {
              const u = users[o.who]!;
              const amount = `0.${String(o.cents).padStart(2, "0")}`;
              const key = `k${run}-${clock.at}-${o.who}-${o.cents}`;
              await t.call("POST", `/v1/admin/users/${u.id}/credits`, {
                token: ADMIN,
                body: { amount, category: "promotional", idempotency_key: key },
              });
            } else if (live.length > 0) {
              const [l] = live.splice(o.pick % live.length, 1);
              if (o.kind === "release")
                await t.call("POST", `/v1/leases/${l!.id}/release`, { token: l!.token, body: {} });
              else await t.call("DELETE", `/v1/leases/${l!.id}`, { token: l!.token });
            }
          }
          for (const l of live) await t.call("POST", `/v1/leases/${l.id}/release`, { token: l.token, body: {} });
          for (const u of users) {
            const records = await usage(ADMIN, `&identity=user:${u.id}`);
            const quota = (await t.call("GET", "/v1/quota", { token: u.token })).body;
            const w = await walletOf(t, u.id);
            const quotaMs = records.reduce((n, r) => n + Math.round(r.quota_s * 1000), 0);
            expect(quotaMs).toBe(Math.round(quota.used * 1000));
            expect(quota.reserved).toBe(0);
            expect(records.reduce((n, r) => n + r.charged_micros, 0)).toBe(sumOf(w, "spend"));
            expect(w.held_micros).toBe(0);
            expect(sumOf(w, "hold")).toBe(sumOf(w, "spend") + sumOf(w, "release"));
            for (const r of records) {
              expect(Math.round((r.quota_s + r.overage_s) * 1000)).toBe(Math.round(r.charged_s * 1000));
              expect(Number.isSafeInteger(r.charged_micros)).toBe(true);
            }
          }
        } finally {
          await t.close();
        }
      }),
      { numRuns: 8 },
    );
  }, 300_000);
});
