import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { systemClock } from "../src/clock.js";
import { normalizeConfig } from "../src/config.js";
import { assemblePool } from "../src/main/pool.js";
import { openStorage } from "../src/storage/open-store.js";
import type { Storage } from "../src/storage/store.js";
import { ipCall, waitFor } from "./harness.js";
import { TcpProxy } from "./tcp-proxy.js";

/**
 * Round trips a lease cycle (admit, granted at once, release) waits for on PostgreSQL through the
 * replica that leads: on one session every round trip is a wait that the next transaction queues
 * behind, so they bound the leader's cycles per second. Counted by a TCP proxy between the replica
 * and PostgreSQL: a round trip is a flight of the replica's bytes that follows an answer (or opens
 * the connection). One caller, cycles one after another: the count is the same every run.
 */
class CountingProxy {
  flights = 0;
  readonly log: string[] = [];
  private readonly proxy: TcpProxy;

  constructor(target: { host: string; port: number }) {
    this.proxy = new TcpProxy(target, (conn) => {
      let last: "client" | "server" | null = null;
      return {
        fromClient: (chunk) => {
          if (last !== "client") {
            this.flights++;
            if (process.env.RT_DEBUG)
              this.log.push(
                `${conn.id} ${chunk
                  .toString("latin1")
                  .replace(/[^ -~]+/g, ".")
                  .slice(0, 160)}`,
              );
          }
          last = "client";
        },
        fromServer: () => {
          last = "server";
        },
      };
    });
  }

  listen(): Promise<number> {
    return this.proxy.listen();
  }

  close(): Promise<void> {
    return this.proxy.close();
  }
}

