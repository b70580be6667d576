import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN, cli, startPool } from "./helpers.js";
import type { Pool } from "./helpers.js";

let pool: Pool;
let env: Record<string, string>;

beforeAll(async () => {
  pool = await startPool();
  env = { GPUPOOL_URL: pool.url, GPUPOOL_ADMIN_TOKEN: ADMIN };
});
afterAll(async () => {
  await pool.close();
});

describe("gpupool admin", () => {
  it("users create prints the token once, saying it cannot be shown again; the token works", async () => {
    const r = await cli(["admin", "users", "create", "--name", "ada", "--tier", "pro"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Created user ada \(u_[\w-]+\), tier pro\./);
    const tokens = r.stdout.match(/gpu_u_[\w-]+/g) ?? [];
    expect(tokens).toHaveLength(1);
    expect(r.stdout).toMatch(/shown once and cannot be shown again/);

    const quota = await cli(["quota", "--token", tokens[0] ?? ""], { GPUPOOL_URL: pool.url });
    expect(quota.code).toBe(0);
    expect(quota.stdout).toMatch(/tier pro/);

    const listed = await cli(["admin", "users", "list"], env);
    expect(listed.stdout).toMatch(/ada\s+pro\s+tier default/);
    expect(listed.stdout).not.toContain(tokens[0]);
  });

  it("a second user with the same name is a conflict: exit 1, error [conflict]", async () => {
    await cli(["admin", "users", "create", "--name", "dup"], env);
    const r = await cli(["admin", "users", "create", "--name", "dup"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error \[conflict\]: A user named "dup" already exists\./m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("users update changes tier, quota override and bonus, by name", async () => {
    await cli(["admin", "users", "create", "--name", "bob"], env);
    const r = await cli(["admin", "users", "update", "bob", "--tier", "team", "--quota", "45m", "--bonus", "60"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Updated user bob \(u_[\w-]+\): tier team, quota override 45m\./);
    expect(r.stdout).toMatch(/GPU quota of user:u_[\w-]+ \(tier team\)/);

    const json = await cli(["admin", "users", "update", "bob", "--quota", "none", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ name: "bob", tier: "team", quota_override: null });

    const nothing = await cli(["admin", "users", "update", "bob"], env);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toMatch(/Nothing to change/);

    const badQuota = await cli(["admin", "users", "update", "bob", "--quota", "lots"], env);
    expect(badQuota.code).toBe(2);

    const unknown = await cli(["admin", "users", "update", "nobody", "--tier", "pro"], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/error \[not_found\]/);

    const badTier = await cli(["admin", "users", "update", "bob", "--tier", "platinum"], env);
    expect(badTier.code).toBe(1);
    expect(badTier.stderr).toMatch(/error \[invalid_request\]: Unknown tier "platinum"/);
    expect(badTier.stderr).toMatch(/ {2}- tier: is not a configured tier/);
  });

  it("apps create prints the app key once; apps list shows the app without it", async () => {
    await cli(["admin", "users", "create", "--name", "owner"], env);
    const r = await cli(
      ["admin", "apps", "create", "--name", "sdxl", "--owner", "owner", "--max-concurrency", "2"],
      env,
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Created app sdxl \(a_[\w-]+\), owned by u_[\w-]+, at most 2 calls at once\./);
    const keys = r.stdout.match(/gpu_a_[\w-]+/g) ?? [];
    expect(keys).toHaveLength(1);
    expect(r.stdout).toMatch(/cannot be shown again/);

    const listed = await cli(["admin", "apps", "list"], env);
    expect(listed.stdout).toMatch(/^ID\s+NAME\s+OWNER\s+MAX CONCURRENCY$/m);
    expect(listed.stdout).toMatch(/sdxl\s+u_[\w-]+\s+2/);
    expect(listed.stdout).not.toContain(keys[0]);

    const noOwner = await cli(["admin", "apps", "create", "--name", "orphan", "--owner", "ghost"], env);
    expect(noOwner.code).toBe(1);
    expect(noOwner.stderr).toMatch(/error \[invalid_request\]: No user "ghost"/);
  });

  it("apps update changes an app's concurrency limit by name, and none removes it", async () => {
    await cli(["admin", "users", "create", "--name", "limiter"], env);
    await cli(["admin", "apps", "create", "--name", "flux", "--owner", "limiter"], env);
    const r = await cli(["admin", "apps", "update", "flux", "--max-concurrency", "3"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Updated app flux \(a_[\w-]+\): at most 3 calls at once\./);
    expect((await cli(["admin", "apps", "list"], env)).stdout).toMatch(/flux\s+u_[\w-]+\s+3/);

    const json = await cli(["admin", "apps", "update", "flux", "--max-concurrency", "none", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ name: "flux", max_concurrency: null });

    const zero = await cli(["admin", "apps", "update", "flux", "--max-concurrency", "0"], env);
    expect(zero.code).toBe(2);
    const unknown = await cli(["admin", "apps", "update", "nothing", "--max-concurrency", "2"], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/error \[not_found\]/);
  });

  it("nodes and edges create print their key once", async () => {
    const node = await cli(["admin", "nodes", "create", "--name", "gpu-host-1"], env);
    expect(node.code).toBe(0);
    expect(node.stdout.match(/gpu_n_[\w-]+/g)).toHaveLength(1);
    const edge = await cli(["admin", "edges", "create", "--name", "edge-1", "--json"], env);
    expect(JSON.parse(edge.stdout)).toMatchObject({ name: "edge-1", key: expect.stringMatching(/^gpu_e_/) });
  });

  it("admin commands need GPUPOOL_ADMIN_TOKEN (exit 2) and refuse a wrong one (exit 1)", async () => {
    const missing = await cli(["admin", "users", "list"], { GPUPOOL_URL: pool.url });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/GPUPOOL_ADMIN_TOKEN/);
    const wrong = await cli(["admin", "users", "list"], {
      GPUPOOL_URL: pool.url,
      GPUPOOL_ADMIN_TOKEN: "not-the-token",
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^error \[unauthorized\]: /m);
  });

  it("pool shows the simulated GPUs and their slots", async () => {
    const r = await cli(["pool"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/2 GPU\(s\), 4 slots \(0 busy, 4 free\), 0 queued/);
    expect(r.stdout).toMatch(/sim-0\s+configured\s+up\s+-\s+-/);
    expect(r.stdout).toMatch(/sim-0\s+0\s+Simulated H200\s+141 GB\s+free \| free/);
    const json = await cli(["pool", "--json"], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ slots: { total: 4, busy: 0 } });
  });

  it("ip-token prints only a token, usable to charge that viewer", async () => {
    const r = await cli(["ip-token", "--app", "sdxl", "--user", "owner"], env);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const neither = await cli(["ip-token", "--app", "sdxl"], env);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toMatch(/--user <user> or --ip <address>/);
  });
});
