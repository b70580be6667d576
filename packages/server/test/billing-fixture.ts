import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestServer } from "./harness.js";
import { ADMIN, serveAt } from "./harness.js";

/** Billing test fixtures (docs/billing.md): a pool with overage on for pro, a clock the test moves, users with credits. */

/** 2026-12-15 12:00 UTC: mid-month, so a test's month never changes unless it moves the clock. */
export const T0 = Date.UTC(2026, 11, 15, 12);

/** $0.10 per GPU-minute: one GPU-second costs 1666.66… micro-units (so prices round up). */
export const PRICE_PER_MINUTE = 100_000;

export function billingConfig(overage: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    pool: { simulated: [{ node: "sim-0", gpus: 8, slots_per_gpu: 8 }] },
    billing: {
      currency: "USD",
      overage: { enabled: true, tiers: ["pro"], price_per_gpu_minute: "0.10", default_monthly_cap: "5.00", ...overage },
    },
    // These tests queue calls behind a full pool on purpose: no refusal for the predicted wait.
    queue: { predicted_wait: false },
    ...extra,
  };
}

/** A clock the test sets; timers armed by the server still run on real time. */
export class ManualClock {
  constructor(public at: number = T0) {}
  now = (): number => this.at;
  advance(ms: number): void {
    this.at += ms;
  }
}

export async function billingServer(
  raw: Record<string, unknown> = billingConfig(),
  clock: ManualClock | null = new ManualClock(),
): Promise<TestServer> {
  return serveAt(mkdtempSync(join(tmpdir(), "gpupool-billing-")), raw, clock ? { clock } : {});
}

/** ceil(ms × price / 60 000): what `ms` GPU-milliseconds of overage cost. */
export function priceMs(ms: number, perMinute = PRICE_PER_MINUTE): number {
  return Math.ceil((ms * perMinute) / 60_000);
}

/**
 * A user of `tier` whose quota is `quotaS` seconds, with `credits` (decimal string, purchased),
 * overage opted in (or not) with `cap`.
 */
export async function payingUser(
  t: TestServer,
  name: string,
  o: { tier?: string; quotaS?: number; credits?: string; optIn?: boolean; cap?: string } = {},
): Promise<{ id: string; token: string }> {
  const u = await t.user(name, o.tier ?? "pro");
  if (o.quotaS !== undefined) {
    const r = await t.call("PATCH", `/v1/admin/users/${u.id}`, { token: ADMIN, body: { quota: o.quotaS } });
    if (r.status !== 200) throw new Error(`quota: ${r.status} ${JSON.stringify(r.body)}`);
  }
  if (o.credits !== undefined) {
    const r = await t.call("POST", `/v1/admin/users/${u.id}/credits`, {
      token: ADMIN,
      body: { amount: o.credits, category: "purchased", idempotency_key: `setup-${name}` },
    });
    if (r.status !== 201) throw new Error(`credits: ${r.status} ${JSON.stringify(r.body)}`);
  }
  if (o.optIn !== false) {
    const r = await t.call("PATCH", "/v1/me/billing", {
      token: u.token,
      body: { overage: true, ...(o.cap === undefined ? {} : { monthly_cap: o.cap }) },
    });
    if (r.status !== 200 && o.optIn === true) throw new Error(`opt in: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return u;
}

/** The user's wallet as the admin sees it (all transactions, up to 500). */
export async function walletOf(t: TestServer, userId: string): Promise<any> {
  const r = await t.call("GET", `/v1/admin/users/${userId}/wallet?limit=500`, { token: ADMIN });
  if (r.status !== 200) throw new Error(`wallet: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Sum of a wallet's transactions of `kind` (optionally for one lease or grant). */
export function sumOf(wallet: any, kind: string, o: { lease?: string; grant?: string } = {}): number {
  return (wallet.transactions as any[])
    .filter((x) => x.kind === kind && (o.lease === undefined || x.lease_id === o.lease))
    .filter((x) => o.grant === undefined || x.grant_id === o.grant)
    .reduce((s, x) => s + (x.amount_micros as number), 0);
}

/** Everything a request could change about a user's money: wallet, billing settings and quota. */
export async function moneyState(t: TestServer, user: { id: string; token: string }): Promise<unknown> {
  const me = await t.call("GET", "/v1/me", { token: user.token });
  return { wallet: await walletOf(t, user.id), me: me.body };
}
