import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startServerBinary } from "./binary.js";
import type { ServerProcess } from "./binary.js";
import { call, checkWallet, overageUser, writeBillingConfig } from "./billing-e2e.js";

/**
 * kill -9 during a burst of overage calls (the real binary on SQLite): after the restart no hold or
 * spend is lost or doubled — the wallet reconciles with the leases, the usage records and the ledger.
 */

const ADMIN = "billing-kill-admin-token-0123456789";

describe("billing after kill -9", () => {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-billing-kill-"));
  const config = join(dir, "gpupool.yaml");
  writeBillingConfig(config, ["storage:", `  url: "sqlite:${join(dir, "state.db")}"`]);
  let server: ServerProcess | null = null;
  const start = async () => (server = await startServerBinary(["--config", config], { GPUPOOL_ADMIN_TOKEN: ADMIN }));

  afterAll(async () => {
    await server?.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The leases, wallet, usage and quota as of one moment: read one after another, and read again
   * if any lease changed status meanwhile (a 1-s call can end between two of the reads: CI once
   * saw a usage record for a lease it had just listed as active). Statuses only move forward, so
   * the same statuses before and after mean nothing ended or started in between.
   */
  async function state(base: string, userId: string, token: string) {
    const leasesNow = async () =>
      (await call(base, "GET", "/v1/leases?limit=500", ADMIN)).body.leases.filter((l: any) => l.identity.id === userId);
    const statuses = (ls: any[]) => JSON.stringify(ls.map((l) => [l.id, l.status]).sort());
    for (;;) {
      const leases = await leasesNow();
      const wallet = (await call(base, "GET", `/v1/admin/users/${userId}/wallet?limit=500`, ADMIN)).body;
      const usage = (await call(base, "GET", `/v1/usage?identity=user:${userId}&limit=1000`, ADMIN)).body.records;
      const quota = (await call(base, "GET", "/v1/quota", token)).body;
      if (statuses(await leasesNow()) === statuses(leases)) return { leases, wallet, usage, quota };
    }
  }

  function reconcile(s: Awaited<ReturnType<typeof state>>) {
    const { spent } = checkWallet(s.wallet, s.leases);
    const ended = s.leases.filter((l: any) => l.status !== "queued" && l.status !== "active");
    // One usage record per ended lease, written with its end: its charge is the wallet's spend.
    expect(s.usage.map((r: any) => r.id).sort()).toEqual(ended.map((l: any) => l.id).sort());
    expect(s.usage.reduce((n: number, r: any) => n + r.charged_micros, 0)).toBe(spent);
    const quotaMs = s.usage.reduce((n: number, r: any) => n + Math.round(r.quota_s * 1000), 0);
    expect(Math.round(s.quota.used * 1000)).toBe(quotaMs);
    const live = s.leases.filter((l: any) => l.status === "queued" || l.status === "active");
    const reservedMs = live.reduce((n: number, l: any) => n + Math.round(l.billing.quota_s * 1000), 0);
    expect(Math.round(s.quota.reserved * 1000)).toBe(reservedMs);
    expect(s.wallet.balance_micros).toBe(10_000_000 - spent);
  }

  it("loses or doubles no hold or spend: every grant, lease, usage record and the ledger reconcile", async () => {
    const first = await start();
    const u = await overageUser(first.url, ADMIN, "burst", "10.00", "100.00");
    // Some quota too, so calls split quota + overage.
    expect((await call(first.url, "PATCH", `/v1/admin/users/${u.id}`, ADMIN, { quota: 20 })).status).toBe(200);

    let done = 0;
    const calls = Array.from({ length: 80 }, async (_, i) => {
      try {
        const r = await call(first.url, "POST", "/v1/leases", u.token, { duration: [1, 3, 15, 20][i % 4] });
        if ((r.status === 201 || r.status === 202) && i % 2 === 0)
          await call(first.url, "POST", `/v1/leases/${r.body.id}/release`, u.token, {});
      } catch {
        // the server was killed under it
      } finally {
        done++;
      }
    });
    // Kill in the middle of the burst: some calls answered, some released, others in flight.
    for (let waited = 0; done < 25 && waited < 60_000; waited += 5) await new Promise((r) => setTimeout(r, 5));
    await first.stop("SIGKILL");
    server = null;
    await Promise.all(calls);

    const again = await start();
    const right = await state(again.url, u.id, u.token);
    expect(right.leases.length).toBeGreaterThan(0);
    expect(right.wallet.transactions.some((x: any) => x.kind === "hold")).toBe(true);
    // Some calls outlived the restart: their holds are still held.
    expect(right.wallet.held_micros).toBeGreaterThan(0);
    reconcile(right);

    // Every call is at most 20 s: wait until all have ended (expired or released), then again.
    const settled = await (async () => {
      for (let waited = 0; waited < 60_000; waited += 250) {
        const s = await state(again.url, u.id, u.token);
        if (s.leases.every((l: any) => l.status !== "queued" && l.status !== "active")) return s;
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error("leases still live 60 s after the restart");
    })();
    reconcile(settled);
    expect(settled.wallet.held_micros).toBe(0);
    expect(settled.quota.reserved).toBe(0);
    expect(settled.leases.some((l: any) => l.billing.charged_micros > 0)).toBe(true);
  }, 180_000);
});
