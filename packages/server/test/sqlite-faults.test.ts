import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { scopedKeys, toldFailure } from "../../../test/e2e/pg-fault-kit.js";
import type { Acknowledged, ToldFailed } from "../../../test/e2e/pg-fault-kit.js";
import { checkSqliteInvariants, liveLeases } from "../../../test/e2e/sqlite-invariants.js";
import { ADMIN, serveAt, sleep, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * The disk the SQLite file is on fills up while a lease's deadline passes, then space comes back
 * (a small tmpfs, really filled). Nothing may be stranded: the lease whose expiry could not be
 * written expires (charged in full) as soon as the store accepts writes again, without any request
 * to prompt it, and its slot is not granted twice meanwhile. Under a small load the same holds for
 * queue timeouts and grants from the queue, checked with the fault suite's invariants
 * (sqlite-invariants.ts). And a file deleted, replaced or damaged under the server: writes stop
 * with a clear error and readiness says so.
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

/**
 * A small bounded load on an in-process server: `workers` loops admitting 1 s leases (each with an
 * Idempotency-Key of its own; half may wait 1 s in the queue, half 10 s) and leaving every one to
 * expire or to time out in the queue. It keeps what the clients were told, as pg-fault-kit's Load does.
 */
class SmallLoad {
  readonly acked = new Map<string, Acknowledged>();
  readonly toldFailed: ToldFailed[] = [];
  readonly statuses = new Map<number, number>();
  /** Each acknowledged lease's max_wait, in seconds. */
  readonly maxWaitS = new Map<string, number>();
  requests = 0;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly server: TestServer,
    private readonly tokens: readonly string[],
    private readonly workers = 4,
  ) {}

  start(): void {
    this.running = true;
    this.loops = Array.from({ length: this.workers }, (_, i) => this.loop(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private async loop(worker: number): Promise<void> {
    for (let n = 0; this.running; n++) {
      const token = this.tokens[(worker + n) % this.tokens.length]!;
      const key = randomUUID();
      const maxWait = n % 2 === 0 ? 1 : 10;
      const r = await this.server.call("POST", "/v1/leases", {
        token,
        body: { duration: 1, max_wait: maxWait },
        headers: { "idempotency-key": key },
      });
      this.requests++;
      this.statuses.set(r.status, (this.statuses.get(r.status) ?? 0) + 1);
      if (toldFailure(r))
        this.toldFailed.push({ key, token, status: r.status, code: r.body?.code, reason: r.body?.reason });
      if (r.status === 201 || r.status === 202) {
        this.acked.set(r.body.id, { id: r.body.id, status: r.body.status, charged: null, key: { key, token } });
        this.maxWaitS.set(r.body.id, maxWait);
      }
      await sleep(150 + Math.random() * 250);
    }
  }
}

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

/** Overwrites with garbage every page of `table` and of its indexes (found with dbstat); returns how many. */
function damagePages(db: string, table: string): number {
  const c = new Database(db, { readonly: true });
  const pageSize = (c.pragma("page_size") as { page_size: number }[])[0]!.page_size;
  const pages = c
    .prepare(
      "SELECT pageno FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name = ?) ORDER BY pageno",
    )
    .all(table) as { pageno: number }[];
  c.close();
  const fd = openSync(db, "r+");
  try {
    for (const { pageno } of pages) writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, (pageno - 1) * pageSize);
  } finally {
    closeSync(fd);
  }
  return pages.length;
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

  it("under a small load: leases expiring, timing out in the queue and granted from it while no write commits; afterwards every invariant holds and nothing is stranded", async () => {
    const disk = smallDisk(16);
    const dir = join(disk, "pool");
    const db = join(dir, "pool.db");
    t = await serveAt(
      dir,
      {
        pool: { simulated: [{ node: "sim-0", gpus: 3, slots_per_gpu: 1 }] },
        quota: {
          tiers: {
            anonymous: { quota: "1m", priority: 1, max_duration: "60s" },
            pro: { quota: "10m", priority: 3, max_duration: "60s" },
          },
        },
        queue: { timeout: "10s", predicted_wait: false },
      },
      { storageUrl: `sqlite:${db}` },
    );
    const users = await Promise.all([0, 1, 2, 3].map((i) => t!.user(`load${i}`, "pro")));
    const userOf = new Map(users.map((u) => [u.token, u.id]));
    const load = new SmallLoad(
      t,
      users.map((u) => u.token),
    );

    load.start();
    await sleep(2_500);
    // Quiet for a moment: the log is emptied (see truncateLog) and the disk filled, then the load goes on.
    await load.stop();
    truncateLog(db);
    const filler = fill(disk);
    const fullAt = Date.now();
    load.start();
    await sleep(3_000);
    rmSync(filler);
    const freeAt = Date.now();
    await sleep(2_500);
    await load.stop();

    // Every lease ends by itself (1 s leases, at most 10 s in the queue): none is left live.
    await waitFor(async () => liveLeases(db) === 0, 30_000, 250);
    const keys = scopedKeys(load, (token) => userOf.get(token)!);
    const report = checkSqliteInvariants(db, {
      quotaMs: { pro: 10 * 60_000 },
      queueTimeoutMs: 10_000,
      graceMs: 5_000,
      acked: load.acked,
      toldFailed: keys.toldFailed,
      keysMade: keys.made,
    });
    // What came due while nothing could be written, and was settled once space was back.
    const during = (at: number | null): boolean => at !== null && at >= fullAt && at < freeAt;
    const rows = new Database(db, { readonly: true })
      .prepare("SELECT id, status, problem_code, queued_at, granted_at, deadline FROM leases")
      .all() as {
      id: string;
      status: string;
      problem_code: string | null;
      queued_at: number;
      granted_at: number | null;
      deadline: number | null;
    }[];
    const expiredDuring = rows.filter((l) => l.status === "expired" && during(l.deadline)).length;
    const timedOutDuring = rows.filter(
      (l) => l.problem_code === "queue_timeout" && during(l.queued_at + (load.maxWaitS.get(l.id) ?? 10) * 1000),
    ).length;
    const grantedAfterWaiting = rows.filter(
      (l) => l.granted_at !== null && l.granted_at > l.queued_at && l.queued_at < fullAt && l.granted_at >= freeAt,
    ).length;
    console.log(
      `sqlite-faults: ${JSON.stringify({
        faults: 1,
        requests: load.requests,
        statuses: Object.fromEntries(load.statuses),
        acknowledgedLeases: load.acked.size,
        leasesInDatabase: report.leases,
        admissionsToldFailed: load.toldFailed.length,
        expiredDuringFault: expiredDuring,
        queueTimeoutsDuringFault: timedOutDuring,
        grantedFromQueueAfterFault: grantedAfterWaiting,
        violations: report.violations.length,
        stuckLeases: liveLeases(db) + report.stuckQueued.length,
      })}`,
    );
    expect(report.violations).toEqual([]);
    expect(report.stuckQueued).toEqual([]);
    expect(load.statuses.get(503) ?? 0, "admissions refused while the disk was full").toBeGreaterThan(0);
    expect(expiredDuring, "leases whose deadline passed during the fault").toBeGreaterThanOrEqual(2);
    expect(timedOutDuring, "queue timeouts during the fault").toBeGreaterThanOrEqual(1);
    expect(grantedAfterWaiting, "leases queued before the fault, granted once space was back").toBeGreaterThanOrEqual(
      1,
    );
    expect((await t.call("GET", "/readyz")).status).toBe(200);
  }, 90_000);
});

/** Readiness says the database file is gone, and a write is refused with a detail matching `detail`. */
async function expectFileLost(detail: RegExp): Promise<void> {
  if (t === null) throw new Error("no server");
  const ready = await t.call("GET", "/readyz");
  expect(ready.status).toBe(503);
  expect(ready.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
  const write = await t.call("POST", "/v1/admin/users", { token: ADMIN, body: { name: "bob" } });
  expect(write.status).toBe(503);
  expect(write.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
  expect(write.body.detail).toMatch(detail);
}

describe("a SQLite database file deleted under a running server", () => {
  it("a database file deleted under a running server: readiness says so and no write is acknowledged any more (it would be lost at the next start)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-deleted-"));
    const db = join(dir, "pool.db");
    t = await serveAt(dir, {}, { storageUrl: `sqlite:${db}` });
    await t.user("ada", "pro");
    expect((await t.call("GET", "/readyz")).status).toBe(200);
    rmSync(db);
    await expectFileLost(/deleted or replaced/);
  });
});

