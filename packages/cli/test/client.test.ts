import { createClient } from "@gpupool/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN, cli, startPool } from "./helpers.js";
import type { Pool } from "./helpers.js";

let pool: Pool;
let userToken: string;
let userId: string;
let appKey: string;
let appId: string;
let viewer: { id: string; token: string };

/** A fresh X-IP-Token naming `user` for the app. */
async function ipTokenFor(user: string): Promise<string> {
  return (await pool.admin.ipToken({ app: appId, user })).token;
}

beforeAll(async () => {
  pool = await startPool();
  const carol = await pool.admin.admin.createUser({ name: "carol", tier: "free" });
  userToken = carol.token;
  userId = carol.id;
  const dev = await pool.admin.admin.createUser({ name: "dev", tier: "pro" });
  const app = await pool.admin.admin.createApp({ name: "sdxl", owner: dev.id });
  appKey = app.key;
  appId = app.id;
  const dan = await pool.admin.admin.createUser({ name: "dan", tier: "free" });
  viewer = { id: dan.id, token: "" };
  viewer.token = await ipTokenFor(dan.id);
});
afterAll(async () => {
  await pool.close();
});

describe("gpupool quota", () => {
  it("shows the numbers for a user token, before any window", async () => {
    const r = await cli(["quota", "--token", userToken, "--url", pool.url]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`GPU quota of user:${userId} (tier free)`);
    expect(r.stdout).toMatch(/left\s+3m 30s of 3m 30s .*\(210 of 210 s\)/);
    expect(r.stdout).toMatch(/used\s+0s/);
    expect(r.stdout).toMatch(/window\s+24h, not started/);
    expect(r.stdout).toMatch(/longest call 2m\s+queue priority 2/);
  });

  it("shows a viewer's quota (app key + X-IP-Token from env) with reservations and the reset time", async () => {
    const app = createClient({ url: pool.url, appKey });
    const lease = await app.acquire({ duration: 90, ipToken: viewer.token });
    try {
      const r = await cli(["quota"], { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: appKey, GPUPOOL_IP_TOKEN: viewer.token });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`GPU quota of user:${viewer.id} (tier free)`);
      expect(r.stdout).toMatch(/left\s+2m of 3m 30s .*\(120 of 210 s\)/);
      expect(r.stdout).toMatch(/reserved\s+1m 30s\s+\(held by calls in progress/);
      expect(r.stdout).toMatch(/resets\s+.+ UTC \(in 23h 59m\)/);

      const json = await cli(["quota", "--json", "--token", appKey, "--ip-token", viewer.token, "--url", pool.url]);
      expect(JSON.parse(json.stdout)).toMatchObject({
        identity: { kind: "user", id: viewer.id },
        left: 120,
        reserved: 90,
        quota: 210,
      });
    } finally {
      await app.release(lease.id);
    }
  });

  it("a bad token exits 1 with error [unauthorized] and no stack trace", async () => {
    const r = await cli(["quota", "--token", "gpu_u_not-a-real-token", "--url", pool.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[unauthorized\]: The bearer token is not valid/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe("");
  });

  it("an invalid X-IP-Token exits 1 with error [invalid_ip_token], never a silent fallback", async () => {
    const r = await cli(["quota", "--token", appKey, "--ip-token", "garbage", "--url", pool.url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[invalid_ip_token\]: /m);
  });

  it("no token is a usage error (exit 2) naming the option and the variable", async () => {
    const r = await cli(["quota", "--url", pool.url]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--token .*GPUPOOL_TOKEN/);
  });

  it("an unreachable server exits 1 with error [server_unavailable]", async () => {
    const r = await cli(["quota", "--token", userToken, "--url", "http://127.0.0.1:9"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[server_unavailable\]: Could not reach the gpupool server/m);
  });

  it("a malformed --url is a usage error", async () => {
    const r = await cli(["quota", "--token", userToken, "--url", "nope"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not a URL/);
  });
});

describe("gpupool diagnose", () => {
  it("shows who is charged, step by step, the quota, the buckets and the verdict", async () => {
    const ipToken = await ipTokenFor("carol");
    const r = await cli(["diagnose", "--token", appKey, "--ip-token", ipToken, "--duration", "30", "--url", pool.url]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Who is charged, step by step/);
    expect(r.stdout).toMatch(/1\. ✓ authorization \(ok\): Bearer app key of app sdxl/);
    expect(r.stdout).toMatch(/2\. ✓ x-ip-token \(ok\): Valid X-IP-Token/);
    expect(r.stdout).toMatch(/3\. ✓ charged_identity \(ok\): Charged to user:/);
    expect(r.stdout).toContain(`→ charged to user:${userId} (tier free)`);
    expect(r.stdout).toMatch(/30s on large \(cost ×1\) reserves 30s of GPU quota/);
    expect(r.stdout).toMatch(/GPU quota of user:/);
    expect(r.stdout).toMatch(/✓ applies\s+GPU quota/);
    expect(r.stdout).toMatch(/✗ does not apply\s+credits/);
    expect(r.stdout).toMatch(/GRANTED/);
  });

  it("explains the fallback to the app when no X-IP-Token is sent", async () => {
    const r = await cli(["diagnose"], { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: appKey });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/↳ x-ip-token \(fallback\): No X-IP-Token header/);
    expect(r.stdout).toContain(`→ charged to app:${appId} (tier anonymous)`);
    expect(r.stdout).toMatch(/Likely causes and fixes[\s\S]*1\. The app sent no X-IP-Token[\s\S]*fix: /);
  });

  it("shows a rejection with its problem code and the ranked fixes", async () => {
    const r = await cli(["diagnose", "--token", userToken, "--duration", "500", "--size", "xlarge", "--url", pool.url]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/REJECTED \[duration_too_long\]: /);
    expect(r.stdout).toMatch(/1\. The app asks for 8m 20s on xlarge/);
  });

  it("--json prints the server's diagnosis object", async () => {
    const r = await cli(["diagnose", "--json", "--token", userToken, "--url", pool.url]);
    const body = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(body).toMatchObject({ identity: { kind: "user", id: userId }, verdict: { outcome: "granted" } });
    expect(Array.isArray(body["steps"])).toBe(true);
  });

  it("rejects a bad --duration as a usage error", async () => {
    const r = await cli(["diagnose", "--token", userToken, "--duration", "-3", "--url", pool.url]);
    expect(r.code).toBe(2);
  });
});

describe("gpupool leases", () => {
  it("lists the app's leases in a table, filters by status, and prints JSON", async () => {
    const app = createClient({ url: pool.url, appKey });
    const done = await app.acquire({ duration: 20 });
    await app.release(done.id);
    const live = await app.acquire({ duration: 40, size: "xlarge", ipToken: await ipTokenFor("carol") });
    try {
      const env = { GPUPOOL_URL: pool.url, GPUPOOL_TOKEN: appKey };
      const r = await cli(["leases"], env);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(
        /^ID\s+STATUS\s+CHARGED TO\s+TIER\s+SIZE\s+DURATION\s+HELD\s+CHARGED\s+REFUNDED\s+DEVICE\s+WHEN$/m,
      );
      expect(r.stdout).toMatch(
        new RegExp(
          `${live.id}\\s+active\\s+user:${userId}\\s+free\\s+xlarge\\s+40s\\s+-\\s+0s\\s+0s\\s+sim-0/\\d\\s+deadline in \\d+s`,
        ),
      );
      expect(r.stdout).toMatch(new RegExp(`${done.id}\\s+released\\s+app:${appId}\\s+anonymous\\s+large\\s+20s`));

      const active = await cli(["leases", "--status", "active"], env);
      expect(active.stdout).toContain(live.id);
      expect(active.stdout).not.toContain(done.id);

      const json = await cli(["leases", "--json", "--limit", "1"], env);
      const body = JSON.parse(json.stdout) as { leases: { id: string }[] };
      expect(body.leases).toHaveLength(1);

      const admin = await cli(["leases"], { GPUPOOL_URL: pool.url, GPUPOOL_ADMIN_TOKEN: ADMIN });
      expect(admin.stdout).toContain(live.id);
    } finally {
      await app.release(live.id);
    }
  });

  it("says so when there are none, and rejects an unknown --status", async () => {
    const r = await cli(["leases", "--token", userToken, "--url", pool.url, "--status", "queued"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe("No leases.");
    const bad = await cli(["leases", "--token", userToken, "--status", "sleeping"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/Allowed choices are queued, active/);
  });
});