describe.skipIf(!postgresUrl())("a lease cycle, in round trips", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  /** `replicas` replicas on a fresh schema, all through one counting proxy; the first leads. */
  async function replicasThroughProxy(name: string, replicas: number) {
    const url = new URL(freshPostgresUrl(name));
    const proxy = new CountingProxy({ host: url.hostname, port: Number(url.port) });
    cleanup.push(() => proxy.close());
    url.port = String(await proxy.listen());
    // A long leader lease: fewer renewals in the window (each is a round trip of its own).
    url.searchParams.set("leader_lease", "600000");
    const config = normalizeConfig({
      storage: { url: url.toString() },
      quota: { tiers: { anonymous: { quota: "7d", max_duration: "600s" } } },
      pool: { simulated: [{ node: "sim", gpus: 8 }] },
      log: { level: "silent" },
    });
    const opened: { replica: ReturnType<typeof assemblePool>["replica"]; storage: Storage }[] = [];
    for (let r = 0; r < replicas; r++) {
      const storage: Storage = await openStorage(config.storage.url);
      const pool = assemblePool(config, storage, { clock: systemClock, log: pino({ level: "silent" }) });
      cleanup.push(async () => {
        pool.stop();
        await storage.close();
      });
      await pool.replica.start();
      if (r === 0) await waitFor(async () => pool.replica.isLeader, 20_000);
      opened.push({ replica: pool.replica, storage });
    }
    const size = config.policy.sizes["large"]!;
    const seqs: number[] = [];
    const granted: { id: string; seq: number }[] = [];
    const cycle = async (replica: (typeof opened)[number]["replica"], i: number): Promise<void> => {
      const r = await replica.admit(ipCall(`10.2.0.${i % 10}`, size));
      expect(r.kind).toBe("granted");
      if (r.kind !== "granted") return;
      seqs.push(r.lease.seq);
      granted.push({ id: r.lease.id, seq: r.lease.seq });
      await replica.release(r.lease.id, false);
    };
    /** Round trips per cycle through `replica`, all connections of all replicas counted, once what a cycle set off is over. */
    const perCycle = async (replica: (typeof opened)[number]["replica"], cycles: number): Promise<number> => {
      // Warm: the identities' ledgers exist, each connection has prepared its statements.
      for (let i = 0; i < 20; i++) await cycle(replica, i);
      const from = proxy.flights;
      for (let i = 0; i < cycles; i++) await cycle(replica, i);
      // A broadcast sent after the last release returned.
      await new Promise((resolve) => setTimeout(resolve, 300));
      if (process.env.RT_DEBUG) console.log(proxy.log.slice(-40).join("\n"));
      return (proxy.flights - from) / cycles;
    };
    return { opened, seqs, granted, cycle, perCycle, proxy };
  }

  it("through the leader waits for 8 round trips (11 before): the epoch check, and a lease and its ledger, are not waited for apart", async () => {
    const { opened, seqs, perCycle } = await replicasThroughProxy("round-trips-leader", 1);
    const leader = opened[0]!;
    const n = await perCycle(leader.replica, 40);
    console.log(`round trips per cycle through the leader: ${n}`);
    // Each of the admission and the release is a group of one here. The admission: [BEGIN, the
    // epoch check, SAVEPOINT, its ledger read], [the insert, waited for: with nothing else waiting
    // no seq is drawn ahead], [its ledger write, not waited for], [COMMIT]; the release: [BEGIN,
    // the epoch check, SAVEPOINT, the lease and its ledger read together], [its writes], [COMMIT];
    // + the end's NOTIFY: 8. It was 11: BEGIN and the epoch check waited for before the first
    // read, the ledger read after the lease's.
    expect(n).toBeLessThanOrEqual(8.5);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  }, 120_000);

  it("concurrent callers on the leader: granted leases inserted with seqs drawn ahead are stored with the seq their callers got, all distinct", async () => {
    const { opened, granted, cycle } = await replicasThroughProxy("round-trips-concurrent", 1);
    const leader = opened[0]!;
    await Promise.all(
      Array.from({ length: 6 }, async (_, w) => {
        for (let k = 0; k < 15; k++) await cycle(leader.replica, w * 15 + k);
      }),
    );
    const listed = await leader.storage.store.read((tx) => tx.leases.list({ limit: 500 }));
    const stored = new Map(listed.map((l) => [l.id, l.seq]));
    expect(granted).toHaveLength(90);
    for (const g of granted) expect(stored.get(g.id)).toBe(g.seq);
    expect(new Set(granted.map((g) => g.seq)).size).toBe(granted.length);
  }, 120_000);

  it("under load through the leader a cycle waits for about 1 round trip (2.5 before): the waiting transactions' locks and ledgers are read ahead, one statement for them all", async () => {
    const { opened, cycle, proxy } = await replicasThroughProxy("round-trips-under-load", 1);
    const leader = opened[0]!;
    // Warm: the identities' ledgers exist, the statements are prepared.
    for (let i = 0; i < 20; i++) await cycle(leader.replica, i);
    const callers = 16;
    const rounds = 15;
    const from = proxy.flights;
    await Promise.all(
      Array.from({ length: callers }, async (_, w) => {
        for (let k = 0; k < rounds; k++) await cycle(leader.replica, w * rounds + k);
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const n = (proxy.flights - from) / (callers * rounds);
    console.log(`round trips per cycle through the leader, ${callers} callers: ${n}`);
    if (process.env.RT_DEBUG) console.log(proxy.log.slice(-60).join("\n"));
    // Each admission and each release waited for its own lock and row read on the leader's one
    // session, one after another (2.4–2.6 per cycle with the groups' BEGIN, COMMIT and broadcasts);
    // now a group's members find them read ahead, with the first member's round trip.
    expect(n).toBeLessThan(1.6);
  }, 120_000);

  it("through a follower waits for about 13 round trips (20.6 before): its writes and notifications go out with what follows them, or with the COMMIT", async () => {
    const { opened, perCycle } = await replicasThroughProxy("round-trips-follower", 2);
    const n = await perCycle(opened[1]!.replica, 30);
    console.log(`round trips per cycle through a follower: ${n}`);
    expect(n).toBeLessThanOrEqual(15);
  }, 120_000);

  it("a write a plain transaction did not wait for that fails fails the transaction: nothing of it is committed", async () => {
    const url = freshPostgresUrl("deferred-failure");
    const storage = await openStorage(url);
    cleanup.push(() => storage.close());
    const ledger = { windowStartedAt: 1_000, usedMs: 10, reservedMs: 0, bonusMs: 0, runs: 1 };
    const user = { id: "u1", name: "one", tier: "free", tokenHash: "th-u1", quotaOverrideMs: null, createdAt: 1_000 };
    // The failing write is the transaction's last statement: nothing after it would have told.
    const outcome = await storage.store
      .transaction(async (tx) => {
        await tx.users.insert(user);
        await tx.ledgers.get("ip:10.3.0.1");
        await tx.ledgers.put("ip:10.3.0.1", { ...ledger, usedMs: 1.5 }); // not an integer: PostgreSQL refuses it
        return "committed";
      })
      .then(
        (v) => v,
        (err: unknown) => err,
      );
    expect(outcome).toBeInstanceOf(Error);
    expect(await storage.store.read((tx) => tx.users.get("u1"))).toBeNull();
    expect(await storage.store.read((tx) => tx.ledgers.get("ip:10.3.0.1"))).toBeNull();
    // And one that succeeds is there.
    await storage.store.transaction(async (tx) => {
      await tx.users.insert(user);
      await tx.ledgers.get("ip:10.3.0.1");
      await tx.ledgers.put("ip:10.3.0.1", ledger);
    });
    expect(await storage.store.read((tx) => tx.ledgers.get("ip:10.3.0.1"))).toEqual(ledger);
  });
});
