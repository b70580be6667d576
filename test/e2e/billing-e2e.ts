import { writeFileSync } from "node:fs";
import { expect } from "vitest";
import { call } from "./binary.js";

// The calls of the billing suites are the binary suites' own.
export { call };

/** Helpers for the billing end-to-end tests: a config with overage for pro, plain HTTP calls, the wallet checks. */

export function writeBillingConfig(file: string, lines: readonly string[]): void {
  writeFileSync(
    file,
    [
      ...lines,
      "pool:",
      "  simulated: [{ node: sim-0, gpus: 8, slots_per_gpu: 8 }]",
      "billing:",
      "  currency: USD",
      "  overage:",
      "    enabled: true",
      "    tiers: [pro]",
      '    price_per_gpu_minute: "0.10"',
      '    default_monthly_cap: "5.00"',
      "log:",
      "  level: warn",
    ].join("\n"),
  );
}

/** A pro user with no quota (every call is all overage), `credits` purchased, overage on with `cap`. */
export async function overageUser(
  base: string,
  admin: string,
  name: string,
  credits: string,
  cap: string,
): Promise<{ id: string; token: string }> {
  const u = await call(base, "POST", "/v1/admin/users", admin, { name, tier: "pro" });
  expect(u.status).toBe(201);
  expect((await call(base, "PATCH", `/v1/admin/users/${u.body.id}`, admin, { quota: 0 })).status).toBe(200);
  const c = await call(base, "POST", `/v1/admin/users/${u.body.id}/credits`, admin, {
    amount: credits,
    category: "purchased",
    idempotency_key: `setup-${name}`,
  });
  expect(c.status).toBe(201);
  const b = await call(base, "PATCH", "/v1/me/billing", u.body.token, { overage: true, monthly_cap: cap });
  expect(b.status).toBe(200);
  return { id: u.body.id, token: u.body.token };
}

const sum = (xs: readonly any[]) => xs.reduce((n, x) => n + (x.amount_micros as number), 0);

/**
 * The wallet's invariants against the leases (docs/billing.md): every grant's remaining = amount − spends −
 * expiries and its held = holds − spends − releases − the expiries of held parts; the wallet's held
 * = the holds of live leases; each lease's transactions add up to its hold and its charge; no hold
 * without a lease. Returns the totals.
 */
export function checkWallet(wallet: any, leases: readonly any[]): { spent: number; held: number } {
  const tx: any[] = wallet.transactions;
  expect(tx.length).toBeLessThan(500); // all of them were read
  const of = (kind: string, f: (x: any) => boolean) => sum(tx.filter((x) => x.kind === kind && f(x)));
  for (const g of wallet.grants) {
    const mine = (x: any) => x.grant_id === g.id;
    expect(of("grant", mine), g.id).toBe(g.amount_micros);
    expect(g.remaining_micros, g.id).toBe(g.amount_micros - of("spend", mine) - of("expire", mine));
    const heldExpired = of("expire", (x) => mine(x) && x.lease_id !== null);
    expect(g.held_micros, g.id).toBe(of("hold", mine) - of("spend", mine) - of("release", mine) - heldExpired);
    expect(g.held_micros).toBeGreaterThanOrEqual(0);
    expect(g.held_micros).toBeLessThanOrEqual(g.remaining_micros);
  }
  const byId = new Map(leases.map((l) => [l.id, l]));
  for (const x of tx) if (x.lease_id !== null) expect(byId.has(x.lease_id), `${x.kind} of ${x.lease_id}`).toBe(true);
  let held = 0;
  for (const l of leases) {
    const mine = (x: any) => x.lease_id === l.id;
    expect(of("hold", mine), l.id).toBe(l.billing.hold_micros);
    const live = l.status === "queued" || l.status === "active";
    if (live) {
      held += l.billing.hold_micros;
      expect(of("spend", mine) + of("release", mine) + of("expire", mine), l.id).toBe(0);
    } else {
      expect(of("spend", mine), l.id).toBe(l.billing.charged_micros);
      expect(of("spend", mine) + of("release", mine) + of("expire", mine), l.id).toBe(l.billing.hold_micros);
    }
    // Each lease's hold is one transaction per grant it touched: none doubled.
    const holds = tx.filter((x) => x.kind === "hold" && mine(x)).map((x) => x.grant_id);
    expect(new Set(holds).size, l.id).toBe(holds.length);
  }
  expect(wallet.held_micros).toBe(held);
  return { spent: of("spend", () => true), held };
}
