import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createClient } from "@gpupool/sdk";
import { startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

const ADMIN = "e2e-admin-token-recovery-0123456";
/** The short leases' duration (s): long enough for the calls after them on a stalling machine. */
const SHORT_S = 5;

describe("recovery after kill -9", () => {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-kill-"));
  const db = testStorage(join(dir, "state.db"));
  let server: ServerProcess | null = null;

  afterAll(async () => {
    await server?.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps active leases with their deadlines, keeps the queue, and loses no reservation or charge", async () => {
    server = await startServerBinary(["--storage", db], { GPUPOOL_ADMIN_TOKEN: ADMIN });
    const admin = createClient({ url: server.url, adminToken: ADMIN });
    const owner = await admin.admin.createUser({ name: "ops", tier: "pro" });
    const app = await admin.admin.createApp({ name: "survivor", owner: owner.id });
    const { token } = await admin.ipToken({ app: app.id, user: owner.id });
    let pool = createClient({ url: server.url, appKey: app.key });

    // Fill the pool: one long lease, two short ones that will pass their deadline while the
    // server is down, one more, then one queued behind them. "Short" is 5 s: the next three
    // calls must all be answered while the short leases still run (with 1 s, a stall of 1 s on a
    // busy machine let them expire first, and the "queued" call got a GPU at once).
    const long = await pool.acquire({ duration: 120, ipToken: token });
    const short1 = await pool.acquire({ duration: SHORT_S, ipToken: token });
    const short2 = await pool.acquire({ duration: SHORT_S, ipToken: token });
    const other = await pool.acquire({ duration: 120, ipToken: token });
    const queuedResponse = await fetch(`${server.url}/v1/leases`, {
      method: "POST",
      headers: { authorization: `Bearer ${app.key}`, "x-ip-token": token, "content-type": "application/json" },
      body: JSON.stringify({ duration: 60 }),
    });
    expect(queuedResponse.status).toBe(202);
    const queued = (await queuedResponse.json()) as { id: string };
    const before = await pool.quota({ ipToken: token });

    await server.stop("SIGKILL");
    server = null;
    // The two short leases pass their deadlines while it is down.
    const passed = Math.max(short1.deadline?.getTime() ?? 0, short2.deadline?.getTime() ?? 0) + 500;
    await new Promise((r) => setTimeout(r, Math.max(0, passed - Date.now())));

    server = await startServerBinary(["--storage", db], { GPUPOOL_ADMIN_TOKEN: ADMIN });
    pool = createClient({ url: server.url, appKey: app.key });

    const longAfter = await pool.lease(long.id);
    expect(longAfter.status).toBe("active");
    expect(longAfter.deadline?.getTime()).toBe(long.deadline?.getTime());
    expect(longAfter.device).toEqual(long.device);
    expect((await pool.lease(other.id)).status).toBe("active");

    for (const s of [short1, short2]) {
      const after = await pool.lease(s.id);
      expect(after.status).toBe("expired");
      expect(after.charged).toBe(SHORT_S); // the full reservation
    }
    // The two expired leases freed two slots: the queued lease got one of them.
    const q = await pool.lease(queued.id);
    expect(q.status).toBe("active");

    const quota = await pool.quota({ ipToken: token });
    // Reservations before: 120 + 5 + 5 + 120 + 60. After: the short ones became charges of 5 each.
    expect(before.reserved).toBe(300 + 2 * SHORT_S);
    expect(quota.reserved).toBe(300);
    expect(quota.used).toBe(before.used + 2 * SHORT_S);

    for (const id of [long.id, other.id, queued.id]) await pool.release(id);
    expect((await pool.quota({ ipToken: token })).reserved).toBe(0);
  });
});
