// gpupool me / billing / usage / admin credits against a real server with billing on, and the
// SDK's billing calls against the same server.
import { createClient, SpendCapReachedError } from "@gpupool/sdk";
import type { GpupoolClient } from "@gpupool/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN, cli, startPool } from "./helpers.js";
import type { Pool } from "./helpers.js";

/** Each test runs the CLI a dozen times, a second or more each on a loaded 2-core machine. */
const CLI_TEST_TIMEOUT = 180_000;

let pool: Pool;
let admin: Record<string, string>;

const BILLING = {
  included_credits: { pro: "2.00" },
  overage: { enabled: true, tiers: ["pro"], price_per_gpu_minute: "0.10", default_monthly_cap: "5.00" },
};

/** A pro user whose quota is `quota` seconds a window, with the included $2.00. */
async function proUser(name: string, quota: number): Promise<{ id: string; token: string; client: GpupoolClient }> {
  const user = await pool.admin.admin.createUser({ name, tier: "pro" });
  await pool.admin.admin.updateUser(user.id, { quota });
  return { id: user.id, token: user.token, client: createClient({ url: pool.url, token: user.token }) };
}

beforeAll(async () => {
  pool = await startPool({ billing: BILLING });
  admin = { GPUPOOL_URL: pool.url, GPUPOOL_ADMIN_TOKEN: ADMIN };
});
afterAll(async () => {
  await pool.close();
});

