import { pino } from "pino";
import postgres from "postgres";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../../../test/pg/cluster.js";
import type { Cluster } from "../../../test/pg/cluster.js";
import { postgresBin } from "../../../test/pg/postgres-url.js";
import { normalizeConfig } from "../src/config.js";
import { lockSpace } from "../src/storage/postgres/connections.js";
import { PostgresStore } from "../src/storage/postgres/postgres-store.js";
import { openStorage } from "../src/storage/open-store.js";
import { ipCall, waitFor } from "./harness.js";
import { closeReplicas, leaderAndFollowers, openReplica, replicaConfig } from "./replica-pools.js";
import type { OpenedReplicas } from "./replica-pools.js";

/**
 * A follower's admissions and releases share transactions (its group commit), whose locks are only
 * tried: two followers' groups and the leader's, all working on one identity's ledger at once, must
 * neither deadlock (every call answers) nor lose or double a reservation (the ledger matches its
 * leases afterwards).
 */
describe.skipIf(!postgresBin())("follower group commit, contended", () => {
  let cluster: Cluster;
  const opened: OpenedReplicas = [];
  beforeAll(async () => {
    cluster = await startCluster(postgresBin()!);
  }, 60_000);
  afterAll(async () => {
    await closeReplicas(opened);
    await cluster?.stop();
  });

  it("an identity whose lock another transaction holds does not hold up the others: its admission leaves the group and waits alone", async () => {
    const schema = "busy";
    const config = normalizeConfig({
      // Waits for locks as long as the test runs: a group whose members waited would hang it.
      storage: { url: `${cluster.url}?schema=${schema}&lock_timeout=600000&statement_timeout=600000` },
      quota: { tiers: { anonymous: { quota: "7d", max_duration: "600s" } } },
      pool: { simulated: [{ node: "sim", gpus: 8 }] },
      log: { level: "silent" },
    });
    const open = () => openReplica(config, opened);
    const leader = await open();
    await waitFor(async () => leader.isLeader, 20_000);
    const follower = await open();
    const size = config.policy.sizes["large"]!;
    const sql = postgres(cluster.url, { onnotice: () => undefined, max: 1 });
    try {
      // Another transaction holds the first identity's lock (as a slow one of another replica would).
      const holder = await sql.reserve();
      await holder`BEGIN`;
      await holder`SELECT pg_advisory_xact_lock(${lockSpace("ledger", schema)}::int4, hashtext('ip:10.9.9.1'))`;
      let blockedDone = false;
      const blocked = follower.admit(ipCall("10.9.9.1", size)).then((r) => ((blockedDone = true), r));
      // Others admitted at the same time, through the same follower, are answered meanwhile.
      const others = await Promise.all([2, 3, 4, 5].map((n) => follower.admit(ipCall(`10.9.9.${n}`, size))));
      expect(others.map((r) => r.kind)).toEqual(["granted", "granted", "granted", "granted"]);
      expect(blockedDone).toBe(false);
      await holder`COMMIT`;
      holder.release();
      expect((await blocked).kind).toBe("granted");
    } finally {
      await sql.end();
    }
  }, 60_000);

  it("two followers and the leader admitting and releasing for one identity at once: every call answers, and its ledger holds exactly what its leases do", async () => {
    const schema = "contend";
    const config = replicaConfig(`${cluster.url}?schema=${schema}`);
    const { leader, followers } = await leaderAndFollowers(config, opened, 2);

    const shared = "10.7.7.7";
    const size = config.policy.sizes["large"]!;
    let calls = 0;
    // Per replica, callers on the shared identity and on identities of their own (so that each
    // group holds several identities' locks while it tries the shared one's).
    const caller = async (replica: typeof leader, ip: string, cycles: number): Promise<void> => {
      for (let k = 0; k < cycles; k++) {
        const r = await replica.admit(ipCall(ip, size));
        calls++;
        expect(r.kind).toBe("granted");
        if (r.kind !== "granted") continue;
        await new Promise((resolve) => setImmediate(resolve));
        await replica.release(r.lease.id, false);
      }
    };
    const replicas = [leader, ...followers];
    await Promise.all(
      replicas.flatMap((replica, r) => [
        ...Array.from({ length: 6 }, () => caller(replica, shared, 8)),
        ...Array.from({ length: 4 }, (_, c) => caller(replica, `10.8.${r}.${c}`, 8)),
      ]),
    );
    expect(calls).toBe(3 * 10 * 8);

    const sql = postgres(cluster.url, { onnotice: () => undefined });
    try {
      // Each identity's ledger against its leases: nothing reserved (all released), every
      // admission counted once, and what was charged is what its ended leases say.
      const rows = await sql.unsafe<
        {
          identity: string;
          reserved: string;
          used: string;
          runs: string;
          leases: string;
          charged: string;
          live: string;
        }[]
      >(
        `SELECT l.identity, l.reserved_ms::text AS reserved, l.used_ms::text AS used, l.runs::text AS runs,
           count(s.id)::text AS leases, COALESCE(sum(s.charged_ms), 0)::text AS charged,
           count(s.id) FILTER (WHERE s.status IN ('queued', 'active'))::text AS live
         FROM ${schema}.ledgers l LEFT JOIN ${schema}.leases s ON s.identity_kind || ':' || s.identity_id = l.identity
         GROUP BY l.identity, l.reserved_ms, l.used_ms, l.runs`,
      );
      const sharedRow = rows.find((x) => x.identity === `ip:${shared}`);
      expect(sharedRow).toMatchObject({ leases: String(3 * 6 * 8), runs: String(3 * 6 * 8) });
      expect(rows).toHaveLength(1 + 3 * 4);
      for (const row of rows)
        expect({
          identity: row.identity,
          reserved: row.reserved,
          used: row.used,
          runs: row.runs,
          live: row.live,
        }).toEqual({
          identity: row.identity,
          reserved: "0",
          used: row.charged,
          runs: row.leases,
          live: "0",
        });
    } finally {
      await sql.end();
    }
  }, 240_000);

  it("groups that cannot commit: their members run again alone and succeed, and the burst is logged once, at warn, with counts", async () => {
    const schema = "failing";
    const config = replicaConfig(`${cluster.url}?schema=${schema}`);
    const { followers } = await leaderAndFollowers(config, opened, 1);
    const follower = followers[0]!;
    const store = opened.at(-1)!.storage.store;
    expect(store).toBeInstanceOf(PostgresStore);
    const lines: { level: number; msg: string; groups: number; members: number }[] = [];
    const registry = new Registry();
    (store as PostgresStore).observe({
      log: pino({ level: "warn" }, { write: (line: string) => void lines.push(JSON.parse(line)) }),
      registry,
    });

    // Every COMMIT that holds a lease inserted by a group's member fails, at COMMIT; the same
    // admission run alone commits. (A member inserts its lease with the seq drawn beside its
    // ledger's read, `OVERRIDING SYSTEM VALUE`; alone, the insert draws its own.)
    const sql = postgres(cluster.url, { onnotice: () => undefined, max: 1 });
    try {
      await sql.unsafe(`
        CREATE FUNCTION ${schema}.mark_grouped() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF current_query() LIKE '%OVERRIDING SYSTEM VALUE%' THEN
            PERFORM set_config('gpupool_test.grouped', 'yes', true);
          END IF;
          RETURN NULL;
        END $$;
        CREATE FUNCTION ${schema}.refuse_grouped() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF current_setting('gpupool_test.grouped', true) = 'yes' THEN
            RAISE EXCEPTION 'lease % was inserted by a member of a group', NEW.id;
          END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER mark_grouped AFTER INSERT ON ${schema}.leases
          FOR EACH ROW EXECUTE FUNCTION ${schema}.mark_grouped();
        CREATE CONSTRAINT TRIGGER refuse_grouped AFTER INSERT ON ${schema}.leases
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${schema}.refuse_grouped();`);
    } finally {
      await sql.end();
    }

    const size = config.policy.sizes["large"]!;
    const ids: string[] = [];
    // Two bursts of concurrent admissions, each through the follower's groups, every group failing.
    for (const wave of [1, 2]) {
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, n) => follower.admit(ipCall(`10.6.${wave}.${n}`, size))),
      );
      expect(results.map((r) => r.kind)).toEqual(Array.from({ length: 12 }, () => "granted"));
      for (const r of results) if (r.kind === "granted") ids.push(r.lease.id);
    }
    // Releases insert no lease: their groups commit.
    for (const r of await Promise.all(ids.map((id) => follower.release(id, false))))
      expect(r.lease.status).toBe("released");

    // One line for the burst (the next would come a minute later), saying how many groups and members.
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, msg: expect.stringContaining("ran again alone") });
    expect(lines[0]!.groups).toBeGreaterThanOrEqual(1);
    expect(lines[0]!.members).toBeGreaterThanOrEqual(1);
    const metrics = await registry.getMetricsAsJSON();
    const fallbacks = metrics.find((m) => m.name === "gpupool_follower_group_fallbacks_total");
    expect(fallbacks?.values).toEqual([expect.objectContaining({ labels: { reason: "group_failed" }, value: 24 })]);
    const sizes = metrics.find((m) => m.name === "gpupool_follower_group_members");
    // A histogram's values name their series (prom-client types leave metricName out).
    const count = sizes?.values.find(
      (v) => (v as { metricName?: string }).metricName === "gpupool_follower_group_members_count",
    );
    expect(count?.value).toBeGreaterThanOrEqual(1);
  }, 60_000);

  it("a group's first member that throws (it runs without a savepoint) is rolled back with the transaction begun again: the members after it in that group commit", async () => {
    const storage = await openStorage(`${cluster.url}?schema=first_member`);
    try {
      const user = (n: number) => ({
        id: `u${n}`,
        name: `user ${n}`,
        tier: "free",
        tokenHash: `hash ${n}`,
        quotaOverrideMs: null,
        createdAt: n,
      });
      const { store } = storage;
      // Started together: the first and third share a lane (the second takes the other), the first
      // opening its group.
      const outcomes = await Promise.allSettled(
        [1, 2, 3].map((n) =>
          store.groupedTransaction!(async (tx) => {
            await tx.users.insert(user(n));
            if (n === 1) throw new Error("refused");
            return n;
          }),
        ),
      );
      expect(outcomes.map((o) => (o.status === "fulfilled" ? o.value : (o.reason as Error).message))).toEqual([
        "refused",
        2,
        3,
      ]);
      const stored = await store.read(async (tx) => Promise.all([1, 2, 3].map((n) => tx.users.get(`u${n}`))));
      expect(stored.map((u) => u?.id ?? null)).toEqual([null, "u2", "u3"]);
    } finally {
      await storage.close();
    }
  }, 60_000);
});
