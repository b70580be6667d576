import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/storage/sqlite/sqlite-store.js";

/** What only the SQLite adapter promises, beyond the storage contract. */
describe("SQLite store", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const migrated = async (): Promise<string> => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-sqlite-"));
    dirs.push(dir);
    const path = join(dir, "gpupool.db");
    const store = new SqliteStore(`sqlite:${path}`);
    await store.migrate();
    await store.close();
    return path;
  };

  it("lists a user's leases through the index of users' leases, and keeps no index of other identities' leases", async () => {
    const db = new Database(await migrated(), { readonly: true });
    try {
      const plan = db
        .prepare(
          "EXPLAIN QUERY PLAN SELECT * FROM leases WHERE identity_kind = 'user' AND identity_id = ? ORDER BY seq DESC LIMIT ?",
        )
        .all("u1", 50) as { detail: string }[];
      expect(plan.map((p) => p.detail).join(" ")).toMatch(/USING INDEX leases_user/);
      const indexes = (
        db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'leases'").all() as {
          name: string;
        }[]
      ).map((r) => r.name);
      // An admission for an ip or app identity writes no page of a per-identity index.
      expect(indexes).not.toContain("leases_identity");
    } finally {
      db.close();
    }
  });

  it("under a steady stream of commits the WAL is restarted between commit groups, never while a write waits for it", async () => {
    const path = await migrated();
    // A write that met the restart's lock would fail at once (no busy wait), and the log is
    // restarted past 32 frames instead of 16,384.
    const store = new SqliteStore(`sqlite:${path}`, { restartFrames: 32, intervalMs: 50, busyTimeoutMs: 0 });
    try {
      let failed = 0;
      let written = 0;
      // Until the log was restarted a few times (when depends on how the checkpointer's ticks fall).
      const writer = async (w: number) => {
        for (let i = 0; store.walRestarts < 3 && i < 20_000; i++)
          await store
            .transaction((t) =>
              t.ledgers.put(`ip:10.${w}.${i}.1`, { windowStartedAt: 1, usedMs: i, reservedMs: 0, bonusMs: 0, runs: 1 }),
            )
            .then(
              () => written++,
              () => failed++,
            );
      };
      await Promise.all(Array.from({ length: 8 }, (_, w) => writer(w)));
      expect(failed).toBe(0);
      expect(store.walRestarts).toBeGreaterThanOrEqual(3);
      await store.close();
      // Every write is there.
      const db = new Database(path, { readonly: true });
      expect(db.prepare("SELECT COUNT(*) AS n FROM ledgers").get()).toEqual({ n: written });
      db.close();
    } finally {
      await store.close();
    }
  });

  it("a staged transaction that throws after writing rolls back its whole commit group; the others hear it through `committed`, the next group commits", async () => {
    const path = await migrated();
    const store = new SqliteStore(`sqlite:${path}`);
    const user = (id: string) => ({
      id,
      name: id,
      tier: "free",
      tokenHash: `h-${id}`,
      quotaOverrideMs: null,
      createdAt: 1,
    });
    try {
      // Staged in one turn: one commit group (see SqliteStore.stage).
      const [before, bad, after] = await Promise.allSettled([
        store.stager.stage((t) => t.users.insert(user("before"))),
        store.stager.stage(async (t) => {
          await t.users.insert(user("bad"));
          throw new Error("fails after writing");
        }),
        store.stager.stage((t) => t.users.insert(user("after"))),
      ]);
      expect(bad.status).toBe("rejected");
      // Staged before the failure: in its group, rolled back with it, told so through `committed`.
      expect(before.status).toBe("fulfilled");
      await expect((before as PromiseFulfilledResult<{ committed: Promise<void> }>).value.committed).rejects.toThrow(
        "fails after writing",
      );
      // Staged after it: a new group, committed.
      expect(after.status).toBe("fulfilled");
      await (after as PromiseFulfilledResult<{ committed: Promise<void> }>).value.committed;
      expect(
        (await store.transaction((t) => t.users.page(null, { after: null, limit: 1_000 }))).map((u) => u.id),
      ).toEqual(["after"]);
    } finally {
      await store.close();
    }
  });

  it("transactions staged together run in the order they were staged, and close still commits them", async () => {
    const path = await migrated();
    const store = new SqliteStore(`sqlite:${path}`);
    const order: number[] = [];
    const user = (i: number) => ({
      id: `u${i}`,
      name: `user${i}`,
      tier: "free",
      tokenHash: `h${i}`,
      quotaOverrideMs: null,
      createdAt: i,
    });
    // Not awaited: all five wait for the same turn's group commit, then close is asked for at once.
    const staged = [1, 2, 3, 4, 5].map((i) =>
      store.transaction(async (t) => {
        order.push(i);
        await t.users.insert(user(i));
      }),
    );
    const closed = store.close();
    await Promise.all(staged);
    await closed;
    expect(order).toEqual([1, 2, 3, 4, 5]);
    const reopened = new SqliteStore(`sqlite:${path}`);
    try {
      expect(
        (await reopened.transaction((t) => t.users.page(null, { after: null, limit: 1_000 }))).map((u) => u.id),
      ).toEqual(["u1", "u2", "u3", "u4", "u5"]);
    } finally {
      await reopened.close();
    }
  });
});
