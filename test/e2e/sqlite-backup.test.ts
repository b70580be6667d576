import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "./binary.js";
import { Load, ReplicaSet, call, until } from "./pg-fault-kit.js";
import type { Acknowledged } from "./pg-fault-kit.js";
import { checkSqliteInvariants, liveLeases } from "./sqlite-invariants.js";

/**
 * `gpupool backup` while a server (the real binary, on SQLite) admits and releases under a mixed
 * load, then `gpupool restore` into a fresh directory and a fresh server on it: the ledger, lease
 * and wallet invariants hold in the backup as taken, and again once the new server's recovery has
 * settled the leases that were live in it; every lease acknowledged (201/202) before the backup
 * began is in it, with the status and charge the client was told; the running server never
 * noticed the backup (it keeps admitting, its own file stays consistent), and a restore over the
 * file it holds is refused.
 */

const ADMIN = "sqlite-backup-admin-token-0123456789";
const QUEUE_TIMEOUT_MS = 5_000;
const INVARIANTS = { quotaMs: { pro: 10 * 60_000 }, queueTimeoutMs: QUEUE_TIMEOUT_MS, graceMs: 15_000 };

const dir = mkdtempSync(join(tmpdir(), "gpupool-backup-"));
const sets: ReplicaSet[] = [];
let load: Load | null = null;

function writeConfig(file: string, db: string): string {
  writeFileSync(
    file,
    [
      "storage:",
      `  url: "sqlite:${db}"`,
      "quota:",
      "  tiers:",
      "    anonymous: { quota: 1m, priority: 1, max_duration: 60s }",
      "    pro: { quota: 10m, priority: 3, max_duration: 60s }",
      "queue:",
      `  timeout: ${QUEUE_TIMEOUT_MS / 1000}s`,
      // The load queues on purpose: queued leases must be in the backup too.
      "  predicted_wait: false",
      "pool:",
      "  simulated:",
      "    - { node: sim-0, gpus: 5 }",
      "log:",
      "  level: warn",
    ].join("\n"),
  );
  return file;
}

/** A copy of what the clients had been told at this moment (the load keeps updating its own map). */
function snapshot(acked: ReadonlyMap<string, Acknowledged>): Map<string, Acknowledged> {
  return new Map([...acked].map(([id, a]) => [id, { ...a }]));
}

