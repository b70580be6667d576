import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { runCli, startServerBinary } from "./binary.js";
import type { ServerProcess } from "./binary.js";

/**
 * One server process per SQLite file: each keeps its own caches and its own pool in memory, so a
 * second one on the same file would double-book slots and over-reserve quota. The second must
 * refuse to start, before it touches the database, and say who holds it.
 */

const ADMIN = "single-server-admin-token";
let dir: string;
const running: ServerProcess[] = [];

afterEach(async () => {
  for (const s of running.splice(0)) await s.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

// Each test starts several server processes: more than the default 30 s on a loaded 2-core CI machine.
describe("one server per SQLite file", { timeout: 90_000 }, () => {
  it("a second server on the same file exits 1 naming the file and the first one's pid; after a kill -9 a new one starts at once", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-single-"));
    const db = join(dir, "pool.db");
    const env = { GPUPOOL_ADMIN_TOKEN: ADMIN };
    const first = await startServerBinary(["--storage", `sqlite:${db}`], env);
    running.push(first);
    const created = await fetch(`${first.url}/v1/admin/users`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "ada", tier: "pro" }),
    });
    expect(created.status).toBe(201);

    const second = await runCli(["server", "--port", "0", "--storage", `sqlite:${db}`], env);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(db);
    expect(second.stderr).toContain(`pid ${first.child.pid}`);
    expect(second.stderr).toMatch(/One server process per SQLite file/);
    // It never got as far as the database: the first server still serves what it had.
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    const users = await fetch(`${first.url}/v1/admin/users`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(((await users.json()) as { users: unknown[] }).users).toHaveLength(1);

    // The lock dies with its process: a restart right after a kill -9 finds the file free.
    await first.stop("SIGKILL");
    running.splice(running.indexOf(first), 1);
    const third = await startServerBinary(["--storage", `sqlite:${db}`], env);
    running.push(third);
    const after = await fetch(`${third.url}/v1/admin/users`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(((await after.json()) as { users: unknown[] }).users).toHaveLength(1);
    // Who holds the file is written beside it while it is held.
    expect(existsSync(`${db}.lock.holder`)).toBe(true);
  });

  it("a server whose port is taken fails before it restores anything from its database", async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-single-"));
    const db = join(dir, "pool.db");
    const env = { GPUPOOL_ADMIN_TOKEN: ADMIN };
    // A lease whose deadline passes while no server runs: the next recovery expires it.
    const first = await startServerBinary(["--storage", `sqlite:${db}`], env);
    running.push(first);
    const auth = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };
    const user = (await (
      await fetch(`${first.url}/v1/admin/users`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({ name: "ada", tier: "pro" }),
      })
    ).json()) as { token: string };
    const lease = (await (
      await fetch(`${first.url}/v1/leases`, {
        method: "POST",
        headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
        body: JSON.stringify({ duration: 1 }),
      })
    ).json()) as { id: string; status: string };
    expect(lease.status).toBe("active");
    await first.stop("SIGKILL");
    running.splice(running.indexOf(first), 1);
    await new Promise((resolve) => setTimeout(resolve, 1_200));

    // Another server holds the port.
    const other = await startServerBinary(["--storage", `sqlite:${join(dir, "other.db")}`], env);
    running.push(other);
    const port = new URL(other.url).port;
    const refused = await runCli(["server", "--port", port, "--storage", `sqlite:${db}`], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/already in use/);
    // Nothing was recovered: the lease is still active in the database, as the killed server left it.
    const raw = new Database(db, { readonly: true });
    expect((raw.prepare("SELECT status FROM leases WHERE id = ?").get(lease.id) as { status: string }).status).toBe(
      "active",
    );
    raw.close();

    // On a free port, recovery runs: the lease expires, charged in full.
    const third = await startServerBinary(["--storage", `sqlite:${db}`], env);
    running.push(third);
    const after = (await (
      await fetch(`${third.url}/v1/leases/${lease.id}`, { headers: { authorization: `Bearer ${user.token}` } })
    ).json()) as { status: string };
    expect(after.status).toBe("expired");
  });
});
