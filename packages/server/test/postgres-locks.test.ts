import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { StorageUnavailableError } from "../src/storage/store.js";
import type { LeaseRecord, Storage, Tx } from "../src/storage/store.js";
import { sleep } from "./harness.js";
import { EMPTY_LEDGER, queuedLease } from "./store-fixtures.js";

/**
 * Lock order and deadlocks between replicas on one PostgreSQL schema: the leader's group and the
 * other replicas' transactions take an identity's advisory lock before any of its rows, so they
 * take turns instead of deadlocking; a plain transaction that PostgreSQL still fails as a deadlock
 * victim is run again; the leader's are not, and fail loudly (503) without taking others with them
 * unless the group cannot commit.
 */

const EMPTY = EMPTY_LEDGER;
const user = (id: string) => ({
  id,
  name: `name-${id}`,
  tier: "free",
  tokenHash: `th-${id}`,
  quotaOverrideMs: null,
  createdAt: 1_000,
});
const granted = (l: LeaseRecord): LeaseRecord => ({
  ...l,
  status: "active",
  node: "sim-0",
  deviceIndex: 0,
  deviceUuid: "GPU-0",
  deviceName: "sim",
  slotIndexes: [0],
  grantedAt: 6_000,
  deadline: 8_000,
  windowStartedAt: 6_000,
});

const opened: Storage[] = [];
const raw: postgres.Sql[] = [];
afterEach(async () => {
  await Promise.all(raw.splice(0).map((s) => s.end({ timeout: 1 })));
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => undefined)));
});

/** Two replicas of one fresh schema: the first leads. */
async function replicas(name: string): Promise<{ leader: Storage; follower: Storage; url: string }> {
  const url = freshPostgresUrl(name);
  const leader = await openStorage(url);
  const follower = await openStorage(url);
  opened.push(leader, follower);
  await leader.coordination.lead(() => undefined);
  return { leader, follower, url };
}

/** A session of our own on the schema that follows no lock order (an operator's SQL, say). */
function outsider(url: string): postgres.Sql {
  const schema = new URL(url).searchParams.get("schema")!;
  const sql = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
  raw.push(sql);
  return sql;
}

/**
 * Waits until some session waits for a lock that the session `pid` holds. The one that waits first
 * runs PostgreSQL's deadlock check first (deadlock_timeout after it started waiting), so it is the
 * one the check fails: a test that closes the cycle only after this knows which side that is.
 */