afterAll(async () => {
  await load?.stop();
  for (const s of sets) await s.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

// Two servers, a load, three CLI runs and a recovery: far more than vitest's default on a loaded 2-core machine.
describe("SQLite backup under load, restored into a fresh server", { timeout: 300_000 }, () => {
  it("the backup holds every acknowledged lease and every ledger invariant, before and after the restored server recovers", async () => {
    const liveDb = join(dir, "live", "gpupool.db");
    mkdirSync(join(dir, "live"));
    const live = new ReplicaSet(writeConfig(join(dir, "live.yaml"), liveDb), { GPUPOOL_ADMIN_TOKEN: ADMIN });
    sets.push(live);
    const server = await live.start();
    await live.settled();
    const tokens: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await call(server.process.url, "POST", "/v1/admin/users", ADMIN, { name: `u${i}`, tier: "pro" });
      expect(r.status).toBe(201);
      tokens.push(r.body.token as string);
    }
    load = new Load(live, tokens, 8);
    load.start();
    // Enough history that the backup holds queued, active, released, cancelled and expired leases.
    await until("40 leases acknowledged", async () => load!.acked.size >= 40, 120_000);

    const before = snapshot(load.acked);
    const backupFile = join(dir, "gpupool-backup.db");
    const backup = await runCli(["backup", "--config", join(dir, "live.yaml"), "--to", backupFile]);
    expect(backup.stderr).toBe("");
    expect(backup.code).toBe(0);
    expect(backup.stdout).toMatch(/integrity ok/);
    // It holds the signing key and the tokens' hashes: readable by its owner only.
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);

    // The server was not paused or broken by it: it goes on admitting and releasing.
    const after = load.acked.size;
    await until("the live server admits after the backup", async () => load!.acked.size >= after + 20, 120_000);
    // A restore over the database a server holds is refused, naming it.
    const over = await runCli(["restore", "--from", backupFile, "--to", liveDb, "--force"]);
    expect(over.code).toBe(1);
    expect(over.stderr).toMatch(/held by a running gpupool server/);
    await load.stop();
    expect(live.crashes).toEqual([]);
    const liveReport = checkSqliteInvariants(liveDb, { ...INVARIANTS, acked: load.acked });
    expect(liveReport.violations, "the live database after the backup").toEqual([]);
    console.log(
      `backup under load: ${before.size} leases acknowledged before it, ${load.acked.size} by the end; answers ${JSON.stringify(load.summary())}; ${backup.stdout.trim()}`,
    );

    // Restored into a fresh directory: as it was backed up.
    const freshDb = join(dir, "fresh", "gpupool.db");
    mkdirSync(join(dir, "fresh"));
    const restore = await runCli(["restore", "--from", backupFile, "--to", freshDb]);
    expect(restore.stderr).toBe("");
    expect(restore.code).toBe(0);
    const restored = checkSqliteInvariants(freshDb, { ...INVARIANTS, acked: before });
    expect(restored.violations, "the backup as restored").toEqual([]);
    expect(restored.leases).toBeGreaterThanOrEqual(before.size);
    expect(liveLeases(freshDb), "the backup was taken with leases live").toBeGreaterThan(0);

    // A fresh server on it recovers the live leases as after a restart: each ends (expired at its
    // deadline, or timed out in the queue) and the ledgers still add up.
    const fresh = new ReplicaSet(writeConfig(join(dir, "fresh.yaml"), freshDb), { GPUPOOL_ADMIN_TOKEN: ADMIN });
    sets.push(fresh);
    const second = await fresh.start();
    await fresh.settled();
    await until("no lease left live after recovery", async () => liveLeases(freshDb) === 0, 120_000);
    const recovered = checkSqliteInvariants(freshDb, { ...INVARIANTS, acked: before });
    expect(recovered.violations, "the restored database after recovery").toEqual([]);
    // The restored users and their tokens work on the new server.
    const lease = await call(second.process.url, "POST", "/v1/leases", tokens[0]!, { duration: 1 });
    expect(lease.status).toBe(201);
    expect(fresh.crashes).toEqual([]);
  });

  it("restore refuses to replace a file without --force, a damaged backup, and a backup from a newer gpupool", async () => {
    const target = join(dir, "target.db");
    writeFileSync(target, "an existing file");
    const junk = join(dir, "junk.db");
    writeFileSync(junk, "not a database at all, but long enough to look like a file of some size".repeat(100));
    const exists = await runCli(["restore", "--from", junk, "--to", target]);
    expect(exists.code).toBe(2);
    expect(exists.stderr).toMatch(/exists; add --force/);
    const damaged = await runCli(["restore", "--from", junk, "--to", join(dir, "new.db")]);
    expect(damaged.code).toBe(1);
    expect(damaged.stderr).toMatch(/not a usable SQLite database/);

    // A real backup whose schema is one version ahead of this build.
    const Database = (await import("better-sqlite3")).default;
    const newer = join(dir, "newer.db");
    const db = new Database(newer);
    db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
    db.prepare("INSERT INTO schema_migrations VALUES (?, ?)").run(1_000, Date.now());
    db.close();
    const ahead = await runCli(["restore", "--from", newer, "--to", join(dir, "new.db")]);
    expect(ahead.code).toBe(1);
    expect(ahead.stderr).toMatch(/schema version 1000, newer than this gpupool knows/);

    // A backup of a WAL database whose server is stopped leaves no -wal/-shm behind (as root they
    // would be root's, and the server's own user could no longer open its database).
    const stopped = join(dir, "stopped.db");
    const wal = new Database(stopped);
    wal.pragma("journal_mode = WAL");
    wal.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)");
    wal.close();
    expect(existsSync(`${stopped}-wal`)).toBe(false);
    const copy = await runCli(["backup", "--storage", `sqlite:${stopped}`, "--to", join(dir, "stopped-backup.db")]);
    expect(copy.code).toBe(0);
    expect([existsSync(`${stopped}-wal`), existsSync(`${stopped}-shm`)]).toEqual([false, false]);

    const postgres = await runCli(["backup", "--storage", "postgres://u:p@127.0.0.1/db", "--to", join(dir, "pg.db")]);
    expect(postgres.code).toBe(2);
    expect(postgres.stderr).toMatch(/pg_dump/);
  });
});
