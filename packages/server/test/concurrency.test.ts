import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, lease, quotaOf, startTestServer } from "./harness.js";

/** docs/design.md: the ledger never over-admits, under any concurrency. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

async function ledgerOf(key: string) {
  return t.server.context.store.transaction((tx) => tx.ledgers.get(key));
}

function tally(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

describe("concurrent admission for one identity", () => {
  it("60 concurrent requests with room for exactly 20 → 20 admitted, 40 × 429; reserved = 20 × duration", async () => {
    t = await startTestServer();
    const alice = await t.user("alice", "free");
    await t.call("PATCH", `/v1/admin/users/${alice.id}`, { token: ADMIN, body: { quota: 100 } });
    const results = await Promise.all(Array.from({ length: 60 }, () => lease(t, alice.token, { duration: 5 })));
    const counts = tally(results.map((r) => r.status));
    expect(counts).toEqual({ 201: 4, 202: 16, 429: 40 });
    for (const r of results.filter((r) => r.status === 429)) expect(r.body.code).toBe("quota_exceeded");
    expect(await ledgerOf(`user:${alice.id}`)).toMatchObject({ reservedMs: 100_000, usedMs: 0, runs: 20 });
    expect(await quotaOf(t, alice.token)).toMatchObject({ quota: 100, reserved: 100, used: 0, left: 0 });
    const live = await t.call("GET", "/v1/leases?limit=500", { token: alice.token });
    expect(live.body.leases).toHaveLength(20);
    const positions = live.body.leases
      .filter((l: { status: string }) => l.status === "queued")
      .map((l: { position: number }) => l.position)
      .sort((a: number, b: number) => a - b);
    expect(positions).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
  });

  it("the same over real HTTP, for an IP viewer (anonymous: 120 s)", async () => {
    t = await startTestServer({ server: { port: 0 } });
    const url = await t.server.listen();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("demo", owner.id);
    const tok = await t.ipToken(app.id, { ip: "203.0.113.50" });
    const results = await Promise.all(
      Array.from({ length: 60 }, async () => {
        const res = await fetch(`${url}/v1/leases`, {
          method: "POST",
          headers: { authorization: `Bearer ${app.key}`, "x-ip-token": tok, "content-type": "application/json" },
          body: JSON.stringify({ duration: 6 }),
        });
        await res.arrayBuffer();
        return res.status;
      }),
    );
    const counts = tally(results);
    expect((counts[201] ?? 0) + (counts[202] ?? 0)).toBe(20);
    expect(counts[429]).toBe(40);
    expect(await ledgerOf("ip:203.0.113.50")).toMatchObject({ reservedMs: 120_000 });
  });

  it("concurrent releases of one lease charge it once and all answer the same", async () => {
    t = await startTestServer();
    const alice = await t.user("alice", "free");
    const l = await lease(t, alice.token, { duration: 30 });
    await new Promise((r) => setTimeout(r, 5));
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        t.call(i % 2 ? "DELETE" : "POST", `/v1/leases/${l.body.id}${i % 2 ? "" : "/release"}`, {
          token: alice.token,
          ...(i % 2 ? {} : { body: {} }),
        }),
      ),
    );
    for (const r of results) expect(r.body).toEqual(results[0]!.body);
    expect(results[0]!.body).toMatchObject({ status: "released", charged: 1, refunded: 29 });
    expect(await quotaOf(t, alice.token)).toMatchObject({ used: 1, reserved: 0 });
  });

  it("concurrent requests from many identities never hand out more slots than exist", async () => {
    t = await startTestServer();
    const owner = await t.user("owner", "pro");
    const app = await t.appFor("demo", owner.id);
    const tokens = await Promise.all(
      Array.from({ length: 30 }, (_, i) => t.ipToken(app.id, { ip: `198.51.100.${i + 1}` })),
    );
    const results = await Promise.all(
      tokens.map((tok, i) => lease(t, app.key, { duration: 10, size: i % 3 === 0 ? "xlarge" : "large" }, tok)),
    );
    const granted = results.filter((r) => r.status === 201);
    // Queued, or refused at once when it is expected to wait longer than the queue timeout.
    const refusedAtOnce = (r: { status: number; body: any }): boolean =>
      r.status === 503 && r.body.reason === "predicted_wait";
    expect(results.every((r) => r.status === 201 || r.status === 202 || refusedAtOnce(r))).toBe(true);
    const slots = granted.flatMap((r) => r.body.device.slots.map((s: number) => `${r.body.device.index}/${s}`));
    expect(new Set(slots).size).toBe(slots.length);
    expect(slots.length).toBeLessThanOrEqual(4);
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.body.slots.busy).toBe(slots.length);
  });
});

describe("property: the ledger matches the leases and never exceeds the quota", () => {
  it("for random concurrent batches of admissions and releases", async () => {
    t = await startTestServer();
    const QUOTA = 100;
    let run = 0;
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("admit" as const),
        who: fc.nat(2),
        duration: fc.integer({ min: 1, max: 60 }),
        xl: fc.boolean(),
      }),
      fc.record({ kind: fc.constant("release" as const), pick: fc.nat(1000) }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(op, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 5 }),
        async (batches) => {
          run++;
          const users = await Promise.all([0, 1, 2].map((i) => t.user(`u${run}x${i}`, "free")));
          for (const u of users)
            await t.call("PATCH", `/v1/admin/users/${u.id}`, { token: ADMIN, body: { quota: QUOTA } });
          const leases: { id: string; who: number }[] = [];
          const check = async () => {
            for (const [i, u] of users.entries()) {
              const ledger = (await ledgerOf(`user:${u.id}`)) ?? { usedMs: 0, reservedMs: 0 };
              const mine = (await t.call("GET", "/v1/leases?limit=500", { token: u.token })).body.leases as {
                status: string;
                reserved: number;
                charged: number;
              }[];
              const live = mine.filter((l) => l.status === "queued" || l.status === "active");
              const reserved = live.reduce((s, l) => s + l.reserved, 0);
              const used = mine.reduce((s, l) => s + l.charged, 0);
              expect({ who: i, reservedMs: ledger.reservedMs, usedMs: ledger.usedMs }).toEqual({
                who: i,
                reservedMs: Math.round(reserved * 1000),
                usedMs: Math.round(used * 1000),
              });
              expect(ledger.usedMs + ledger.reservedMs).toBeLessThanOrEqual(QUOTA * 1000);
            }
          };
          const releaseAll = () =>
            Promise.all(
              leases.map((l) => t.call("POST", `/v1/leases/${l.id}/release`, { token: users[l.who]!.token, body: {} })),
            );
          try {
            for (const batch of batches) {
              // allSettled: every request of the batch finishes (and its lease is known) before a failure is reported.
              const settled = await Promise.allSettled(
                batch.map(async (o) => {
                  if (o.kind === "admit") {
                    const r = await lease(t, users[o.who]!.token, {
                      duration: o.duration,
                      size: o.xl ? "xlarge" : "large",
                    });
                    expect([201, 202, 422, 429]).toContain(r.status);
                    if (r.status === 201 || r.status === 202) leases.push({ id: r.body.id, who: o.who });
                  } else if (leases.length > 0) {
                    const l = leases[o.pick % leases.length]!;
                    const r = await t.call("POST", `/v1/leases/${l.id}/release`, {
                      token: users[l.who]!.token,
                      body: {},
                    });
                    expect(r.status).toBe(200);
                  }
                }),
              );
              for (const r of settled) if (r.status === "rejected") throw r.reason;
              await check();
            }
          } finally {
            // Whatever happened, free the pool for the next run (runs share one server).
            await releaseAll();
          }
          await check();
          for (const u of users) expect((await ledgerOf(`user:${u.id}`))?.reservedMs ?? 0).toBe(0);
          expect((await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.slots.busy).toBe(0);
        },
      ),
      { numRuns: 15 },
    );
  });
});
