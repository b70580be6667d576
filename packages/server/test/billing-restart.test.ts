import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { lease, serveAt } from "./harness.js";
import { ManualClock, T0, billingConfig, payingUser, priceMs, sumOf, walletOf } from "./billing-fixture.js";

/**
 * What a grant holds is what its live leases hold, after a restart too. SQLite does not write a
 * grant's `held_micros` when a call's hold is placed (the lease row records it): a wallet loaded
 * from the database counts its live leases' holds — also the one whose release is being settled.
 */
let t: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe("credits held across a restart", () => {
  it("a hold placed before a restart is still held after it, and its release settles it exactly once", async () => {
    const clock = new ManualClock(T0);
    const dir = mkdtempSync(join(tmpdir(), "gpupool-billing-restart-"));
    t = await serveAt(dir, billingConfig(), { clock, keepDir: true });
    const u = await payingUser(t, "dora", { quotaS: 0, credits: "1.00" });
    const first = await lease(t, u.token, { duration: 60 });
    const second = await lease(t, u.token, { duration: 30 });
    expect([first.status, second.status]).toEqual([201, 201]);
    await t.close();

    t = await serveAt(dir, billingConfig(), { clock, keepDir: false });
    // The release is the first thing after the restart: its settlement loads the wallet from the database.
    clock.advance(10_000);
    const r = await t.call("POST", `/v1/leases/${first.body.id}/release`, { token: u.token, body: {} });
    expect(r.status).toBe(200);
    expect(r.body.billing).toMatchObject({ overage_s: 60, charged_micros: priceMs(10_000) });
    const w = await walletOf(t, u.id);
    const left = 1_000_000 - priceMs(10_000);
    expect(w).toMatchObject({ balance_micros: left, held_micros: priceMs(30_000) });
    expect(w.grants[0]).toMatchObject({ remaining_micros: left, held_micros: priceMs(30_000) });
    expect(sumOf(w, "hold", { lease: first.body.id })).toBe(priceMs(60_000));
    expect(sumOf(w, "spend", { lease: first.body.id })).toBe(priceMs(10_000));
    expect(sumOf(w, "release", { lease: first.body.id })).toBe(priceMs(60_000) - priceMs(10_000));
    // Released again: nothing more is charged.
    await t.call("POST", `/v1/leases/${first.body.id}/release`, { token: u.token, body: {} });
    expect((await walletOf(t, u.id)).grants[0]).toMatchObject({ remaining_micros: left });

    if (process.env["GPUPOOL_TEST_STORAGE"] !== "postgres") {
      // The row was written with the settlement's spend: what the grant held then, the second call's hold.
      const db = new Database(join(dir, "test.db"), { readonly: true });
      try {
        expect(db.prepare("SELECT remaining_micros, held_micros FROM credit_grants").get()).toEqual({
          remaining_micros: left,
          held_micros: priceMs(30_000),
        });
      } finally {
        db.close();
      }
    }
    const me = await t.call("GET", "/v1/me", { token: u.token });
    expect(me.body.credits).toMatchObject({ held_micros: priceMs(30_000) });
  });
});