describe("a SQLite database file replaced or damaged under a running server", () => {
  it("replaced by another database (a new inode at its path): readiness says so and no write is acknowledged any more", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-replaced-"));
    const db = join(dir, "pool.db");
    t = await serveAt(dir, {}, { storageUrl: `sqlite:${db}` });
    await t.user("ada", "pro");
    expect((await t.call("GET", "/readyz")).status).toBe(200);
    // A valid database, moved over the path (as a restore by hand, or a copy from elsewhere, would).
    const other = join(dir, "other.db");
    new Database(other).exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    renameSync(other, db);
    await expectFileLost(/replaced/);
  });

  it("with its pages overwritten by garbage: the write that finds it fails with a clear error, readiness says not ready, and no later write is acknowledged", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-corrupt-"));
    const db = join(dir, "pool.db");
    t = await serveAt(dir, {}, { storageUrl: `sqlite:${db}` });
    const ada = await t.user("ada", "pro");
    expect((await t.call("POST", "/v1/leases", { token: ada.token, body: { duration: 5 } })).status).toBe(201);
    expect((await t.call("GET", "/readyz")).status).toBe(200);
    // Everything in the main file (the log emptied into it), then the users table's pages and its
    // indexes' overwritten: the other tables still read.
    truncateLog(db);
    const pages = damagePages(db, "users");
    expect(pages).toBeGreaterThan(0);
    const write = await t.call("POST", "/v1/admin/users", { token: ADMIN, body: { name: "bob" } });
    expect(write.status).toBe(503);
    expect(write.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
    expect(write.body.detail).toMatch(/damaged/);
    const ready = await t.call("GET", "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
    // A write that reads none of those pages is not acknowledged either: the file is not to be trusted.
    const lease = await t.call("POST", "/v1/leases", { token: ada.token, body: { duration: 5 } });
    expect(lease.status).toBe(503);
    expect(lease.body).toMatchObject({ code: "storage_unavailable", reason: "database_missing" });
    expect((await t.call("GET", "/readyz")).status).toBe(503);
  });
});
