import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { leaderLockKey } from "../src/storage/postgres/connections.js";
import { LeadershipLostError } from "../src/storage/store.js";
import type { Storage, Tx } from "../src/storage/store.js";
import { waitFor } from "./harness.js";

/**
 * Group commit on the PostgreSQL leader's session (PostgresCoordination.leaderStager): leader
 * transactions staged back to back share one transaction, each in a savepoint, and commit together.
 */

const user = (id: string) => ({
  id,
  name: `name-${id}`,
  tier: "free",
  tokenHash: `th-${id}`,
  quotaOverrideMs: null,
  createdAt: 1_000,
});
type Staged<T> = { value: T; committed: Promise<void> };

const opened: Storage[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => undefined)));
});

/** A leader on a fresh schema, and a second replica on it (which reads through its own pool). */
async function leaderAndReader(
  name: string,
): Promise<{ leader: Storage; reader: Storage; url: string; lost: Error[] }> {
  const url = freshPostgresUrl(name);
  const leader = await openStorage(url);
  const reader = await openStorage(url);
  opened.push(leader, reader);
  const lost: Error[] = [];
  await leader.coordination.lead((err) => lost.push(err));
  return { leader, reader, url, lost };
}

/**
 * Stages `fns` one after the other, each as soon as the previous one's value is there and without
 * waiting for its commit: what the lease engine does under load. Outcomes in order.
 */
async function stageBackToBack<T>(
  storage: Storage,
  fns: ((t: Tx) => Promise<T>)[],
): Promise<PromiseSettledResult<Staged<T>>[]> {
  const out: PromiseSettledResult<Staged<T>>[] = [];
  for (const fn of fns) {
    out.push(
      await storage.coordination.leaderStager.stage(fn).then(
        (value) => ({ status: "fulfilled" as const, value }),
        (reason: unknown) => ({ status: "rejected" as const, reason }),
      ),
    );
  }
  return out;
}

const fulfilled = <T>(r: PromiseSettledResult<Staged<T>> | undefined): Staged<T> => {
  if (r?.status !== "fulfilled")
    throw new Error(`expected a staged transaction, got ${r?.status === "rejected" ? String(r.reason) : "nothing"}`);
  return r.value;
};

const settle = (p: Promise<void>): Promise<string> =>
  p.then(
    () => "committed",
    (err: unknown) =>
      err instanceof LeadershipLostError
        ? "leadership_lost"
        : `failed: ${(err as { code?: string }).code ?? String(err)}`,
  );