describe("gpupool me and billing overage", () => {
  it(
    "me says overage is off until the user turns it on, and what to run; then shows the cap",
    async () => {
      const ada = await proUser("ada", 30);
      const env = { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: ada.token };
      const before = await cli(["me"], env);
      expect(before.code).toBe(0);
      expect(before.stdout).toMatch(/^ada \(u_[\w-]+\), tier pro$/m);
      expect(before.stdout).toMatch(/quota +30s left of 30s/);
      expect(before.stdout).toMatch(/credits +balance \$2\.00, held \$0\.00 by calls in flight, available \$2\.00/);
      expect(before.stdout).toMatch(/overage +off: you have not turned it on/);
      expect(before.stdout.replace(/\s+/g, " ")).toContain("`gpupool billing overage on`");

      const on = await cli(["billing", "overage", "on", "--cap", "1.00"], env);
      expect(on.code).toBe(0);
      expect(on.stdout).toMatch(/^Overage is now on\.$/m);
      expect(on.stdout).toMatch(/cap \$1\.00 a month/);

      const after = await cli(["me", "--json"], env);
      expect(JSON.parse(after.stdout)).toMatchObject({
        overage: { enabled: true, blocked_by: null, monthly_cap_micros: 1_000_000 },
      });

      const def = await cli(["billing", "overage", "on", "--cap", "default"], env);
      expect(def.stdout).toMatch(/cap \$5\.00 a month/);
      const off = await cli(["billing", "overage", "off"], env);
      expect(off.stdout).toMatch(/^Overage is now off\.$/m);
      expect(off.stdout).toMatch(/off: you have not turned it on/);
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    "a tier without overage: 409 overage_not_available with the server's detail, exit 1; bad input exits 2",
    async () => {
      const bob = await pool.admin.admin.createUser({ name: "bob", tier: "free" });
      const env = { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: bob.token };
      const me = await cli(["me"], env);
      expect(me.stdout).toMatch(/overage +off: the free tier has no overage/);
      const on = await cli(["billing", "overage", "on"], env);
      expect(on.code).toBe(1);
      expect(on.stderr).toMatch(/^error \[overage_not_available\]: .*free tier/m);
      expect((await cli(["billing", "overage", "maybe"], env)).code).toBe(2);
      expect((await cli(["billing", "overage", "on", "--cap", "-1"], env)).code).toBe(2);
      const noToken = await cli(["me"], { GPUPOOL_URL: pool.url });
      expect(noToken.code).toBe(2);
      expect(noToken.stderr).toMatch(/gpupool me needs a user token/);
    },
    CLI_TEST_TIMEOUT,
  );
});

describe("a call split into quota + overage, as the SDK, me, wallet and usage see it", () => {
  it(
    "30 s of quota left, a 60 s call: quota 30 s + overage 30 s, $0.05 held, then settled from what it used",
    async () => {
      const cy = await proUser("cy", 30);
      await cy.client.setBilling({ overage: true, monthlyCap: "1.00" });
      const lease = await cy.client.acquire({ duration: 60 });
      expect(lease.billing).toMatchObject({ quotaS: 30, overageS: 30, holdMicros: 50_000, currency: "USD" });
      const env = { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: cy.token };
      const me = await cli(["me"], env);
      expect(me.stdout).toMatch(/held \$0\.05 by calls in flight, available \$1\.95/);
      const wallet = await cli(["billing", "wallet"], env);
      expect(wallet.stdout).toMatch(/ hold +\$0\.05 +inc_[\w-]+ +ls_/);
      await cy.client.release(lease.id);

      const usage = await cli(["usage"], env);
      expect(usage.code).toBe(0);
      expect(usage.stdout).toContain(lease.id);
      expect(usage.stdout).toMatch(/1 record\(s\): charged \d+s \(quota \d+s, overage 0s\), paid \$0\.00 from credits/);
      const csv = await cli(["usage", "--format", "csv"], env);
      const [header, row] = csv.stdout.trim().split("\n");
      expect(header).toMatch(/^id,identity_kind,identity_id,tier,.*charged_micros/);
      expect(row).toMatch(new RegExp(`^${lease.id},user,${cy.id},pro,`));
      const ndjson = await cli(["usage", "--format", "ndjson"], env);
      expect(JSON.parse(ndjson.stdout.trim())).toMatchObject({
        id: lease.id,
        overage_s: 0,
        quota_s: expect.any(Number),
      });
      const byDay = await cli(["usage", "--by", "day"], env);
      expect(byDay.stdout).toMatch(/^total +1 +1 /m);
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    "a call that outlives the quota left is charged its overage from credits, at the price rounded up",
    async () => {
      const hal = await proUser("hal", 1);
      await hal.client.setBilling({ overage: true });
      const lease = await hal.client.acquire({ duration: 60 });
      expect(lease.billing).toMatchObject({ quotaS: 1, overageS: 59, holdMicros: 98_334 });
      // Hold the GPU past the 1 s of quota, so at least 1 s is overage (charged seconds round up).
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await hal.client.release(lease.id);
      const [record] = (await hal.client.usagePage()).records;
      expect(record?.quotaS).toBe(1);
      expect(record?.overageS).toBe((record?.chargedS ?? 0) - 1);
      expect(record?.overageS).toBeGreaterThanOrEqual(1);
      const expected = Math.ceil(((record?.overageS ?? 0) * 1000 * 100_000) / 60_000);
      expect(record?.chargedMicros).toBe(expected);
      const me = await hal.client.me();
      expect(me.credits.balanceMicros).toBe(2_000_000 - expected);
      expect(me.overage.spentMicros).toBe(expected);
      const wallet = await cli(["billing", "wallet"], { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: hal.token });
      expect(wallet.stdout).toMatch(new RegExp(` spend +\\$0\\.0\\d+ +inc_[\\w-]+ +${lease.id}`));
    },
    CLI_TEST_TIMEOUT,
  );

  it(
    "a hold past the monthly cap is a SpendCapReachedError carrying the amounts; nothing was held",
    async () => {
      const dee = await proUser("dee", 10);
      await dee.client.setBilling({ overage: true, monthlyCap: "0.05" });
      // 60 s with 10 s of quota left: 50 s of overage hold ceil(50 000 ms × 100 000 / 60 000) = 83 334 micros > 50 000.
      const error = (await dee.client.acquire({ duration: 60 }).catch((e: unknown) => e)) as SpendCapReachedError;
      expect(error).toBeInstanceOf(SpendCapReachedError);
      expect(error).toMatchObject({
        status: 402,
        neededMicros: 83_334,
        capMicros: 50_000,
        spentMicros: 0,
        heldMicros: 0,
      });
      expect((await dee.client.me()).credits.heldMicros).toBe(0);
    },
    CLI_TEST_TIMEOUT,
  );
});

describe("gpupool usage visibility, and the SDK's iterator against the real server", () => {
  it(
    "a user sees their own records, the admin (no --token) everyone's; usage() follows next_cursor",
    async () => {
      const eve = await proUser("eve", 600);
      const fay = await proUser("fay", 600);
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const lease = await eve.client.acquire({ duration: 5 });
        await eve.client.release(lease.id);
        ids.push(lease.id);
      }
      const other = await fay.client.acquire({ duration: 5 });
      await fay.client.release(other.id);

      const seen: string[] = [];
      for await (const record of eve.client.usage({ limit: 1 })) seen.push(record.id);
      expect(seen).toEqual(ids);
      let pages = 0;
      for await (const page of eve.client.usage({ limit: 2 }).pages()) pages += page.records.length > 0 ? 1 : 0;
      expect(pages).toBe(2);

      const mine = await cli(["usage", "--json"], { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: eve.token });
      expect((JSON.parse(mine.stdout) as { records: { id: string }[] }).records.map((r) => r.id)).toEqual(ids);
      const all = await cli(["usage", "--by", "identity"], admin);
      expect(all.code).toBe(0);
      expect(all.stdout).toContain(`user:${eve.id}`);
      expect(all.stdout).toContain(`user:${fay.id}`);
      const since = await cli(["usage", "--since", "soon"], admin);
      expect(since.code).toBe(2);
    },
    CLI_TEST_TIMEOUT,
  );
});

describe("gpupool admin credits grant and admin wallet", () => {
  it(
    "grants once per key: the same key again adds nothing, another amount is refused; the wallet shows it",
    async () => {
      await pool.admin.admin.createUser({ name: "gus", tier: "pro" });
      const grant = ["admin", "credits", "grant", "gus", "10.00", "--category", "purchased", "--key", "pay_1"];
      const first = await cli([...grant, "--source", "stripe:pi_1"], admin);
      expect(first.code).toBe(0);
      expect(first.stdout).toMatch(
        /^Granted \$10\.00 of purchased credits to gus \(grant cg_[\w-]+, priority 10, never expires\)\.$/m,
      );
      const again = await cli(grant, admin);
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/^Nothing added: key pay_1 already granted \$10\.00/m);
      const other = await cli(
        ["admin", "credits", "grant", "gus", "11.00", "--category", "purchased", "--key", "pay_1"],
        admin,
      );
      expect(other.code).toBe(1);
      expect(other.stderr).toMatch(/^error \[idempotency_key_reused\]: /m);

      const promo = await cli(["admin", "credits", "grant", "gus", "5", "--expires", "30d"], admin);
      expect(promo.stdout).toMatch(/Granted \$5\.00 of promotional credits to gus .*expires 20\d\d-/);
      expect(promo.stdout).toMatch(/^Idempotency key: cli-[0-9a-f-]{36} +\(run again with --key cli-/m);

      for (const bad of ["-5", "0", "1.0000001", "ten"]) {
        const r = await cli(["admin", "credits", "grant", "gus", bad], admin);
        expect(r.code, bad).toBe(2);
      }
      const past = await cli(["admin", "credits", "grant", "gus", "1", "--expires", "2020-01-01"], admin);
      expect(past.code).toBe(1);
      expect(past.stderr).toMatch(/^error \[invalid_request\]: .*future/m);

      const wallet = await cli(["admin", "wallet", "gus"], admin);
      expect(wallet.code).toBe(0);
      // $2.00 included (read lazily), $10.00 purchased, $5.00 promotional: nothing refused was added.
      expect(wallet.stdout).toMatch(/^Wallet of u_[\w-]+: balance \$17\.00, held \$0\.00, available \$17\.00$/m);
      expect(wallet.stdout).toMatch(/ purchased +\$10\.00 +\$10\.00 +\$0\.00 +10 +never +stripe:pi_1/);
      const missing = await cli(["admin", "wallet", "nobody"], admin);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/^error \[not_found\]/m);
    },
    CLI_TEST_TIMEOUT,
  );
});
