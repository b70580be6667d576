import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { lockSpace } from "../src/storage/postgres/connections.js";
import type { Storage, Tx } from "../src/storage/store.js";
import { sleep } from "./harness.js";
import { EMPTY_LEDGER, queuedLease } from "./store-fixtures.js";

/**
 * The leader's read-ahead (storage/postgres/read-ahead.ts): while leader transactions wait for
 * their turn on the leader's session, the open group tries their identities' locks and reads their
 * ledgers and leases in one statement, so its members find them instead of waiting a round trip
 * each. Here: it never waits for a lock another replica holds, a wrong hint changes no answer, and
 * a member rolled back to its savepoint leaves the locks read ahead held and the rows read again.
 */

const EMPTY = EMPTY_LEDGER;

const opened: Storage[] = [];
const raw: postgres.Sql[] = [];
afterEach(async () => {
  await Promise.all(raw.splice(0).map((s) => s.end({ timeout: 1 })));
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => undefined)));
});

/** A leader and a follower on a fresh schema, the ledgers `identities` stored empty, and `tryLock`: whether another session could take an identity's lock now. */
async function replicas(name: string, identities: string[]) {
  const url = freshPostgresUrl(name);
  const leader = await openStorage(url);
  const follower = await openStorage(url);
  opened.push(leader, follower);
  await leader.coordination.lead(() => undefined);
  for (const identity of identities)
    await follower.store.transaction(async (t) => {
      await t.ledgers.get(identity);
      await t.ledgers.put(identity, EMPTY);
    });
  const schema = new URL(url).searchParams.get("schema")!;
  const outsider = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
  raw.push(outsider);
  const space = lockSpace("ledger", schema);
  const tryLock = async (identity: string): Promise<boolean> =>
    (
      await outsider<{ ok: boolean }[]>`SELECT pg_try_advisory_xact_lock(${space}::int4, hashtext(${identity})) AS ok`
    )[0]!.ok;
  const stager = leader.coordination.leaderStager;
  const expectHint = (hint: { ledger: string } | { lease: string }) => stager.expect!(hint);
  return { leader, follower, stager, expectHint, tryLock };
}

/** A leader transaction that adds one run to `identity`'s ledger and returns the runs it found. */
const bump =
  (identity: string) =>
  async (t: Tx): Promise<number> => {
    const ledger = (await t.ledgers.get(identity)) ?? EMPTY;
    await t.ledgers.put(identity, { ...ledger, runs: ledger.runs + 1 });
    return ledger.runs;
  };

function signal(): { wait: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const wait = new Promise<void>((r) => (fire = r));
  return { wait, fire };
}

