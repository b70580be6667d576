import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { parsePostgresUrl } from "../src/storage/postgres/url.js";
import { LeadershipLostError } from "../src/storage/store.js";
import type { Storage } from "../src/storage/store.js";
import { waitFor } from "./harness.js";

/**
 * Leadership is a lease with a fencing epoch (issue 14 item 8). A leader that stops renewing —
 * as a frozen process does, keeping its session and its locks — is replaced once its lease runs
 * out, and from then on it can commit nothing: its next group finds another epoch, and it hears
 * `lost` and steps down. (test/e2e/pg-faults.test.ts does it with SIGSTOP on real processes.)
 */

const user = (id: string) => ({
  id,
  name: `name-${id}`,
  tier: "free",
  tokenHash: `th-${id}`,
  quotaOverrideMs: null,
  createdAt: 1_000,
});
const opened: Storage[] = [];
async function open(url: string): Promise<Storage> {
  const storage = await openStorage(url);
  opened.push(storage);
  return storage;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => undefined)));
});

/** Stops a leader's renewals, as a frozen process's stop (its session stays open, its lock held). */
function freeze(storage: Storage): void {
  (storage.coordination as unknown as { o: { lease: { stop(): void } } }).o.lease.stop();
}

async function leadership(url: string): Promise<{ epoch: number; locked: boolean }> {
  const { connection, schema } = parsePostgresUrl(url);
  const sql = postgres(connection, { max: 1, onnotice: () => undefined });
  try {
    const [row] = await sql`SELECT epoch, locked FROM ${sql(schema)}.leadership WHERE id = 1`;
    return { epoch: Number(row!["epoch"]), locked: row!["locked"] as boolean };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe.skipIf(!postgresUrl())("PostgreSQL leadership lease", () => {
  it("a leader that stops renewing is replaced once its lease runs out, commits nothing after, and hears `lost` once", async () => {
    const url = `${freshPostgresUrl("lease")}&leader_lease=2000`;
    const a = await open(url);
    const b = await open(url);
    const lost: Error[] = [];
    await a.coordination.lead((err) => lost.push(err));
    const first = await leadership(url);
    expect(first.locked).toBe(true);
    await (
      await a.coordination.leaderStager.stage(async (t) => t.users.insert(user("before")))
    ).committed;

    // B waits while A renews (several leases long).
    let bLeads = false;
    const waiting = b.coordination.lead(() => undefined).then(() => (bLeads = true));
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(bLeads).toBe(false);

    freeze(a);
    await waiting;
    const second = await leadership(url);
    expect(second.epoch).toBe(first.epoch + 1);
    // A's session still holds the leader lock: B leads without it.
    expect(second.locked).toBe(false);

    // A, awake again, still thinks it leads: its next write finds another epoch and is not committed.
    await expect(a.coordination.leaderStager.stage(async (t) => t.users.insert(user("stale")))).rejects.toBeInstanceOf(
      LeadershipLostError,
    );
    await waitFor(() => lost.length > 0);
    expect(lost).toHaveLength(1);
    expect(lost[0]).toBeInstanceOf(LeadershipLostError);
    expect(await b.store.transaction((t) => t.users.get("stale"))).toBeNull();
    expect(await b.store.transaction((t) => t.users.get("before"))).toMatchObject({ id: "before" });

    // B leads and commits; once A's session is gone B's next renewal takes the leader lock.
    await (
      await b.coordination.leaderStager.stage(async (t) => t.users.insert(user("new-leader")))
    ).committed;
    await waitFor(async () => (await leadership(url)).locked, 5_000, 100);
    expect((await leadership(url)).epoch).toBe(second.epoch);
  });

  it("closing the leader hands the lead over at once, without waiting for the lease", async () => {
    const url = `${freshPostgresUrl("lease-close")}&leader_lease=60000`;
    const a = await open(url);
    const b = await open(url);
    await a.coordination.lead(() => undefined);
    const waiting = b.coordination.lead(() => undefined);
    await a.close();
    // Within the test's timeout, far shorter than the 60 s lease.
    await waiting;
    await (
      await b.coordination.leaderStager.stage(async (t) => t.users.insert(user("b")))
    ).committed;
  });

  it("a leader whose session is never idle (a stream of transactions, as a new leader's catch-up under load) still renews its lease", async () => {
    // A 1-s lease, renewed every 200 ms. Before, the open group kept the session's turn for as long
    // as transactions kept joining it (up to 64), the renewal waited behind it, and the lead passed
    // to the other replica while this one was busy: in CI, from follower to follower.
    const url = `${freshPostgresUrl("lease-busy")}&leader_lease=1000`;
    const a = await open(url);
    const b = await open(url);
    const lost: Error[] = [];
    await a.coordination.lead((err) => lost.push(err));
    let bLeads = false;
    b.coordination
      .lead(() => undefined)
      .then(
        () => (bLeads = true),
        () => undefined, // closed at the end of the test, still waiting
      );
    const end = Date.now() + 4_000;
    let n = 0;
    const committed: Promise<void>[] = [];
    // Four callers, each staging its next 40-ms transaction as soon as the last one ran: one always waits.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < end && lost.length === 0) {
          const staged = await a.coordination.leaderStager.stage(async (t) => {
            await new Promise((resolve) => setTimeout(resolve, 40));
            await t.users.insert(user(`busy-${n++}`));
          });
          committed.push(staged.committed);
        }
      }),
    );
    await Promise.all(committed);
    expect(lost).toEqual([]);
    expect(bLeads).toBe(false);
    expect(n).toBeGreaterThan(40);
  });
});
