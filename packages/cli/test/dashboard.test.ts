import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN, cli, startPool } from "./helpers.js";
import type { Pool } from "./helpers.js";

/** `gpupool dashboard`: a one-time sign-in link that opens a dashboard session once. */

let pool: Pool;
let userToken: string;
let userId: string;

beforeAll(async () => {
  pool = await startPool();
  const carol = await pool.admin.admin.createUser({ name: "carol", tier: "free" });
  userToken = carol.token;
  userId = carol.id;
});
afterAll(async () => {
  await pool.close();
});

async function signInWith(url: string): Promise<Response> {
  const code = new URL(url).hash.replace(/^#signin=/, "");
  return fetch(new URL("/v1/dashboard/session", pool.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code }),
  });
}

describe("gpupool dashboard", () => {
  it("prints a one-time link for the user: the code signs in once; the token is not in it", async () => {
    const r = await cli(["dashboard", "--token", userToken, "--url", pool.url]);
    expect(r.code, r.stderr).toBe(0);
    const url = r.stdout.trim();
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/#signin=gpc_[A-Za-z0-9_-]+$/);
    expect(url).not.toContain(userToken);
    expect(r.stderr).toContain("works once");
    const first = await signInWith(url);
    expect(first.status).toBe(201);
    expect(((await first.json()) as { user: { id: string } }).user.id).toBe(userId);
    expect((await signInWith(url)).status).toBe(401);
  });

  it("--admin signs the operator in, with GPUPOOL_ADMIN_TOKEN", async () => {
    const r = await cli(["dashboard", "--admin", "--url", pool.url], { GPUPOOL_ADMIN_TOKEN: ADMIN });
    expect(r.code, r.stderr).toBe(0);
    const res = await signInWith(r.stdout.trim());
    expect(((await res.json()) as { role: string }).role).toBe("admin");
  });

  it("without a token it says what to pass (exit 2); a wrong one is the server's 401", async () => {
    const none = await cli(["dashboard", "--url", pool.url], { GPUPOOL_TOKEN: "" });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("GPUPOOL_TOKEN");
    const wrong = await cli(["dashboard", "--token", "gpu_u_wrongwrongwrongwrongwrongwrong", "--url", pool.url]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("unauthorized");
  });
});
