import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../pg/postgres-url.js";
import { startServerBinary } from "./binary.js";
import type { ServerProcess } from "./binary.js";
import { call, checkWallet, overageUser, writeBillingConfig } from "./billing-e2e.js";

/** Billing (docs/billing.md) across 3 control-plane replicas on one PostgreSQL database: a wallet and a cap are never over-committed. */

const ADMIN = "billing-replicas-admin-token-0123456789";
const running: ServerProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop("SIGKILL")));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function replicas(name: string): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-billing-replicas-"));
  dirs.push(dir);
  const config = join(dir, "gpupool.yaml");
  writeBillingConfig(config, ["storage:", `  url: "${freshPostgresUrl(name)}"`]);
  for (let i = 0; i < 3; i++)
    running.push(await startServerBinary(["--config", config], { GPUPOOL_ADMIN_TOKEN: ADMIN }));
  return running.map((s) => s.url);
}

/**
 * 60 calls of 60 s (each holding exactly $0.10), spread over the replicas. A minute, so that no
 * admitted call can reach its deadline (and settle its hold) before the wallets are checked, however
 * slow the machine (with 6-s calls a loaded CI saw 4 of 20 holds already settled).
 */
async function burst(urls: string[], token: string) {
  const results = await Promise.all(
    Array.from({ length: 60 }, (_, i) => call(urls[i % urls.length]!, "POST", "/v1/leases", token, { duration: 60 })),
  );
  const admitted = results.filter((r) => r.status === 201 || r.status === 202);
  const seen = JSON.stringify(
    Object.fromEntries(
      [...new Set(results.map((r) => r.status))].map((s) => [s, results.filter((r) => r.status === s).length]),
    ),
  );
  return { results, admitted, refused: results.filter((r) => r.status === 402), seen };
}

async function checkEverywhere(urls: string[], userId: string, held: number) {
  const leases = (await call(urls[0]!, "GET", "/v1/leases?limit=500", ADMIN)).body.leases.filter(
    (l: any) => l.identity.id === userId,
  );
  for (const url of urls) {
    const w = await call(url, "GET", `/v1/admin/users/${userId}/wallet?limit=500`, ADMIN);
    expect(w.body.held_micros).toBe(held);
    expect(checkWallet(w.body, leases).held).toBe(held);
  }
}

describe.skipIf(postgresUrl() === null)("billing across 3 PostgreSQL replicas", () => {
  it("60 parallel overage calls, credits for exactly 20 (a minute each) → 20 admitted, 40 × 402 credits_exhausted; the same against the cap", async () => {
    const urls = await replicas("billing");
    const poor = await overageUser(urls[0]!, ADMIN, "poor", "2.00", "50.00");
    const a = await burst(urls, poor.token);
    expect(a.admitted.length, a.seen).toBe(20);
    expect(a.refused.length, a.seen).toBe(40);
    for (const r of a.refused) expect(r.body).toMatchObject({ code: "credits_exhausted", needed_micros: 100_000 });
    for (const r of a.admitted)
      expect(r.body.billing).toMatchObject({ quota_s: 0, overage_s: 60, hold_micros: 100_000 });
    await checkEverywhere(urls, poor.id, 2_000_000);

    const capped = await overageUser(urls[1]!, ADMIN, "capped", "10.00", "2.00");
    const b = await burst(urls, capped.token);
    expect(b.admitted.length, b.seen).toBe(20);
    expect(b.refused.length, b.seen).toBe(40);
    for (const r of b.refused) expect(r.body).toMatchObject({ code: "spend_cap_reached", cap_micros: 2_000_000 });
    await checkEverywhere(urls, capped.id, 2_000_000);
  }, 180_000);
});
