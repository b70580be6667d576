import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QuotaExceededError, createClient } from "@gpupool/sdk";
import type { GpupoolClient } from "@gpupool/sdk";
import { runCli, startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

const ADMIN = "e2e-admin-token-abcdefghijklmnop";

describe("the gpupool server binary, driven by the SDK and the CLI", () => {
  let dir: string;
  let server: ServerProcess;
  let admin: GpupoolClient;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-e2e-"));
    server = await startServerBinary(["--storage", testStorage(join(dir, "e2e.db"))], { GPUPOOL_ADMIN_TOKEN: ADMIN });
    admin = createClient({ url: server.url, adminToken: ADMIN });
  });

  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("grants a GPU to gpu(), charges the person named by the X-IP-Token, and releases", async () => {
    await admin.admin.createUser({ name: "ada", tier: "pro" });
    const app = await admin.admin.createApp({ name: "painter", owner: "ada" });
    const { token } = await admin.ipToken({ app: app.id, user: "ada" });
    const pool = createClient({ url: server.url, appKey: app.key });
    const result = await pool.gpu({ duration: 30, ipToken: token }, async ({ lease, device }) => {
      expect(lease.identity).toMatchObject({ kind: "user", tier: "pro" });
      expect(device.env().CUDA_VISIBLE_DEVICES).toMatch(/^GPU-/);
      return "image";
    });
    expect(result).toBe("image");
    const quota = await pool.quota({ ipToken: token });
    expect(quota.used).toBe(1); // held for a few ms: one second, rounded up
    expect(quota.reserved).toBe(0);
    expect(quota.left).toBe(1499);
  });

  it("queues when the pool is full and grants in order as slots free up", async () => {
    await admin.admin.createUser({ name: "owner2", tier: "pro" });
    const app = await admin.admin.createApp({ name: "queueing", owner: "owner2" });
    const pool = createClient({ url: server.url, appKey: app.key });
    // Two simulated GPUs × 2 slots: four large calls fill the pool; the fifth waits.
    const holders = await Promise.all([1, 2, 3, 4].map(() => pool.acquire({ duration: 20 })));
    const positions: number[] = [];
    const fifth = pool.acquire({ duration: 20, onQueue: (p) => positions.push(p.position) });
    await new Promise((r) => setTimeout(r, 300));
    await pool.release(holders[0]!.id);
    const granted = await fifth;
    expect(granted.status).toBe("active");
    expect(positions[0]).toBe(1);
    for (const h of [...holders.slice(1), granted]) await pool.release(h.id);
  });

  it("refuses past the quota with a typed error carrying the server's detail, and the CLI explains it", async () => {
    await admin.admin.createUser({ name: "bob", tier: "free" });
    const owner = await admin.admin.createUser({ name: "carol", tier: "pro" });
    const app = await admin.admin.createApp({ name: "sketch", owner: owner.id });
    const { token } = await admin.ipToken({ app: app.id, user: "bob" });
    const pool = createClient({ url: server.url, appKey: app.key });
    const first = await pool.acquire({ duration: 120, ipToken: token });
    const err = await pool.acquire({ duration: 100, ipToken: token }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuotaExceededError);
    const q = err as QuotaExceededError;
    expect(q.tier).toBe("free");
    expect(q.left).toBe(90);
    expect(q.message).toMatch(/1m 30s left of its 3m 30s free quota/);
    await pool.release(first.id);

    // The SDK decodes the real diagnose response: the request, the buckets, the refusal.
    const d = await pool.diagnose({ duration: 300, ipToken: token });
    expect(d.identity).toMatchObject({ kind: "user", tier: "free" });
    expect(d.request).toEqual({ duration: 300, size: "large", cost: 1, reserves: 300 });
    expect(d.buckets.find((b) => b.bucket === "credits")?.applies).toBe(false);
    expect(d.verdict.outcome).toBe("rejected");
    expect(d.verdict.problem?.code).toBe("duration_too_long");

    const env = { GPUPOOL_URL: server.url, GPUPOOL_TOKEN: app.key };
    const quota = await runCli(["quota", "--ip-token", token, "--json"], env);
    expect(quota.code).toBe(0);
    expect(JSON.parse(quota.stdout)).toMatchObject({ identity: { kind: "user", tier: "free" }, used: 1, reserved: 0 });
    const diag = await runCli(["diagnose", "--duration", "300", "--ip-token", token], env);
    expect(diag.code).toBe(0);
    expect(diag.stdout).toMatch(/user:/);
    expect(diag.stdout).toMatch(/duration_too_long|at most 2m/);
    const bad = await runCli(["quota"], { GPUPOOL_URL: server.url, GPUPOOL_TOKEN: "gpu_a_not-a-real-key" });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unauthorized/);
    // Three runs of the CLI binary, each a fresh Node process: on a loaded CI machine more than 30 s.
  }, 120_000);

  it("admits exactly the calls that fit when 60 arrive at once for one identity", async () => {
    const owner = await admin.admin.createUser({ name: "dave", tier: "pro" });
    // 20 calls of 10 s fit a quota of 200 s; the pool has room for all of them (they queue).
    await admin.admin.updateUser(owner.id, { quota: 200 });
    const app = await admin.admin.createApp({ name: "burst", owner: owner.id });
    const { token } = await admin.ipToken({ app: app.id, user: owner.id });
    const statuses = await Promise.all(
      Array.from({ length: 60 }, () =>
        fetch(`${server.url}/v1/leases`, {
          method: "POST",
          headers: { authorization: `Bearer ${app.key}`, "x-ip-token": token, "content-type": "application/json" },
          body: JSON.stringify({ duration: 10 }),
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as { id?: string } })),
      ),
    );
    const admitted = statuses.filter((s) => s.status === 201 || s.status === 202);
    expect(admitted).toHaveLength(20);
    expect(statuses.filter((s) => s.status === 429)).toHaveLength(40);
    const pool = createClient({ url: server.url, appKey: app.key });
    expect((await pool.quota({ ipToken: token })).reserved).toBe(200);
    for (const a of admitted) await pool.release(a.body.id!);
  });
});
