import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { ADMIN, serveAt, sleep, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * The disk the SQLite file is on fills up while a lease's deadline passes, then space comes back
 * (a small tmpfs, really filled). Nothing may be stranded: the lease whose expiry could not be
 * written expires (charged in full) as soon as the store accepts writes again, without any request
 * to prompt it, and its slot is not granted twice meanwhile.
 */

let mounted: string | null = null;
let t: TestServer | null = null;

afterEach(async () => {
  await t?.close().catch(() => undefined);
  t = null;
  if (mounted !== null) {
    execFileSync("umount", ["-l", mounted]);
    rmSync(mounted, { recursive: true, force: true });
    mounted = null;
  }
});

/** A tmpfs of `mb` megabytes (mounting one takes root). */
function smallDisk(mb: number): string {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-full-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${mb}m`, "tmpfs", dir], { stdio: "pipe" });
  } catch (err) {
    throw new Error(`This test fills a small tmpfs, and mounting one failed (it needs root): ${String(err)}`);
  }
  mounted = dir;
  return dir;
}

/** Checkpoints the database and truncates its write-ahead log to nothing. */
function truncateLog(db: string): void {
  const c = new Database(db);
  try {
    for (let i = 0; i < 50; i++) {
      const [row] = c.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
      if (row?.busy === 0) return;
    }
    throw new Error("could not truncate the write-ahead log");
  } finally {
    c.close();
  }
}

/** Fills the disk up to the last byte; returns the filler to delete. */
function fill(dir: string): string {
  const filler = join(dir, "filler");
  const chunk = Buffer.alloc(64 * 1024, 1);
  let size = 0;
  try {
    for (;;) {
      writeFileSync(filler, chunk, { flag: "a" });
      size += chunk.length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  }
  // The last bytes too, in smaller pieces.
  try {
    for (;;) writeFileSync(filler, Buffer.alloc(512, 1), { flag: "a" });
  } catch {
    /* full */
  }
  expect(size).toBeGreaterThan(0);
  return filler;
}

// Mounting a tmpfs takes root. CI runs as root and must run this; elsewhere, without root, it is
// left out (and says so), like the PostgreSQL suites without PostgreSQL.
const root = process.getuid?.() === 0;
if (!root && process.env["CI"] !== "true")
  console.warn("disk-full.test.ts: not root, so no tmpfs to fill: left out (CI runs it)");

describe.skipIf(!root && process.env["CI"] !== "true")("a full disk under SQLite", () => {
  it("strands no lease: an expiry that could not be written happens once space is back, and its slot is never granted twice", async () => {
    const disk = smallDisk(16);
    const dir = join(disk, "pool");
    t = await serveAt(
      dir,
      { pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] } },
      { storageUrl: `sqlite:${join(dir, "pool.db")}` },
    );
    const ada = await t.user("ada", "pro");
    const short = await t.call("POST", "/v1/leases", { token: ada.token, body: { duration: 1 } });
    expect(short.status).toBe(201);

    // SQLite would reuse the space its write-ahead log already has: empty the log first, so the
    // next commit needs new space (done through a connection of the test's own).
    truncateLog(join(dir, "pool.db"));
    const filler = fill(disk);
    // Readiness says so, and why, before anyone's write fails.
    const notReady = await t.call("GET", "/readyz");
    expect(notReady.status).toBe(503);
    expect(notReady.body).toMatchObject({ code: "storage_unavailable", reason: "disk_full" });
    // The deadline passes while nothing can be written.
    await sleep(1_500);
    const during = await t.call("POST", "/v1/leases", { token: ada.token, body: { duration: 5 } });
    expect(during.status).toBe(503);
    expect(during.body.code).toBe("storage_unavailable");

    rmSync(filler);
    // Nobody asks: the engine settles what came due by itself.
    await waitFor(
      async () => (await t!.call("GET", `/v1/leases/${short.body.id}`, { token: ada.token })).body.status === "expired",
      15_000,
      200,
    );
    expect((await t.call("GET", "/readyz")).status).toBe(200);
    const ended = (await t.call("GET", `/v1/leases/${short.body.id}`, { token: ada.token })).body;
    expect(ended).toMatchObject({ status: "expired", charged: 1, refunded: 0 });
    // The one slot is free again, and goes to one lease only.
    const next = await t.call("POST", "/v1/leases", { token: ada.token, body: { duration: 30, queue: false } });
    expect(next.status).toBe(201);
    const pool = (await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body;
    expect(pool.slots).toEqual({ total: 1, busy: 1 });
    expect(pool.active.map((l: { id: string }) => l.id)).toEqual([next.body.id]);
  });
});

describe("a SQLite database file deleted under a running server", () => {
  it("a database file deleted under a running server: readiness says so and no write is acknowledged any more (it would be lost at the next start)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-deleted-"));
    const db = join(dir, "pool.db");
    t = await serveAt(dir, {}, { storageUrl: `sqlite:${db}` });
    await t.user("ada", "pro");
    expect((await t.call("GET", "/readyz")).status).toBe(200);
    rmSync(db);
    const ready = await t.call("GET", "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
    const write = await t.call("POST", "/v1/admin/users", { token: ADMIN, body: { name: "bob" } });
    expect(write.status).toBe(503);
    expect(write.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
    expect(write.body.detail).toMatch(/deleted or replaced/);
  });
});