async function blockedBy(url: string, pid: number): Promise<void> {
  const watch = outsider(url);
  const giveUp = Date.now() + 30_000;
  for (;;) {
    const [row] = await watch<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE ${pid}::int = ANY (pg_blocking_pids(pid))`;
    if (row!.n > 0) return;
    if (Date.now() > giveUp) throw new Error(`no session waited for a lock of backend ${pid} within 30 s`);
    await sleep(10);
  }
}

function signal(): { wait: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const wait = new Promise<void>((r) => (fire = r));
  return { wait, fire };
}

describe.skipIf(!postgresUrl())("postgres lock order between replicas", () => {
  // A lease, its identity's lock and its ledger are read in one statement whose snapshot is taken
  // before the lock is granted: FOR UPDATE must still return what the transaction it waited for
  // committed, and a ledger that transaction inserted (not in the snapshot) must be read again.
  it("read-modify-writes of one lease and its ledger through leases.get from the leader's group, a follower's group and plain transactions at once lose nothing, from a ledger that did not exist", async () => {
    const { leader, follower } = await replicas("lease-ledger-rmw");
    const base = await follower.store.transaction((t) => t.leases.insert(queuedLease("ls-rmw", "rmw")));
    const step = async (t: Tx): Promise<void> => {
      const lease = await t.leases.get("ls-rmw");
      const ledger = (await t.ledgers.get("user:rmw")) ?? EMPTY;
      await sleep(2);
      await t.ledgers.put("user:rmw", { ...ledger, runs: ledger.runs + 1 });
      await t.leases.update({ ...base, ...lease!, chargedMs: lease!.chargedMs + 1 });
    };
    await Promise.all(
      Array.from({ length: 18 }, async (_, i) => {
        if (i % 3 === 0) return (await leader.coordination.leaderStager.stage(step)).committed;
        if (i % 3 === 1) return follower.store.groupedTransaction!(step);
        return follower.store.transaction(step);
      }),
    );
    const seen = await leader.store.transaction(async (t) => ({
      runs: (await t.ledgers.get("user:rmw"))?.runs,
      charged: (await t.leases.get("ls-rmw"))?.chargedMs,
    }));
    expect(seen).toEqual({ runs: 18, charged: 18 });
  });

  it("a follower cancelling a queued lease while the leader grants it (ledger locked first) takes turns with it: no deadlock, nothing run twice", async () => {
    const { leader, follower } = await replicas("lock-order");
    const queued = await follower.store.transaction(async (t) => {
      await t.ledgers.put("user:x", { ...EMPTY, reservedMs: 2_000, runs: 1 });
      return t.leases.insert(queuedLease("ls-b", "x"));
    });

    // The leader, releasing another lease of user x, grants the queued one: x's ledger, then the lease row.
    const leaderHolds = signal();
    const cancelSent = signal();
    const grant = leader.coordination.leaderStager.stage(async (t) => {
      const ledger = (await t.ledgers.get("user:x")) ?? EMPTY;
      leaderHolds.fire();
      await cancelSent.wait;
      // The follower's cancel is on its way (and, before the lock order, already held the lease row).
      await sleep(150);
      await t.ledgers.put("user:x", { ...ledger, windowStartedAt: 6_000 });
      await t.leases.update(granted(queued));
    });

    // The follower cancels that same lease: lease, then ledger — the leader's lock first, by leases.get.
    await leaderHolds.wait;
    let runs = 0;
    const t0 = Date.now();
    const cancel = follower.store.transaction(async (t) => {
      runs++;
      const pending = t.leases.get("ls-b");
      cancelSent.fire();
      const lease = await pending;
      const ledger = (await t.ledgers.get("user:x")) ?? EMPTY;
      await t.ledgers.put("user:x", {
        ...ledger,
        reservedMs: ledger.reservedMs - 1_000,
        usedMs: ledger.usedMs + 1_000,
      });
      return lease?.status;
    });

    await (
      await grant
    ).committed;
    // It read the lease only once the leader's grant was committed, so it saw it granted.
    expect(await cancel).toBe("active");
    expect(runs).toBe(1);
    // No side was a deadlock victim: the follower ran once (a victim is run again) and the grant
    // committed (the leader's is not retried, it fails). The time only bounds a hang; it is not
    // what is checked, so it is generous for a stalling machine (it was 900 ms, near the 150 ms
    // sleep plus a stall).
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await follower.store.transaction((t) => t.ledgers.get("user:x"))).toMatchObject({
      windowStartedAt: 6_000,
      reservedMs: 1_000,
      usedMs: 1_000,
    });
  });

  it("a plain transaction that PostgreSQL fails as a deadlock victim is run again, and both sides commit", async () => {
    const { follower: a, url } = await replicas("retry");
    const b = await openStorage(url);
    opened.push(b);
    const firstLocks = { a: signal(), b: signal() };
    const runs = { a: 0, b: 0 };
    // Two identities in opposite orders: outside the lock order, so a real deadlock.
    const cross = (storage: Storage, me: "a" | "b", first: string, second: string) =>
      storage.store.transaction(async (t) => {
        runs[me]++;
        const one = (await t.ledgers.get(first)) ?? EMPTY;
        if (runs[me] === 1) {
          firstLocks[me].fire();
          await firstLocks[me === "a" ? "b" : "a"].wait;
        }
        const two = (await t.ledgers.get(second)) ?? EMPTY;
        await t.ledgers.put(first, { ...one, runs: one.runs + 1 });
        await t.ledgers.put(second, { ...two, runs: two.runs + 1 });
      });
    await Promise.all([cross(a, "a", "user:p", "user:q"), cross(b, "b", "user:q", "user:p")]);
    expect(runs.a + runs.b).toBe(3);
    expect(
      await a.store.transaction(async (t) => [
        (await t.ledgers.get("user:p"))?.runs,
        (await t.ledgers.get("user:q"))?.runs,
      ]),
    ).toEqual([2, 2]);
  });

  it("a transaction that keeps failing as a deadlock victim is run 4 times, then is StorageUnavailableError (503) saying so; other errors are not retried", async () => {
    const { follower } = await replicas("retry-out");
    let runs = 0;
    const err: unknown = await follower.store
      .transaction(async (t) => {
        runs++;
        await t.ledgers.get("user:z");
        throw Object.assign(new Error("deadlock detected"), { code: "40P01" });
      })
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(runs).toBe(4);
    expect(err).toBeInstanceOf(StorageUnavailableError);
    expect((err as Error).message).toMatch(/deadlock.*4 times in a row.*nothing of it was changed/);

    runs = 0;
    await expect(
      follower.store.transaction(async (t) => {
        runs++;
        await t.users.insert(user("dup"));
        await t.users.insert(user("dup"));
      }),
    ).rejects.toMatchObject({ code: "23505" });
    expect(runs).toBe(1);
  });
});

describe.skipIf(!postgresUrl())("postgres leader group: a deadlock in it", () => {
  it("a leader transaction chosen as the deadlock victim is rolled back alone (503 for its caller); the rest of its group commits, the other side goes on", async () => {
    const { leader, follower, url } = await replicas("group-victim");
    await follower.store.transaction(async (t) => {
      await t.ledgers.put("user:a", EMPTY);
      await t.ledgers.put("user:b", EMPTY);
    });
    const other = outsider(url);
    const leaderHolds = signal();
    const otherHolds = signal();
    const before = leader.coordination.leaderStager.stage(async (t) => t.users.insert(user("before")));
    const victim = leader.coordination.leaderStager.stage(async (t) => {
      await t.ledgers.get("user:a");
      leaderHolds.fire();
      await otherHolds.wait;
      // Waits for the outsider's lock first, so PostgreSQL's deadlock check fails this side.
      await t.ledgers.get("user:b");
      await t.users.insert(user("victim"));
    });
    victim.catch(() => undefined);
    const after = leader.coordination.leaderStager.stage(async (t) => t.users.insert(user("after")));
    await leaderHolds.wait;
    const outside = other.begin(async (sql) => {
      const pid = (await sql<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid;
      // Rows only, no advisory locks: outside the lock order.
      await sql`SELECT * FROM ledgers WHERE identity = 'user:b' FOR UPDATE`;
      otherHolds.fire();
      // The leader waits for user:b first (not a fixed sleep: on a busy machine its statement could
      // arrive later, and then this side would be the victim).
      await blockedBy(url, pid);
      await sql`UPDATE ledgers SET runs = 7 WHERE identity = 'user:a'`;
    });

    const err: unknown = await victim.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageUnavailableError);
    expect((err as Error).message).toMatch(/deadlock/);
    await (
      await before
    ).committed;
    await (
      await after
    ).committed;
    await outside;
    const seen = await follower.store.transaction(async (t) => ({
      before: (await t.users.get("before"))?.id,
      victim: await t.users.get("victim"),
      after: (await t.users.get("after"))?.id,
      a: (await t.ledgers.get("user:a"))?.runs,
    }));
    expect(seen).toEqual({ before: "before", victim: null, after: "after", a: 7 });
  });

  it("a write the leader did not wait for, failed by a deadlock after its transaction ran, fails the whole group loudly (503 for every member, nothing committed); the next group works", async () => {
    const { leader, follower, url } = await replicas("group-late");
    const queued = await follower.store.transaction(async (t) => {
      await t.ledgers.put("user:x", { ...EMPTY, reservedMs: 2_000 });
      return t.leases.insert(queuedLease("ls-late", "x"));
    });
    // An outsider locks the lease row without the identity's advisory lock (outside the lock order).
    const other = outsider(url);
    const rowHeld = signal();
    const release = signal();
    let outsiderPid = 0;
    const outside = other.begin(async (sql) => {
      outsiderPid = (await sql<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]!.pid;
      await sql`SELECT * FROM leases WHERE id = 'ls-late' FOR UPDATE`;
      rowHeld.fire();
      await release.wait;
      await sql`SELECT * FROM ledgers WHERE identity = 'user:x' FOR UPDATE`;
    });
    await rowHeld.wait;

    const first = await leader.coordination.leaderStager.stage(async (t) => t.users.insert(user("g1")));
    const grant = await leader.coordination.leaderStager.stage(async (t) => {
      const ledger = (await t.ledgers.get("user:x")) ?? EMPTY;
      await t.ledgers.put("user:x", { ...ledger, windowStartedAt: 6_000 });
      // Not waited for (group commit): it waits for the outsider's row lock after this returns.
      await t.leases.update(granted(queued));
      return "staged";
    });
    expect(grant.value).toBe("staged");
    // The leader's write waits first, so PostgreSQL's deadlock check fails it. Not a fixed sleep:
    // on a busy machine the write could reach PostgreSQL later, and then the outsider was the victim.
    await blockedBy(url, outsiderPid);
    release.fire();

    const outcomes = await Promise.all(
      [first.committed, grant.committed].map((p) =>
        p.then(
          () => null,
          (e: unknown) => e,
        ),
      ),
    );
    for (const err of outcomes) {
      expect(err).toBeInstanceOf(StorageUnavailableError);
      expect((err as Error).message).toMatch(/group of 2 transactions cannot commit: all of them were rolled back/);
    }
    await outside;
    expect(
      await follower.store.transaction(async (t) => ({
        g1: await t.users.get("g1"),
        lease: (await t.leases.get("ls-late"))?.status,
      })),
    ).toEqual({ g1: null, lease: "queued" });
    await (
      await leader.coordination.leaderStager.stage(async (t) => t.users.insert(user("g2")))
    ).committed;
    expect(await follower.store.transaction((t) => t.users.get("g2"))).toMatchObject({ id: "g2" });
  });
});