describe.skipIf(!postgresUrl())("postgres leader: reading ahead for waiting transactions", () => {
  it("two identities read ahead while a follower's transaction holds one: the other's transaction waits for nothing, the held one's takes its turn and loses no update", async () => {
    const { leader, follower, stager, expectHint, tryLock } = await replicas("read-ahead-held", ["user:a", "user:b"]);
    const held = signal();
    const release = signal();
    const followerTx = follower.store.transaction(async (t) => {
      const ledger = (await t.ledgers.get("user:b"))!;
      held.fire();
      await release.wait;
      await t.ledgers.put("user:b", { ...ledger, runs: ledger.runs + 1 });
    });
    await held.wait;
    const doneA = expectHint({ ledger: "user:a" });
    const doneB = expectHint({ ledger: "user:b" });
    // Both are read ahead before the first runs: a's lock is got, b's is the follower's (tried,
    // not waited for: a read-ahead that waited would hold the first transaction up until the
    // follower commits, or fail it with lock_timeout).
    const first = await stager.stage(bump("user:a"));
    doneA();
    const second = stager.stage(bump("user:b")).finally(doneB);
    expect(await tryLock("user:a")).toBe(false); // the leader's group holds it until its COMMIT
    release.fire();
    await followerTx;
    const b = await second;
    expect([first.value, b.value]).toEqual([0, 1]); // b read after the follower's commit, not from the read-ahead
    await Promise.all([first.committed, b.committed]);
    expect(await tryLock("user:a")).toBe(true);
    const after = await leader.store.read(async (t) => [
      (await t.ledgers.get("user:a"))?.runs,
      (await t.ledgers.get("user:b"))?.runs,
    ]);
    expect(after).toEqual([1, 2]);
  });

  it("a wrong hint changes no answer: the transaction reads what it reads, the identity hinted stays locked until the group commits, a missing lease is no error", async () => {
    const { leader, stager, expectHint, tryLock } = await replicas("read-ahead-wrong", ["user:x", "user:y"]);
    const doneX = expectHint({ ledger: "user:x" });
    const doneL = expectHint({ lease: "ls-nowhere" });
    let lockedMeanwhile: boolean | null = null;
    const staged = await stager.stage(async (t) => {
      const runs = await bump("user:y")(t);
      lockedMeanwhile = await tryLock("user:x");
      return runs;
    });
    doneX();
    doneL();
    await staged.committed;
    expect(lockedMeanwhile).toBe(false);
    expect(await tryLock("user:x")).toBe(true);
    const after = await leader.store.read(async (t) => [
      (await t.ledgers.get("user:x"))?.runs,
      (await t.ledgers.get("user:y"))?.runs,
    ]);
    expect(after).toEqual([0, 1]);
  });

  it("a lease read ahead and then changed by an earlier transaction of the group is read as changed", async () => {
    const { leader, follower, stager, expectHint } = await replicas("read-ahead-changed", ["user:l"]);
    const base = await follower.store.transaction((t) => t.leases.insert(queuedLease("ls-l", "l")));
    const done = expectHint({ lease: "ls-l" });
    // The first transaction changes the lease without reading it (its group holds its lock, read ahead for the second).
    const first = await stager.stage((t) => t.leases.update({ ...base, chargedMs: 5 }));
    const second = await stager.stage(async (t) => (await t.leases.get("ls-l"))?.chargedMs);
    done();
    await Promise.all([first.committed, second.committed]);
    expect(second.value).toBe(5);
    expect(await leader.store.read(async (t) => (await t.leases.get("ls-l"))?.chargedMs)).toBe(5);
  });

  it("a transaction rolled back to its savepoint: the locks read ahead stay the group's, what was read ahead is read again, nothing it wrote is kept", async () => {
    const { leader, stager, expectHint, tryLock } = await replicas("read-ahead-rollback", ["user:c", "user:d"]);
    const done = [
      expectHint({ ledger: "user:c" }),
      expectHint({ ledger: "user:c" }),
      expectHint({ ledger: "user:c" }),
      expectHint({ ledger: "user:d" }),
    ];
    const first = await stager.stage(bump("user:c"));
    done[0]!();
    const failed = await stager
      .stage(async (t) => {
        const ledger = (await t.ledgers.get("user:c"))!;
        await t.ledgers.put("user:c", { ...ledger, runs: ledger.runs + 10 });
        throw new Error("the caller's rule says no");
      })
      .then(
        () => "staged",
        (err: unknown) => (err as Error).message,
      );
    done[1]!();
    let dLocked: boolean | null = null;
    const third = await stager.stage(async (t) => {
      const runs = await bump("user:c")(t);
      dLocked = await tryLock("user:d");
      return runs;
    });
    done[2]!();
    const fourth = await stager.stage(bump("user:d"));
    done[3]!();
    await Promise.all([first.committed, third.committed, fourth.committed]);
    expect(failed).toBe("the caller's rule says no");
    expect(third.value).toBe(1); // not 11: the rolled-back write is not seen
    expect(dLocked).toBe(false); // read ahead before the rolled-back transaction's savepoint: still held
    const after = await leader.store.read(async (t) => [
      (await t.ledgers.get("user:c"))?.runs,
      (await t.ledgers.get("user:d"))?.runs,
    ]);
    expect(after).toEqual([2, 1]);
  });

  it("read-modify-writes of one lease and its ledger, the leader's read ahead, with a follower's groups and plain transactions at once, lose nothing", async () => {
    const { leader, follower, stager, expectHint } = await replicas("read-ahead-rmw", []);
    const base = await follower.store.transaction((t) => t.leases.insert(queuedLease("ls-rmw", "rmw")));
    const step = async (t: Tx): Promise<void> => {
      const lease = await t.leases.get("ls-rmw");
      const ledger = (await t.ledgers.get("user:rmw")) ?? EMPTY;
      await sleep(1);
      await t.ledgers.put("user:rmw", { ...ledger, runs: ledger.runs + 1 });
      await t.leases.update({ ...base, ...lease!, chargedMs: lease!.chargedMs + 1 });
    };
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        if (i % 3 === 1) return follower.store.groupedTransaction!(step);
        if (i % 3 === 2) return follower.store.transaction(step);
        const done = expectHint(i % 2 === 0 ? { lease: "ls-rmw" } : { ledger: "user:rmw" });
        return (await stager.stage(step).finally(done)).committed;
      }),
    );
    const seen = await leader.store.read(async (t) => ({
      runs: (await t.ledgers.get("user:rmw"))?.runs,
      charged: (await t.leases.get("ls-rmw"))?.chargedMs,
    }));
    expect(seen).toEqual({ runs: 30, charged: 30 });
  });
});
