import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { lease } from "./harness.js";
import { billingServer, payingUser, priceMs, sumOf, walletOf } from "./billing-fixture.js";

/** Billing (docs/billing.md) under concurrency: a wallet and a monthly cap are never over-committed (SQLite and PostgreSQL). */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

function tally(statuses: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

/** Each call: 6 s, all overage (no quota), holding exactly $0.01. */
const HOLD = priceMs(6000);

async function burst(o: { credits: string; cap?: string }) {
  t = await billingServer();
  const u = await payingUser(t, "alice", { quotaS: 0, ...o });
  expect(HOLD).toBe(10_000);
  const results = await Promise.all(Array.from({ length: 60 }, () => lease(t, u.token, { duration: 6 })));
  const admitted = results.filter((r) => r.status === 201 || r.status === 202);
  const refused = results.filter((r) => r.status !== 201 && r.status !== 202);
  return { u, results, admitted, refused, w: await walletOf(t, u.id) };
}

function expectTwentyHeld(b: Awaited<ReturnType<typeof burst>>) {
  expect(b.admitted).toHaveLength(20);
  for (const r of b.admitted) expect(r.body.billing).toMatchObject({ quota_s: 0, overage_s: 6, hold_micros: HOLD });
  expect(b.w.held_micros).toBe(20 * HOLD);
  expect(sumOf(b.w, "hold")).toBe(20 * HOLD);
  const holds = b.w.transactions.filter((x: any) => x.kind === "hold");
  expect(new Set(holds.map((x: any) => x.lease_id))).toEqual(new Set(b.admitted.map((r) => r.body.id)));
  for (const g of b.w.grants) expect(g.held_micros).toBeLessThanOrEqual(g.remaining_micros);
}

describe("60 parallel overage calls for one user", () => {
  it("credits for exactly 20 → exactly 20 admitted, 40 × 402 credits_exhausted", async () => {
    const b = await burst({ credits: "0.20" });
    expect(tally(b.refused.map((r) => r.status))).toEqual({ 402: 40 });
    for (const r of b.refused) {
      expect(r.body.code).toBe("credits_exhausted");
      expect(r.body.needed_micros).toBe(HOLD);
      expect(r.body.available_micros).toBeLessThan(HOLD);
    }
    expectTwentyHeld(b);
    expect(b.w).toMatchObject({ balance_micros: 200_000, available_micros: 0 });
  });

  it("a monthly cap for exactly 20 → exactly 20 admitted, 40 × 402 spend_cap_reached", async () => {
    const b = await burst({ credits: "1.00", cap: "0.20" });
    expect(tally(b.refused.map((r) => r.status))).toEqual({ 402: 40 });
    for (const r of b.refused) {
      expect(r.body.code).toBe("spend_cap_reached");
      expect(r.body).toMatchObject({ needed_micros: HOLD, cap_micros: 200_000, spent_micros: 0 });
      expect(r.body.held_micros + HOLD).toBeGreaterThan(200_000);
    }
    expectTwentyHeld(b);
    expect(b.w).toMatchObject({ balance_micros: 1_000_000, available_micros: 800_000 });
  });
});