describe.skipIf(!postgresUrl())("postgres leader: group commit", () => {
  it("a member's notifications go out with its writes and arrive at the group's COMMIT, in member order; a member rolled back sends none", async () => {
    const { leader, reader, lost } = await leaderAndReader("group-notes");
    const heard: string[] = [];
    await reader.coordination.subscribe("notes", (p) => heard.push(p));
    const staged = await stageBackToBack<string>(leader, [
      async (t) => (await t.publish!("notes", "1"), await t.users.insert(user("a")), "a"),
      async (t) => {
        await t.publish!("notes", "2");
        await t.users.insert(user("a")); // a duplicate: rolled back to its savepoint, its notification with it
        return "duplicate";
      },
      async (t) => (await t.publish!("notes", "3"), "3"),
      async (t) => {
        await t.publish!("notes", "4");
        throw new Error("changed my mind");
      },
      async (t) => (await t.publish!("notes", "5a"), await t.publish!("notes", "5b"), "5"),
    ]);
    expect(staged.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
    await Promise.all([0, 2, 4].map((i) => fulfilled(staged[i]).committed));
    await waitFor(async () => (heard.length >= 4 ? true : null), 5_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(heard).toEqual(["1", "3", "5a", "5b"]);
    expect(lost).toEqual([]);
  });

  it("transactions staged back to back run in one open transaction, see each other, and each hears of its commit", async () => {
    const { leader, reader } = await leaderAndReader("group-basic");
    let seenOutside: unknown = "not checked";
    let seenInside: unknown = null;
    const fns = Array.from({ length: 20 }, (_, i) => async (t: Tx) => {
      await t.users.insert(user(`u${i}`));
      if (i === 19) {
        // The first 19 already have their values, but their group has not committed yet.
        seenInside = await t.users.get("u0");
        seenOutside = await reader.store.transaction((r) => r.users.get("u0"));
      }
      return i;
    });
    const staged = await stageBackToBack(leader, fns);
    expect(staged.map((r) => fulfilled(r).value)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(seenInside).toMatchObject({ id: "u0" });
    expect(seenOutside).toBeNull();
    await Promise.all(staged.map((r) => fulfilled(r).committed));
    const users = await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }));
    expect(users.map((u) => u.id).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `u${i}`).sort());
  });

  it("concurrent callers each get their own value and commit", async () => {
    const { leader, reader } = await leaderAndReader("group-concurrent");
    const staged = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        leader.coordination.leaderStager.stage(async (t) => {
          await t.ledgers.put(`user:c${i}`, { windowStartedAt: i, usedMs: i * 10, reservedMs: 0, bonusMs: 0, runs: 1 });
          return (await t.ledgers.get(`user:c${i}`))?.usedMs;
        }),
      ),
    );
    expect(staged.map((s) => s.value)).toEqual(Array.from({ length: 30 }, (_, i) => i * 10));
    await Promise.all(staged.map((s) => s.committed));
    for (const i of [0, 17, 29])
      expect(await reader.store.transaction((r) => r.ledgers.get(`user:c${i}`))).toMatchObject({ usedMs: i * 10 });
  });

  it("a transaction that throws, or whose statement fails, is rolled back alone; the rest of its group commits", async () => {
    const { leader, reader, lost } = await leaderAndReader("group-failure");
    const staged = await stageBackToBack<string>(leader, [
      async (t) => (await t.users.insert(user("a")), "a"),
      async (t) => {
        await t.users.insert(user("thrown"));
        throw new Error("boom");
      },
      async (t) => (await t.users.insert(user("b")), "b"),
      // A duplicate key: the statement fails, and PostgreSQL would abort a transaction without a savepoint.
      async (t) => (await t.users.insert(user("b")), "duplicate"),
      async (t) => {
        // Sees what the group committed so far, not what was rolled back.
        expect(await t.users.get("thrown")).toBeNull();
        await t.users.insert(user("c"));
        return "c";
      },
    ]);
    expect(staged.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
    expect(staged[1]?.status === "rejected" && (staged[1].reason as Error).message).toBe("boom");
    expect(staged[3]?.status === "rejected" && (staged[3].reason as { code?: string }).code).toBe("23505");
    await Promise.all([0, 2, 4].map((i) => fulfilled(staged[i]).committed));
    const users = await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }));
    expect(users.map((u) => u.id).sort()).toEqual(["a", "b", "c"]);
    expect(lost).toEqual([]);
  });

  it("a ledger is read and locked once per group; a transaction rolled back takes its ledger changes with it", async () => {
    const { leader, reader } = await leaderAndReader("group-ledger");
    const ledger = (usedMs: number) => ({ windowStartedAt: 1, usedMs, reservedMs: 0, bonusMs: 0, runs: 1 });
    const staged = await stageBackToBack<number | null | undefined>(leader, [
      async (t) => (await t.ledgers.get("user:x"), await t.ledgers.put("user:x", ledger(100)), 100),
      async (t) => (await t.ledgers.get("user:x"))?.usedMs,
      async (t) => {
        await t.ledgers.get("user:x");
        await t.ledgers.put("user:x", ledger(999));
        await t.ledgers.put("user:y", ledger(5));
        throw new Error("undo");
      },
      async (t) => (await t.ledgers.get("user:x"))?.usedMs,
      async (t) => (await t.ledgers.get("user:y"))?.usedMs ?? null,
    ]);
    expect(staged.map((r) => (r.status === "fulfilled" ? r.value.value : (r.reason as Error).message))).toEqual([
      100,
      100,
      "undo",
      100,
      null,
    ]);
    await Promise.all([0, 1, 3, 4].map((i) => fulfilled(staged[i]).committed));
    expect(await reader.store.transaction((r) => r.ledgers.get("user:x"))).toMatchObject({ usedMs: 100 });
    expect(await reader.store.transaction((r) => r.ledgers.get("user:y"))).toBeNull();
  });

  it("a write the transaction did not wait for that fails while it runs fails it alone", async () => {
    const { leader, reader, lost } = await leaderAndReader("group-deferred-member");
    const tooMany = { windowStartedAt: 1, usedMs: 1, reservedMs: 0, bonusMs: 0, runs: 3_000_000_000 }; // runs is an INTEGER
    const staged = await stageBackToBack<string>(leader, [
      async (t) => (await t.users.insert(user("a")), "a"),
      async (t) => {
        await t.ledgers.get("user:bad");
        await t.ledgers.put("user:bad", tooMany);
        await t.users.insert(user("after-bad"));
        return "bad";
      },
      async (t) => (await t.users.insert(user("b")), "b"),
      // Throws before the failed write's answer comes: rolled back with it, still alone.
      async (t) => {
        await t.ledgers.get("user:bad2");
        await t.ledgers.put("user:bad2", tooMany);
        throw new Error("changed my mind");
      },
      async (t) => (await t.users.insert(user("c")), "c"),
    ]);
    expect(staged.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
    // The failed write's own error, not the "transaction is aborted" of the statement after it.
    expect(staged[1]?.status === "rejected" && (staged[1].reason as { code?: string }).code).toBe("22003");
    expect(staged[3]?.status === "rejected" && (staged[3].reason as Error).message).toBe("changed my mind");
    await Promise.all([0, 2, 4].map((i) => fulfilled(staged[i]).committed));
    expect(
      (await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 })))
        .map((u) => u.id)
        .sort(),
    ).toEqual(["a", "b", "c"]);
    expect(await reader.store.transaction((r) => r.ledgers.get("user:bad"))).toBeNull();
    expect(lost).toEqual([]);
  });

  it("a write that fails after its transaction finished fails the whole group, like a failed COMMIT; the next group works", async () => {
    const { leader, reader, lost } = await leaderAndReader("group-deferred-late");
    const tooMany = { windowStartedAt: 1, usedMs: 1, reservedMs: 0, bonusMs: 0, runs: 3_000_000_000 };
    const staged = await stageBackToBack<string>(leader, [
      async (t) => (await t.users.insert(user("a")), "a"),
      // Its last statement is a write nobody waits for: the transaction is over before the answer comes.
      async (t) => (await t.ledgers.get("user:bad"), await t.ledgers.put("user:bad", tooMany), "bad"),
      async (t) => (await t.users.insert(user("b")), "b"),
    ]);
    expect(staged[0]?.status).toBe("fulfilled");
    const outcomes = await Promise.all(
      staged.map((r) =>
        r.status === "fulfilled"
          ? settle(r.value.committed)
          : Promise.resolve(`rejected: ${(r.reason as { code?: string }).code}`),
      ),
    );
    expect(outcomes.every((o) => o.includes("22003"))).toBe(true);
    expect(await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }))).toEqual([]);
    // The session was rolled back and is the leader's still: the next group commits.
    await (
      await leader.coordination.leaderStager.stage((t) => t.users.insert(user("next")))
    ).committed;
    expect(
      (await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }))).map((u) => u.id),
    ).toEqual(["next"]);
    expect(lost).toEqual([]);
  });

  it("the leader session breaking fails the whole open group with LeadershipLostError; nothing of it is committed", async () => {
    const { leader, reader, url, lost } = await leaderAndReader("group-lost");
    await (
      await leader.coordination.leaderStager.stage((t) => t.users.insert(user("before")))
    ).committed;
    const schema = new URL(url).searchParams.get("schema")!;
    const admin = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined });
    try {
      const staged = await stageBackToBack<string>(leader, [
        async (t) => (await t.users.insert(user("g1")), "g1"),
        async (t) => (await t.users.insert(user("g2")), "g2"),
        async (t) => {
          // The leader's session ends while this transaction runs (as when the database restarts).
          await admin`
            SELECT pg_terminate_backend(pid) FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 1
              AND ((classid::bigint << 32) | objid::bigint) = ${leaderLockKey(schema)}::bigint`;
          await t.users.insert(user("g3"));
          return "g3";
        },
      ]);
      expect(staged.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected"]);
      expect(staged[2]?.status === "rejected" && staged[2].reason).toBeInstanceOf(LeadershipLostError);
      // It broke before any COMMIT was sent: the callers may be told nothing was changed.
      expect(staged[2]?.status === "rejected" && (staged[2].reason as LeadershipLostError).outcomeUnknown).toBe(false);
      expect(await Promise.all([0, 1].map((i) => settle(fulfilled(staged[i]).committed)))).toEqual([
        "leadership_lost",
        "leadership_lost",
      ]);
      await waitFor(() => lost.length === 1);
      expect(lost[0]).toBeInstanceOf(LeadershipLostError);
      await expect(leader.coordination.leaderStager.stage((t) => t.users.insert(user("after")))).rejects.toBeInstanceOf(
        LeadershipLostError,
      );
      // Another replica takes the lead and finds only what committed before.
      await reader.coordination.lead(() => undefined);
      const users = await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }));
      expect(users.map((u) => u.id)).toEqual(["before"]);
      await (
        await reader.coordination.leaderStager.stage((t) => t.users.insert(user("new-leader")))
      ).committed;
      // The old leader's store closes at once and still works for ordinary transactions.
      expect(await leader.store.transaction((t) => t.users.get("new-leader"))).toMatchObject({ id: "new-leader" });
      expect(lost).toHaveLength(1);
      const t0 = Date.now();
      await leader.close();
      // Not after one of the waits close() gives up after (2 s, 5 s: connections.ts): under
      // them, with room for a stalled machine (it was 1 s).
      expect(Date.now() - t0).toBeLessThan(1_900);
    } finally {
      await admin.end();
    }
  });

  it("close() lets the open group commit, then refuses leader work", async () => {
    const url = freshPostgresUrl("group-close");
    const leader = await openStorage(url);
    opened.push(leader);
    await leader.coordination.lead(() => undefined);
    const staged = await stageBackToBack(leader, [
      (t: Tx) => t.users.insert(user("x1")),
      (t: Tx) => t.users.insert(user("x2")),
    ]);
    const closing = leader.close();
    await expect(leader.coordination.leaderStager.stage((t) => t.users.insert(user("late")))).rejects.toBeInstanceOf(
      LeadershipLostError,
    );
    expect(await Promise.all(staged.map((r) => settle(fulfilled(r).committed)))).toEqual(["committed", "committed"]);
    const t0 = Date.now();
    await closing;
    // Not after one of the waits close() gives up after (2 s, 5 s: connections.ts): under
    // them, with room for a stalled machine (it was 1 s).
    expect(Date.now() - t0).toBeLessThan(1_900);
    const again = await openStorage(url);
    opened.push(again);
    expect(
      (await again.store.transaction((t) => t.users.page(null, { after: null, limit: 1_000 }))).map((u) => u.id).sort(),
    ).toEqual(["x1", "x2"]);
  });

  it("a long stream of leader transactions commits at least every 64 of them", async () => {
    const { leader, reader } = await leaderAndReader("group-bound");
    const seen: unknown[] = [];
    const fns = Array.from({ length: 140 }, (_, i) => async (t: Tx) => {
      await t.users.insert(user(`s${i}`));
      // From another connection: the first group (s0…s63) has committed by the time s70 runs.
      if (i === 70 || i === 63) seen.push(await reader.store.transaction((r) => r.users.get("s0")));
    });
    const staged = await stageBackToBack(leader, fns);
    expect(staged.every((r) => r.status === "fulfilled")).toBe(true);
    expect(seen[0]).toBeNull();
    expect(seen[1]).toMatchObject({ id: "s0" });
    await Promise.all(staged.map((r) => fulfilled(r).committed));
    expect(await reader.store.transaction((r) => r.users.page(null, { after: null, limit: 1_000 }))).toHaveLength(140);
  });
});
