import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { newLease } from "./store-fixtures.js";
import { leaderLockKey } from "../src/storage/postgres/connections.js";
import { LeadershipLostError } from "../src/storage/store.js";
import type { UsageFilter, UsageRecordRow } from "../src/storage/store.js";
import type { DeviceSpec } from "@gpupool/core";
import type {
  AppRecord,
  KeyedRecord,
  LeaseFilter,
  LeaseRecord,
  NodeRecord,
  NodeState,
  Storage,
  Store,
  Tx,
  UserRecord,
} from "../src/storage/store.js";

/**
 * The storage contract: one suite, run against every adapter through the Store, Stager and
 * Coordination interfaces (nothing here knows a driver). Every adapter must pass `storeContract`;
 * adding one is one more call at the bottom.
 *
 * `open` gives fresh, migrated, empty storage (a store and its coordination) for each test.
 * `reopen`, when given, opens second storage on the same data after the first is closed:
 * durability is checked through it, never through whatever the first connection remembers.
 *
 * `replicas`, for storage several processes share (`coordination.shared`): `sibling` opens another
 * storage on the same data while the first stays open (another replica), and `killLeaderSession`
 * breaks the database session through which a replica leads, as a crash of its process would.
 */
export function storeContract(
  name: string,
  open: () => Promise<Storage>,
  reopen?: (closed: Storage) => Promise<Storage>,
  replicas?: { sibling: (of: Storage) => Promise<Storage>; killLeaderSession: (of: Storage) => Promise<void> },
): void {
  describe(`storage contract: ${name}`, () => {
    let storage: Storage;
    let store: Store;
    const extra: Storage[] = [];
    beforeEach(async () => {
      storage = await open();
      store = storage.store;
    });
    const closed = new Set<Storage>();
    const closeOnce = async (s: Storage) => {
      if (closed.has(s)) return;
      closed.add(s);
      await s.close();
    };
    afterEach(async () => {
      // Each storage is closed exactly once here (a second close has its own test below).
      for (const s of [storage, ...extra.splice(0)]) await closeOnce(s).catch(() => undefined);
    });
    const tx = <T>(fn: (t: Tx) => Promise<T>): Promise<T> => store.transaction(fn);
    /** Every user, as a page large enough to hold them. */
    const ALL = { after: null, limit: 1_000 };
    /** Closes `storage` and returns a fresh store on the same data (or null without `reopen`). */
    const durable = async (): Promise<Store | null> => {
      if (!reopen) return null;
      await closeOnce(storage);
      const again = await reopen(storage);
      extra.push(again);
      return again.store;
    };

    const user = (id: string, over: Partial<UserRecord> = {}): UserRecord => ({
      id,
      name: `name-${id}`,
      tier: "free",
      tokenHash: `th-${id}`,
      quotaOverrideMs: null,
      createdAt: 1_000,
      ...over,
    });
    const app = (id: string, ownerId: string, over: Partial<AppRecord> = {}): AppRecord => ({
      id,
      name: `app-${id}`,
      ownerId,
      keyHash: `kh-${id}`,
      maxConcurrency: null,
      createdAt: 1_000,
      ...over,
    });
    const keyed = (id: string, createdAt = 1_000): KeyedRecord => ({
      id,
      name: `k-${id}`,
      keyHash: `kh-${id}`,
      createdAt,
    });
    const unregistered: NodeState = { devices: null, registeredAt: null, heartbeatAt: null, agentUrl: null };
    const node = (id: string, createdAt = 1_000, state: NodeState = unregistered): NodeRecord => ({
      ...keyed(id, createdAt),
      ...state,
    });
    const active = (l: LeaseRecord, deadline: number): LeaseRecord => ({
      ...l,
      status: "active",
      node: "sim-0",
      deviceIndex: 1,
      deviceUuid: "GPU-x",
      deviceName: "H200",
      slotIndexes: [0, 1],
      grantedAt: deadline - l.durationMs,
      deadline,
      windowStartedAt: deadline - l.durationMs,
    });

    it("migrates idempotently, pings, and names its kind", async () => {
      await store.migrate();
      await store.migrate();
      await expect(store.ping()).resolves.toBeUndefined();
      expect(["sqlite", "postgres"]).toContain(store.kind);
    });

    it("users: insert, get by id / name / token hash, update, a page by name", async () => {
      await tx(async (t) => {
        await t.users.insert(user("u2", { createdAt: 2_000 }));
        await t.users.insert(user("u1", { tier: "pro", quotaOverrideMs: 90_000 }));
      });
      expect(await tx((t) => t.users.get("u1"))).toEqual(user("u1", { tier: "pro", quotaOverrideMs: 90_000 }));
      expect(await tx((t) => t.users.getByName("name-u2"))).toEqual(user("u2", { createdAt: 2_000 }));
      expect(await tx((t) => t.users.findByTokenHash("th-u1"))).toMatchObject({ id: "u1" });
      expect(
        await tx(async (t) => [
          await t.users.get("nope"),
          await t.users.getByName("nope"),
          await t.users.findByTokenHash("nope"),
        ]),
      ).toEqual([null, null, null]);
      await tx((t) => t.users.update(user("u1", { tier: "team", quotaOverrideMs: null, tokenHash: "th-new" })));
      expect(await tx((t) => t.users.get("u1"))).toEqual(user("u1", { tier: "team", tokenHash: "th-new" }));
      expect(await tx((t) => t.users.findByTokenHash("th-u1"))).toBeNull();
      expect((await tx((t) => t.users.page(null, ALL))).map((u) => u.id)).toEqual(["u1", "u2"]);
      await expect(tx((t) => t.users.insert(user("u3", { name: "name-u1" })))).rejects.toThrow();
      expect(await tx((t) => t.users.page(null, ALL))).toHaveLength(2);
    });

    it("apps: update changes the concurrency limit only, of that app only", async () => {
      await tx(async (t) => {
        await t.users.insert(user("u1"));
        await t.apps.insert(app("a1", "u1", { maxConcurrency: 3 }));
        await t.apps.insert(app("a2", "u1", { maxConcurrency: 5 }));
      });
      // Only the limit changes: a name or key in the record given is not written.
      await tx((t) => t.apps.update({ ...app("a1", "u1"), name: "renamed", keyHash: "other", maxConcurrency: 7 }));
      expect(await tx((t) => t.apps.get("a1"))).toEqual(app("a1", "u1", { maxConcurrency: 7 }));
      await tx((t) => t.apps.update({ ...app("a1", "u1"), maxConcurrency: null }));
      expect(await tx((t) => t.apps.get("a1"))).toEqual(app("a1", "u1", { maxConcurrency: null }));
      expect(await tx((t) => t.apps.get("a2"))).toEqual(app("a2", "u1", { maxConcurrency: 5 }));
    });

    it("apps: insert, get by id / name / key hash, list", async () => {
      await tx(async (t) => {
        await t.users.insert(user("u1"));
        await t.apps.insert(app("a1", "u1", { maxConcurrency: 3 }));
        await t.apps.insert(app("a2", "u1", { createdAt: 2_000 }));
      });
      expect(await tx((t) => t.apps.get("a1"))).toEqual(app("a1", "u1", { maxConcurrency: 3 }));
      expect(await tx((t) => t.apps.getByName("app-a2"))).toEqual(app("a2", "u1", { createdAt: 2_000 }));
      expect(await tx((t) => t.apps.findByKeyHash("kh-a2"))).toMatchObject({ id: "a2", maxConcurrency: null });
      expect(
        await tx(async (t) => [await t.apps.get("x"), await t.apps.getByName("x"), await t.apps.findByKeyHash("x")]),
      ).toEqual([null, null, null]);
      expect((await tx((t) => t.apps.list())).map((a) => a.id)).toEqual(["a1", "a2"]);
      await expect(tx((t) => t.apps.insert(app("a3", "u1", { name: "app-a1" })))).rejects.toThrow();
    });

    it("nodes and edges: separate principals, found by key hash and name", async () => {
      await tx(async (t) => {
        await t.nodes.insert(keyed("n1"));
        await t.nodes.insert(keyed("n2", 2_000));
        await t.edges.insert(keyed("e1"));
      });
      expect(await tx((t) => t.nodes.findByKeyHash("kh-n1"))).toEqual(node("n1"));
      expect(await tx((t) => t.nodes.getByName("k-n2"))).toEqual(node("n2", 2_000));
      expect(await tx((t) => t.edges.findByKeyHash("kh-e1"))).toEqual(keyed("e1"));
      expect(await tx((t) => t.edges.getByName("k-e1"))).toEqual(keyed("e1"));
      expect(await tx((t) => t.nodes.findByKeyHash("kh-e1"))).toBeNull();
      expect(await tx((t) => t.edges.findByKeyHash("kh-n1"))).toBeNull();
      expect(await tx((t) => t.nodes.getByName("k-e1"))).toBeNull();
      expect((await tx((t) => t.nodes.list())).map((n) => n.id)).toEqual(["n1", "n2"]);
    });

    it("nodes: registration state round-trips every device field, replaces the last one, and survives a reopen", async () => {
      await tx(async (t) => {
        await t.nodes.insert(keyed("n1"));
        await t.nodes.insert(keyed("n2", 2_000));
      });
      const devices: DeviceSpec[] = [
        {
          node: "k-n1",
          index: 0,
          uuid: "GPU-0f1e2d3c-aaaa-bbbb-cccc-000000000000",
          name: 'NVIDIA H200 "NVL" ünïcode',
          memoryMb: 143_771,
          slots: 2,
        },
        { node: "k-n1", index: 1, uuid: "GPU-1", name: "NVIDIA A10G", memoryMb: 23_028, slots: 1, dedicated: true },
      ];
      const state: NodeState = {
        devices,
        registeredAt: 1_700_000_000_001,
        heartbeatAt: 1_700_000_000_001,
        agentUrl: "http://10.0.0.5:7071",
      };
      expect(await tx((t) => t.nodes.setState("n1", state))).toBe(true);
      expect(await tx((t) => t.nodes.findByKeyHash("kh-n1"))).toEqual(node("n1", 1_000, state));
      expect(await tx((t) => t.nodes.getByName("k-n1"))).toEqual(node("n1", 1_000, state));
      expect(await tx((t) => t.nodes.list())).toEqual([node("n1", 1_000, state), node("n2", 2_000)]);
      // An agent that re-registers with no devices: an empty list is not "never registered".
      const empty: NodeState = {
        devices: [],
        registeredAt: 1_700_000_000_500,
        heartbeatAt: 1_700_000_000_500,
        agentUrl: null,
      };
      expect(await tx((t) => t.nodes.setState("n2", empty))).toBe(true);
      expect(await tx((t) => t.nodes.getByName("k-n2"))).toEqual(node("n2", 2_000, empty));
      expect(await tx((t) => t.nodes.setState("nope", state))).toBe(false);
      // Deregistering clears everything.
      expect(await tx((t) => t.nodes.setState("n2", unregistered))).toBe(true);
      expect(await tx((t) => t.nodes.getByName("k-n2"))).toEqual(node("n2", 2_000));
      const again = await durable();
      if (again) expect(await again.transaction((t) => t.nodes.getByName("k-n1"))).toEqual(node("n1", 1_000, state));
    });

    it("nodes: a heartbeat is recorded only for a registered node; unknown ids answer false", async () => {
      await tx(async (t) => {
        await t.nodes.insert(keyed("n1"));
        await t.nodes.insert(keyed("n2"));
      });
      const state: NodeState = {
        devices: [{ node: "k-n1", index: 0, uuid: "GPU-0", name: "H200", memoryMb: 1, slots: 2 }],
        registeredAt: 10_000,
        heartbeatAt: 10_000,
        agentUrl: null,
      };
      await tx((t) => t.nodes.setState("n1", state));
      expect(await tx((t) => t.nodes.heartbeat("n1", 15_000))).toBe(true);
      expect(await tx((t) => t.nodes.getByName("k-n1"))).toEqual(node("n1", 1_000, { ...state, heartbeatAt: 15_000 }));
      // n2 exists but never registered: its heartbeat changes nothing.
      expect(await tx((t) => t.nodes.heartbeat("n2", 15_000))).toBe(false);
      expect(await tx((t) => t.nodes.getByName("k-n2"))).toEqual(node("n2"));
      expect(await tx((t) => t.nodes.heartbeat("nope", 15_000))).toBe(false);
      // A heartbeat in a transaction that rolls back is not kept.
      await expect(
        tx(async (t) => {
          await t.nodes.heartbeat("n1", 20_000);
          throw new Error("boom");
        }),
      ).rejects.toThrow("boom");
      expect(await tx((t) => t.nodes.getByName("k-n1"))).toMatchObject({ heartbeatAt: 15_000 });
    });

    it("coordination: this replica can lead, and its leader stager commits", async () => {
      const lost: Error[] = [];
      await storage.coordination.lead((err) => lost.push(err));
      const { value, committed } = await storage.coordination.leaderStager.stage(async (t) => {
        await t.users.insert(user("u1"));
        return "ok";
      });
      expect(value).toBe("ok");
      await committed;
      expect(await tx((t) => t.users.get("u1"))).toMatchObject({ id: "u1" });
      expect(lost).toEqual([]);
    });

    it("coordination: publish reaches every subscriber of the channel (asynchronously, in order); unsubscribe stops it", async () => {
      const c = storage.coordination;
      const heard: string[] = [];
      const other: string[] = [];
      const off1 = await c.subscribe("wake", (p) => heard.push(`1:${p}`));
      const off2 = await c.subscribe("wake", (p) => heard.push(`2:${p}`));
      const offOther = await c.subscribe("other", (p) => other.push(p));
      await c.publish("wake", "a");
      await c.publish("wake", "b");
      await waitUntil(() => heard.length >= 4);
      expect(heard.filter((h) => h.startsWith("1:"))).toEqual(["1:a", "1:b"]);
      expect(heard.filter((h) => h.startsWith("2:"))).toEqual(["2:a", "2:b"]);
      expect(other).toEqual([]);
      await off1();
      await c.publish("wake", "c");
      await waitUntil(() => heard.includes("2:c"));
      expect(heard).not.toContain("1:c");
      await off2();
      await offOther();
      await c.publish("wake", "d");
      await new Promise((r) => setTimeout(r, 100));
      expect(heard).not.toContain("2:d");
      // The payload bound of the interface (PostgreSQL NOTIFY's limit) holds on every adapter.
      await expect(c.publish("wake", "x".repeat(7_001))).rejects.toThrow(/7000|7,000/);
    });

    it("ledgers: null until written, upsert replaces, survives a reopen", async () => {
      expect(await tx((t) => t.ledgers.get("user:u1"))).toBeNull();
      const first = { windowStartedAt: null, usedMs: 0, reservedMs: 60_000, bonusMs: 0, runs: 1 };
      const second = { windowStartedAt: 1_700_000_000_123, usedMs: 1_000, reservedMs: 0, bonusMs: 5_000, runs: 2 };
      await tx((t) => t.ledgers.put("user:u1", first));
      expect(await tx((t) => t.ledgers.get("user:u1"))).toEqual(first);
      await tx((t) => t.ledgers.put("user:u1", second));
      await tx((t) => t.ledgers.put("ip:2001:db8::/64", first));
      expect(await tx((t) => t.ledgers.get("user:u1"))).toEqual(second);
      const again = await durable();
      if (again) {
        expect(await again.transaction((t) => t.ledgers.get("user:u1"))).toEqual(second);
        expect(await again.transaction((t) => t.ledgers.get("ip:2001:db8::/64"))).toEqual(first);
      }
    });

    it("leases: insert assigns increasing seq; get round-trips every field; update changes the lifecycle", async () => {
      const a = await tx((t) => t.leases.insert(newLease("l1")));
      const b = await tx((t) =>
        t.leases.insert(
          newLease("l2", {
            size: "xlarge",
            slots: 2,
            cost: 1.5,
            reservedMs: 90_000,
            appId: null,
            identityKind: "ip",
            identityId: "203.0.113.7",
            tier: "anonymous",
            maxWaitMs: 12_500,
          }),
        ),
      );
      const c = await tx((t) => t.leases.insert(newLease("l3")));
      expect(b.seq).toBeGreaterThan(a.seq);
      expect(c.seq).toBeGreaterThan(b.seq);
      expect(await tx((t) => t.leases.get("l2"))).toEqual(b);
      expect(b.maxWaitMs).toBe(12_500);
      expect(a.maxWaitMs).toBeNull();
      expect(await tx((t) => t.leases.get("nope"))).toBeNull();
      const granted = active(a, 70_000);
      await tx((t) => t.leases.update(granted));
      expect(await tx((t) => t.leases.get("l1"))).toEqual(granted);
      const ended: LeaseRecord = {
        ...granted,
        status: "released",
        endedAt: 12_345,
        heldMs: 2_345,
        chargedMs: 3_000,
        refundedMs: 57_000,
        failed: true,
        problemCode: "queue_timeout",
        problemDetail: "waited",
      };
      await tx((t) => t.leases.update(ended));
      const again = await durable();
      const reader = again ?? store;
      expect(await reader.transaction((t) => t.leases.get("l1"))).toEqual(ended);
      expect(await reader.transaction((t) => t.leases.get("l2"))).toEqual(b);
      // seq keeps growing after a reopen.
      const d = await reader.transaction((t) => t.leases.insert(newLease("l4")));
      expect(d.seq).toBeGreaterThan(c.seq);
      await expect(reader.transaction((t) => t.leases.insert(newLease("l4")))).rejects.toThrow();
    });

    it("leases: list filters by app, identity and status, newest first, up to the limit", async () => {
      const ids = ["l1", "l2", "l3", "l4", "l5"];
      await tx(async (t) => {
        await t.leases.insert(newLease("l1"));
        await t.leases.insert(newLease("l2", { appId: "a2" }));
        await t.leases.insert(newLease("l3", { identityKind: "ip", identityId: "198.51.100.1", appId: "a2" }));
        await t.leases.insert(newLease("l4", { status: "cancelled" }));
        await t.leases.insert(newLease("l5", { appId: null }));
      });
      const list = async (f: LeaseFilter) => (await tx((t) => t.leases.list(f))).map((l) => l.id);
      expect(await list({ limit: 50 })).toEqual([...ids].reverse());
      expect(await list({ limit: 2 })).toEqual(["l5", "l4"]);
      expect(await list({ limit: 50, appId: "a2" })).toEqual(["l3", "l2"]);
      expect(await list({ limit: 50, identity: { kind: "user", id: "u1" } })).toEqual(["l5", "l4", "l2", "l1"]);
      expect(await list({ limit: 50, identity: { kind: "ip", id: "198.51.100.1" } })).toEqual(["l3"]);
      expect(await list({ limit: 50, status: "cancelled" })).toEqual(["l4"]);
      expect(await list({ limit: 50, appId: "a1", status: "queued", identity: { kind: "user", id: "u1" } })).toEqual([
        "l1",
      ]);
      expect(await list({ limit: 50, appId: "zzz" })).toEqual([]);
    });

    it("leases: a page after the first is the keyset seq < before, for every filter", async () => {
      const seqs = await tx(async (t) => {
        const out: Record<string, number> = {};
        for (const [id, over] of [
          ["k1", {}],
          ["k2", { status: "expired" as const }],
          ["k3", { appId: "a2", status: "expired" as const }],
          ["k4", { status: "expired" as const }],
          ["k5", {}],
        ] as const)
          out[id] = (await t.leases.insert(newLease(id, over))).seq;
        return out;
      });
      const list = async (f: LeaseFilter) => (await tx((t) => t.leases.list(f))).map((l) => l.id);
      expect(await list({ limit: 2, before: seqs["k5"]! })).toEqual(["k4", "k3"]);
      expect(await list({ limit: 50, status: "expired", before: seqs["k4"]! })).toEqual(["k3", "k2"]);
      expect(await list({ limit: 50, appId: "a1", status: "expired", before: seqs["k4"]! })).toEqual(["k2"]);
      expect(await list({ limit: 50, identity: { kind: "user", id: "u1" }, before: seqs["k2"]! })).toEqual(["k1"]);
      expect(
        await list({ limit: 50, identity: { kind: "user", id: "u1" }, status: "expired", before: seqs["k5"]! }),
      ).toEqual(["k4", "k3", "k2"]);
      expect(await list({ limit: 50, before: seqs["k1"]! })).toEqual([]);
    });

    it("users and apps: pages by name after a name; users found by a piece of their name or id, any case", async () => {
      await tx(async (t) => {
        for (const [id, name] of [
          ["u3", "carol"],
          ["u1", "alice"],
          ["u2", "Bob-admin"],
          ["u4", "dave"],
        ])
          await t.users.insert(user(id!, { name: name! }));
        await t.apps.insert(app("a2", "u1", { name: "zeta" }));
        await t.apps.insert(app("a1", "u1", { name: "alpha" }));
        await t.apps.insert(app("a3", "u1", { name: "mid" }));
      });
      const names = async (search: string | null, after: string | null, limit: number) =>
        (await tx((t) => t.users.page(search, { after, limit }))).map((u) => u.name);
      // The database's collation: "Bob-admin" before "alice" bytewise, after it in a language's order.
      const all = await names(null, null, 10);
      expect([...all].sort()).toEqual(["Bob-admin", "alice", "carol", "dave"]);
      expect(await names(null, null, 2)).toEqual(all.slice(0, 2));
      expect(await names(null, all[1]!, 10)).toEqual(all.slice(2));
      expect(await names("ADMIN", null, 10)).toEqual(["Bob-admin"]);
      expect(await names("U4", null, 10)).toEqual(["dave"]);
      expect(await names("a", all[all.length - 1]!, 10)).toEqual([]);
      const apps = async (after: string | null, limit: number) =>
        (await tx((t) => t.apps.page({ after, limit }))).map((a) => a.name);
      expect(await apps(null, 2)).toEqual(["alpha", "mid"]);
      expect(await apps("mid", 2)).toEqual(["zeta"]);
    });

    it("a read sees what is committed, with the ledger as stored (not rolled), and changes nothing", async () => {
      await tx(async (t) => {
        await t.users.insert(user("u1"));
        await t.ledgers.put("user:u1", { windowStartedAt: 1_000, usedMs: 5, reservedMs: 7, bonusMs: 0, runs: 2 });
        await t.leases.insert(newLease("r1"));
      });
      const seen = await store.read(async (t) => ({
        ledger: await t.ledgers.get("user:u1"),
        none: await t.ledgers.get("user:nobody"),
        lease: (await t.leases.get("r1"))?.status,
        user: (await t.users.get("u1"))?.id,
      }));
      expect(seen).toEqual({
        ledger: { windowStartedAt: 1_000, usedMs: 5, reservedMs: 7, bonusMs: 0, runs: 2 },
        none: null,
        lease: "queued",
        user: "u1",
      });
      if (store.kind === "postgres")
        await expect(
          store.read((t) =>
            t.ledgers.put("user:u1", { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 }),
          ),
        ).rejects.toThrow();
      expect(await tx((t) => t.ledgers.get("user:u1"))).toMatchObject({ usedMs: 5, reservedMs: 7 });
    });

    it("leases: live leases in arrival order; the earliest certain end among one identity's live leases", async () => {
      await tx(async (t) => {
        const l1 = await t.leases.insert(newLease("l1"));
        await t.leases.insert(newLease("l2"));
        const l3 = await t.leases.insert(newLease("l3"));
        const l4 = await t.leases.insert(newLease("l4"));
        await t.leases.insert(newLease("l5", { identityId: "u2" }));
        await t.leases.update(active(l1, 90_000));
        await t.leases.update(active(l3, 80_000));
        await t.leases.update({ ...active(l4, 10_000), status: "expired", endedAt: 10_000 });
      });
      expect((await tx((t) => t.leases.live())).map((l) => [l.id, l.status])).toEqual([
        ["l1", "active"],
        ["l2", "queued"],
        ["l3", "active"],
        ["l5", "queued"],
      ]);
      // u1: active l1 (deadline 90 s), queued l2, active l3 (deadline 80 s): the earliest is l3's deadline
      // unless a queued lease must end sooner (queued_at + timeout + duration).
      expect(await tx((t) => t.leases.earliestEnd({ kind: "user", id: "u1" }, 60_000))).toBe(80_000);
      const l5 = await tx((t) => t.leases.get("l5"));
      // u2 has only a queued lease: it ends at the latest when its queue timeout and then its duration have passed.
      expect(await tx((t) => t.leases.earliestEnd({ kind: "user", id: "u2" }, 60_000))).toBe(
        l5!.queuedAt + 60_000 + l5!.durationMs,
      );
      expect(await tx((t) => t.leases.earliestEnd({ kind: "ip", id: "u1" }, 60_000))).toBeNull();
    });

    it("signing keys: none at first, then oldest first", async () => {
      expect(await tx((t) => t.signingKeys.list())).toEqual([]);
      const k1 = { kid: "k1", privateJwk: '{"d":"1"}', publicJwk: '{"x":"1"}', createdAt: 1_000 };
      const k2 = { kid: "k2", privateJwk: '{"d":"2"}', publicJwk: '{"x":"2"}', createdAt: 2_000 };
      await tx((t) => t.signingKeys.insert(k2));
      await tx((t) => t.signingKeys.insert(k1));
      expect(await tx((t) => t.signingKeys.list())).toEqual([k1, k2]);
    });

    it("sessions: insert, get by hash, revoke one (idempotent), revoke all of a user's live ones; durable", async () => {
      await tx((t) => t.users.insert(user("u1")));
      await tx((t) => t.users.insert(user("u2")));
      const s = (idHash: string, userId: string) => ({
        idHash,
        userId,
        createdAt: 1_000,
        expiresAt: 9_000,
        revokedAt: null,
      });
      expect(await tx((t) => t.sessions.get("nope"))).toBeNull();
      await tx(async (t) => {
        await t.sessions.insert(s("h1", "u1"));
        await t.sessions.insert(s("h2", "u1"));
        await t.sessions.insert(s("h3", "u2"));
      });
      expect(await tx((t) => t.sessions.get("h1"))).toEqual(s("h1", "u1"));
      expect(await tx((t) => t.sessions.revoke("h1", 2_000))).toBe(true);
      expect(await tx((t) => t.sessions.revoke("h1", 3_000))).toBe(true);
      expect(await tx((t) => t.sessions.revoke("missing", 3_000))).toBe(false);
      expect(await tx((t) => t.sessions.get("h1"))).toMatchObject({ revokedAt: 2_000 });
      // h1 is already revoked: only h2 counts; u2's session is untouched.
      expect(await tx((t) => t.sessions.revokeForUser("u1", 4_000))).toBe(1);
      const again = await durable();
      const read = again ?? store;
      expect(await read.transaction((t) => t.sessions.get("h2"))).toMatchObject({ revokedAt: 4_000 });
      expect(await read.transaction((t) => t.sessions.get("h3"))).toEqual(s("h3", "u2"));
    });

    it("dashboard: sessions (user and operator) revoke once; a code is used once and never after expiry; the audit log pages newest first", async () => {
      await tx((t) => t.users.insert(user("u1")));
      const session = (idHash: string, userId: string | null) => ({
        idHash,
        role: userId === null ? ("admin" as const) : ("user" as const),
        userId,
        createdAt: 1_000,
        expiresAt: 9_000,
        revokedAt: null,
      });
      await tx(async (t) => {
        await t.dashboard.insertSession(session("d1", "u1"));
        await t.dashboard.insertSession(session("d2", null));
      });
      expect(await tx((t) => t.dashboard.getSession("d2"))).toEqual(session("d2", null));
      expect(await tx((t) => t.dashboard.getSession("nope"))).toBeNull();
      expect(await tx((t) => t.dashboard.revokeSession("d1", 2_000))).toBe(true);
      expect(await tx((t) => t.dashboard.revokeSession("d1", 3_000))).toBe(true);
      expect(await tx((t) => t.dashboard.revokeSession("nope", 3_000))).toBe(false);
      const code = (codeHash: string, expiresAt: number) => ({
        codeHash,
        role: "user" as const,
        userId: "u1",
        createdAt: 1_000,
        expiresAt,
        usedAt: null,
      });
      await tx(async (t) => {
        await t.dashboard.insertCode(code("c1", 5_000));
        await t.dashboard.insertCode(code("c2", 5_000));
      });
      expect(await tx((t) => t.dashboard.useCode("c1", 2_000))).toEqual({ ...code("c1", 5_000), usedAt: 2_000 });
      expect(await tx((t) => t.dashboard.useCode("c1", 2_001))).toBeNull();
      expect(await tx((t) => t.dashboard.useCode("c2", 5_000))).toBeNull();
      expect(await tx((t) => t.dashboard.useCode("missing", 1_000))).toBeNull();
      const entry = (id: string) => ({
        id,
        at: 1_000,
        action: "credits.grant",
        target: "u1",
        actor: "dashboard",
        detail: "{}",
      });
      await tx(async (t) => {
        for (const id of ["au_1", "au_2", "au_3"]) await t.dashboard.addAudit(entry(id));
      });
      const again = await durable();
      const read = again ?? store;
      expect(await read.transaction((t) => t.dashboard.getSession("d1"))).toMatchObject({ revokedAt: 2_000 });
      expect((await read.transaction((t) => t.dashboard.audit(null, 2))).map((e) => e.id)).toEqual(["au_3", "au_2"]);
      expect(await read.transaction((t) => t.dashboard.audit("au_2", 5))).toEqual([entry("au_1")]);
    });

    it("dashboard: refusals per hour add up, with the calls that ended without a GPU; granted calls newest first", async () => {
      const H = Date.UTC(2026, 11, 5, 9);
      await tx((t) =>
        t.dashboard.addRefusalHours([
          { hour: "2026-12-05T09", code: "quota_exceeded", count: 2 },
          { hour: "2026-12-05T10", code: "quota_exceeded", count: 1 },
        ]),
      );
      await tx((t) => t.dashboard.addRefusalHours([{ hour: "2026-12-05T09", code: "quota_exceeded", count: 3 }]));
      const record = (id: string, endedAt: number, grantedAt: number | null, appId: string | null) => ({
        id,
        identityKind: "user" as const,
        identityId: "u1",
        tier: "free",
        appId,
        node: null,
        size: "large",
        status: grantedAt === null ? "failed" : "released",
        queuedAt: endedAt - 10_000,
        grantedAt,
        endedAt,
        heldMs: grantedAt === null ? 0 : endedAt - grantedAt,
        reservedMs: 60_000,
        chargedMs: 0,
        quotaMs: 0,
        overageMs: 0,
        chargedMicros: 0,
        refundedMs: 0,
        problemCode: grantedAt === null ? "queue_timeout" : null,
        wallet: null,
      });
      await tx(async (t) => {
        await t.usage.insert(record("l1", H + 60_000, null, null));
        await t.usage.insert(record("l2", H + 120_000, H + 112_000, "a1"));
        await t.usage.insert(record("l3", H + 180_000, H + 171_000, "a2"));
      });
      const hours = await tx((t) => t.dashboard.refusalHours(H, H + 2 * 3600_000));
      const sum = (hour: string, code: string) =>
        hours.filter((h) => h.hour === hour && h.code === code).reduce((n, h) => n + h.count, 0);
      expect(sum("2026-12-05T09", "quota_exceeded")).toBe(5);
      expect(sum("2026-12-05T10", "quota_exceeded")).toBe(1);
      expect(sum("2026-12-05T09", "queue_timeout")).toBe(1);
      const all = await tx((t) => t.dashboard.grantedCalls(null, H, H + 3600_000, 10));
      expect(all.map((c) => c.grantedAt)).toEqual([H + 171_000, H + 112_000]);
      expect(all[0]).toEqual({
        queuedAt: H + 170_000,
        grantedAt: H + 171_000,
        heldMs: 9_000,
        reservedMs: 60_000,
        size: "large",
      });
      expect((await tx((t) => t.dashboard.grantedCalls("a1", H, H + 3600_000, 10))).map((c) => c.heldMs)).toEqual([
        8_000,
      ]);
    });

    /** A user's released 1 s call ended at `endedAt`: paid from credits when it has wallet transactions, else from quota. */
    const paidCall = (
      id: string,
      identityId: string,
      appId: string | null,
      endedAt: number,
      wallet: UsageRecordRow["wallet"],
    ): UsageRecordRow => ({
      id,
      identityKind: "user",
      identityId,
      tier: "pro",
      appId,
      node: null,
      size: "large",
      status: "released",
      queuedAt: endedAt - 2_000,
      grantedAt: endedAt - 1_000,
      endedAt,
      heldMs: 1_000,
      reservedMs: 60_000,
      chargedMs: 1_000,
      quotaMs: wallet === null ? 1_000 : 0,
      overageMs: wallet === null ? 0 : 1_000,
      chargedMicros: wallet === null ? 0 : 1_667,
      refundedMs: 0,
      problemCode: null,
      wallet,
    });

    it("usage: a call's wallet transactions round-trip on its record; a user's are listed newest record first", async () => {
      const record = (id: string, identityId: string, endedAt: number, wallet: UsageRecordRow["wallet"]) =>
        paidCall(id, identityId, null, endedAt, wallet);
      const entries = (n: number) => [
        { id: `wt_h${n}`, at: n * 1_000 - 2_000, kind: "hold" as const, amountMicros: 100_000, grantId: "cg_1" },
        { id: `wt_s${n}`, at: n * 1_000, kind: "spend" as const, amountMicros: 1_667, grantId: "cg_1" },
        { id: `wt_r${n}`, at: n * 1_000, kind: "release" as const, amountMicros: 98_333, grantId: "cg_1" },
      ];
      await tx(async (t) => {
        await t.usage.insert(record("l_1", "u1", 10_000, entries(10)));
        await t.usage.insert(record("l_2", "u1", 20_000, null));
        await t.usage.insert(record("l_3", "u1", 30_000, entries(30)));
        await t.usage.insert(record("l_4", "u2", 40_000, entries(40)));
      });
      const listed = await tx((t) => t.usage.walletEntries("u1", 10));
      expect(listed.map((e) => [e.id, e.leaseId, e.userId])).toEqual([
        ["wt_h30", "l_3", "u1"],
        ["wt_s30", "l_3", "u1"],
        ["wt_r30", "l_3", "u1"],
        ["wt_h10", "l_1", "u1"],
        ["wt_s10", "l_1", "u1"],
        ["wt_r10", "l_1", "u1"],
      ]);
      expect(listed[1]).toEqual({ ...entries(30)[1], userId: "u1", leaseId: "l_3" });
      expect((await tx((t) => t.usage.walletEntries("u1", 1))).map((e) => e.leaseId)).toEqual(["l_3", "l_3", "l_3"]);
      const [back] = await tx((t) =>
        t.usage.list({ scope: { kind: "all" }, from: 0, to: 50_000, identity: { kind: "user", id: "u2" } }, null, 5),
      );
      expect(back?.wallet).toEqual(entries(40));
      const quotaOnly = await tx((t) => t.usage.list({ scope: { kind: "all" }, from: 15_000, to: 25_000 }, null, 5));
      expect(quotaOnly.map((r) => [r.id, r.wallet])).toEqual([["l_2", null]]);
    });

    it("usage: a user's records, paid from credits or not, list as one sequence page by page either way; their scope adds their app's other callers once", async () => {
      // u1 alternates calls paid from quota and from credits (two disjoint per-user indexes since
      // migration 14), two of them ending at the same instant; u1 owns app a1, where u2 calls too.
      const calls: UsageRecordRow[] = [];
      for (let i = 0; i < 14; i++) {
        const endedAt = 100_000 + Math.floor(i / 2) * 1_000 + (i % 2 === 0 ? 0 : 500 * (i % 3));
        const credits = i % 3 !== 0;
        calls.push(
          paidCall(
            `l_${String(i).padStart(2, "0")}`,
            i % 5 === 4 ? "u2" : "u1",
            i % 4 === 0 ? "a1" : i % 5 === 4 ? "a2" : null,
            endedAt,
            credits ? [{ id: `wt_${i}`, at: endedAt, kind: "spend", amountMicros: 1_667, grantId: "cg_1" }] : null,
          ),
        );
      }
      calls.push({ ...calls[4]!, id: "l_u2a1", identityId: "u2", appId: "a1", endedAt: 101_000 });
      await tx(async (t) => {
        for (const c of calls) await t.usage.insert(c);
      });
      const ordered = (rows: readonly UsageRecordRow[]) =>
        [...rows].sort((a, b) => a.endedAt - b.endedAt || (a.id < b.id ? -1 : 1)).map((r) => r.id);
      const pages = async (filter: UsageFilter, order: "asc" | "desc") => {
        const ids: string[] = [];
        let after: { endedAt: number; id: string } | null = null;
        for (;;) {
          const page = await tx((t) => t.usage.list(filter, after, 3, order));
          ids.push(...page.map((r) => r.id));
          if (page.length < 3) return ids;
          after = { endedAt: page.at(-1)!.endedAt, id: page.at(-1)!.id };
        }
      };
      const u1 = calls.filter((c) => c.identityId === "u1");
      const byU1: UsageFilter = { scope: { kind: "all" }, from: 0, to: 200_000, identity: { kind: "user", id: "u1" } };
      expect(u1.some((c) => c.wallet === null) && u1.some((c) => c.wallet !== null)).toBe(true);
      expect(await pages(byU1, "asc")).toEqual(ordered(u1));
      expect(await pages(byU1, "desc")).toEqual(ordered(u1).reverse());
      const own = calls.filter((c) => c.identityId === "u1" || c.appId === "a1");
      const scoped: UsageFilter = { scope: { kind: "user", userId: "u1", appIds: ["a1"] }, from: 0, to: 200_000 };
      expect(await pages(scoped, "asc")).toEqual(ordered(own));
      expect(await pages(scoped, "desc")).toEqual(ordered(own).reverse());
      const summed = await tx((t) => t.usage.summary(scoped, "identity"));
      expect(summed.map((g) => [g.key, g.calls, g.overageMs])).toEqual([
        ["user:u1", u1.length, u1.filter((c) => c.wallet !== null).length * 1_000],
        [
          "user:u2",
          own.length - u1.length,
          own.filter((c) => c.identityId === "u2" && c.wallet !== null).length * 1_000,
        ],
      ]);
    });

    /** $5.00 purchased by user u1 (key pay_1). */
    const purchasedGrant = () => ({
      id: "cg_1",
      userId: "u1",
      category: "purchased" as const,
      amountMicros: 5_000_000,
      remainingMicros: 5_000_000,
      heldMicros: 0,
      priority: 10,
      effectiveAt: 1_000,
      expiresAt: null,
      source: "test",
      createdAt: 1_000,
      idempotencyKey: "pay_1",
    });

    it("wallets: grants, settings and transactions round-trip; a rolled-back change is neither cached nor stored", async () => {
      await tx((t) => t.users.insert(user("u1")));
      const grant = purchasedGrant();
      const account = {
        userId: "u1",
        overageEnabled: true,
        monthlyCapMicros: 2_000_000,
        month: "2026-12",
        monthSpentMicros: 7,
      };
      // Read first, so a caching adapter has the empty wallet cached before it changes.
      expect(await tx((t) => t.wallets.grants("u1"))).toEqual([]);
      expect(await tx((t) => t.wallets.account("u1"))).toBeNull();
      await tx(async (t) => {
        expect(await t.wallets.insertGrant(grant)).toBe(true);
        expect(await t.wallets.insertGrant(grant)).toBe(false);
        await t.wallets.putAccount(account);
        await t.wallets.addTransactions([
          {
            id: "wt_1",
            userId: "u1",
            at: 2_000,
            kind: "grant",
            amountMicros: 5_000_000,
            grantId: "cg_1",
            leaseId: null,
          },
        ]);
      });
      expect(await tx((t) => t.wallets.grants("u1"))).toEqual([grant]);
      expect(await tx((t) => t.wallets.grantByKey("u1", "pay_1"))).toEqual(grant);
      expect(await tx((t) => t.wallets.account("u1"))).toEqual(account);
      expect(await tx((t) => t.wallets.transactions("u1", 10))).toHaveLength(1);
      const boom = new Error("boom");
      await expect(
        tx(async (t) => {
          await t.wallets.updateGrant({ ...grant, remainingMicros: 1, heldMicros: 1 });
          await t.wallets.putAccount({ ...account, monthSpentMicros: 99 });
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await tx((t) => t.wallets.grants("u1"))).toEqual([grant]);
      expect(await tx((t) => t.wallets.account("u1"))).toEqual(account);
      await tx((t) => t.wallets.updateGrant({ ...grant, remainingMicros: 4_000_000, heldMicros: 1_000 }));
      expect(await tx((t) => t.wallets.grants("u1"))).toEqual([
        { ...grant, remainingMicros: 4_000_000, heldMicros: 1_000 },
      ]);
    });

    it("wallets: writes staged together are read back by the functions after them and committed with their group; a function that throws keeps none", async () => {
      await storage.coordination.lead(() => undefined);
      const stager = storage.coordination.leaderStager;
      await tx((t) => t.users.insert(user("u1")));
      const grant = purchasedGrant();
      const account = {
        userId: "u1",
        overageEnabled: true,
        monthlyCapMicros: null,
        month: "2026-12",
        monthSpentMicros: 0,
      };
      await tx(async (t) => {
        await t.wallets.insertGrant(grant);
        await t.wallets.putAccount(account);
      });
      const entry = (id: string, at: number, kind: "hold" | "spend" | "release", micros: number) => ({
        id,
        userId: "u1",
        at,
        kind,
        amountMicros: micros,
        grantId: "cg_1",
        leaseId: "l_1",
      });
      // Staged together, so an adapter that defers wallet writes to the end of a commit group has
      // them unwritten when the second function reads.
      const first = stager.stage(async (t) => {
        await t.wallets.updateGrant({ ...grant, remainingMicros: 4_000_000, heldMicros: 0 });
        await t.wallets.putAccount({ ...account, monthSpentMicros: 1_000_000 });
        await t.wallets.addTransactions([
          entry("wt_1", 2_000, "hold", 1_500_000),
          entry("wt_2", 3_000, "spend", 1_000_000),
        ]);
        await t.wallets.addTransactions([entry("wt_3", 3_000, "release", 500_000)]);
      });
      const second = stager.stage(async (t) => ({
        transactions: (await t.wallets.transactions("u1", 10)).map((x) => x.id),
        remaining: (await t.wallets.grants("u1")).map((g) => g.remainingMicros),
        byKey: (await t.wallets.grantByKey("u1", "pay_1"))?.remainingMicros,
        spent: (await t.wallets.account("u1"))?.monthSpentMicros,
      }));
      const [, seen] = await Promise.all([first, second]);
      await seen.committed;
      // Newest first: at 3,000 the two (by id, descending), then the hold at 2,000.
      const after = { transactions: ["wt_3", "wt_2", "wt_1"], remaining: [4_000_000], spent: 1_000_000 };
      expect(seen.value).toEqual({ ...after, byKey: 4_000_000 });
      const bad = stager.stage(async (t) => {
        await t.wallets.updateGrant({ ...grant, remainingMicros: 1, heldMicros: 0 });
        await t.wallets.putAccount({ ...account, monthSpentMicros: 9 });
        await t.wallets.addTransactions([entry("wt_bad", 4_000, "spend", 9)]);
        throw new Error("fails after writing");
      });
      await expect(bad).rejects.toThrow("fails after writing");
      const read = async (s: Store) =>
        s.transaction(async (t) => ({
          transactions: (await t.wallets.transactions("u1", 10)).map((x) => x.id),
          remaining: (await t.wallets.grants("u1")).map((g) => g.remainingMicros),
          spent: (await t.wallets.account("u1"))?.monthSpentMicros,
        }));
      expect(await read(store)).toEqual(after);
      const again = await durable();
      if (again) expect(await read(again)).toEqual(after);
    });

    it("a transaction that throws leaves nothing behind, cached or stored, and the error reaches the caller", async () => {
      await tx((t) =>
        t.ledgers.put("user:u1", { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 }),
      );
      const boom = new Error("boom");
      await expect(
        tx(async (t) => {
          await t.users.insert(user("u1"));
          await t.ledgers.put("user:u1", { windowStartedAt: 1, usedMs: 9, reservedMs: 9, bonusMs: 9, runs: 9 });
          await t.leases.insert(newLease("l1"));
          await t.signingKeys.insert({ kid: "k", privateJwk: "{}", publicJwk: "{}", createdAt: 1 });
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await tx((t) => t.users.get("u1"))).toBeNull();
      expect(await tx((t) => t.ledgers.get("user:u1"))).toEqual({
        windowStartedAt: null,
        usedMs: 0,
        reservedMs: 0,
        bonusMs: 0,
        runs: 0,
      });
      expect(await tx((t) => t.leases.get("l1"))).toBeNull();
      expect(await tx((t) => t.signingKeys.list())).toEqual([]);
      // The store is still usable afterwards.
      await tx((t) => t.users.insert(user("u1")));
      const again = await durable();
      if (again) {
        expect(await again.transaction((t) => t.users.get("u1"))).toEqual(user("u1"));
        expect(await again.transaction((t) => t.ledgers.get("user:u1"))).toMatchObject({ usedMs: 0, runs: 0 });
      }
    });

    it("concurrent transactions are serializable: no lost update", async () => {
      await tx((t) =>
        t.ledgers.put("app:a1", { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 }),
      );
      await Promise.all(
        Array.from({ length: 25 }, () =>
          tx(async (t) => {
            const l = await t.ledgers.get("app:a1");
            await new Promise((r) => setTimeout(r, 1));
            await t.ledgers.put("app:a1", { ...l!, reservedMs: l!.reservedMs + 1_000, runs: l!.runs + 1 });
          }),
        ),
      );
      expect(await tx((t) => t.ledgers.get("app:a1"))).toMatchObject({ reservedMs: 25_000, runs: 25 });
      // Written once per commit group by SQLite: what was committed is the last of them.
      const again = await durable();
      if (again)
        expect(await again.transaction((t) => t.ledgers.get("app:a1"))).toMatchObject({ reservedMs: 25_000, runs: 25 });
    });

    it("a transaction that resolved is durable, whatever a concurrent one does", async () => {
      const results = await Promise.allSettled([
        tx((t) => t.users.insert(user("ok1"))),
        tx(async (t) => {
          await t.users.insert(user("bad"));
          throw new Error("fails after writing");
        }),
        tx((t) => t.users.insert(user("ok2"))),
      ]);
      expect(results[1].status).toBe("rejected");
      const reader = (await durable()) ?? store;
      for (const [i, id] of [
        [0, "ok1"],
        [2, "ok2"],
      ] as const) {
        const found = await reader.transaction((t) => t.users.get(id));
        if (results[i].status === "fulfilled") expect(found, id).not.toBeNull();
        else expect(found, id).toBeNull();
      }
      expect(await reader.transaction((t) => t.users.get("bad"))).toBeNull();
    });

    it("transaction: fn may run more than once — a run the adapter retries leaves nothing behind, and the result is the last run's", async () => {
      // What PostgreSQL raises for a serialization failure: an adapter may roll the run back and run
      // fn again (PostgreSQL does), or hand the error to the caller (SQLite, which never raises it).
      let runs = 0;
      const outcome = await tx(async (t) => {
        runs++;
        await t.users.insert(user("u1", { tier: `run-${runs}` }));
        if (runs === 1) throw Object.assign(new Error("could not serialize access"), { code: "40001" });
        return runs;
      }).then(
        (value) => ({ value }),
        (err: unknown) => ({ err }),
      );
      if ("err" in outcome) {
        expect(runs).toBe(1);
        expect(await tx((t) => t.users.page(null, ALL))).toEqual([]);
      } else {
        // The first run's insert was rolled back, or the second would have failed on the unique id.
        expect(outcome.value).toBe(runs);
        expect(await tx((t) => t.users.page(null, ALL))).toEqual([user("u1", { tier: `run-${runs}` })]);
      }
    });

    it("leader stager: the value at once, writes visible to the functions staged after it, durable once committed", async () => {
      await storage.coordination.lead(() => undefined);
      const stager = storage.coordination.leaderStager;
      const first = await stager.stage(async (t) => {
        await t.users.insert(user("u1"));
        return 42;
      });
      expect(first.value).toBe(42);
      const second = await stager.stage(async (t) => {
        await t.users.insert(user("u2"));
        return t.users.get("u1");
      });
      expect(second.value).toMatchObject({ id: "u1" });
      await Promise.all([first.committed, second.committed]);
      expect((await tx((t) => t.users.page(null, ALL))).map((u) => u.id)).toEqual(["u1", "u2"]);
      const again = await durable();
      if (again)
        expect((await again.transaction((t) => t.users.page(null, ALL))).map((u) => u.id)).toEqual(["u1", "u2"]);
    });

    it("leader stager: a function that throws keeps none of its writes; every other one commits or hears of its rollback through `committed`", async () => {
      await storage.coordination.lead(() => undefined);
      const stager = storage.coordination.leaderStager;
      const runs = { ok1: 0, bad: 0, ok2: 0 };
      const staged = (id: keyof typeof runs) =>
        stager.stage(async (t) => {
          runs[id]++;
          await t.users.insert(user(id));
          await t.ledgers.put(`user:${id}`, {
            windowStartedAt: null,
            usedMs: 0,
            reservedMs: 1_000,
            bonusMs: 0,
            runs: 1,
          });
          if (id === "bad") throw new Error("fails after writing");
          return id;
        });
      // Staged together, so an adapter that groups commits puts them in one group.
      const [ok1, bad, ok2] = await Promise.allSettled([staged("ok1"), staged("bad"), staged("ok2")]);
      expect(bad.status).toBe("rejected");
      expect((bad as PromiseRejectedResult).reason).toMatchObject({ message: "fails after writing" });
      // Each function ran exactly once.
      expect(runs).toEqual({ ok1: 1, bad: 1, ok2: 1 });
      const committed: Record<string, boolean> = {};
      for (const [id, r] of [
        ["ok1", ok1],
        ["ok2", ok2],
      ] as const) {
        committed[id] =
          r.status === "fulfilled" &&
          (await r.value.committed.then(
            () => true,
            () => false,
          ));
      }
      const reader = (await durable()) ?? store;
      expect(await reader.transaction((t) => t.users.get("bad"))).toBeNull();
      expect(await reader.transaction((t) => t.ledgers.get("user:bad"))).toBeNull();
      for (const id of ["ok1", "ok2"]) {
        // Never half: the user and the ledger of one function are both kept or both gone.
        expect(
          await reader.transaction(async (t) => [
            (await t.users.get(id)) !== null,
            (await t.ledgers.get(`user:${id}`)) !== null,
          ]),
          id,
        ).toEqual([committed[id], committed[id]]);
      }
    });

    it("leader stager: an `ordered` stager never runs two functions at once", async () => {
      await storage.coordination.lead(() => undefined);
      const stager = storage.coordination.leaderStager;
      let running = 0;
      let most = 0;
      const staged = await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          stager.stage(async (t) => {
            most = Math.max(most, ++running);
            await new Promise((r) => setTimeout(r, 2));
            await t.users.insert(user(`o${i}`));
            running--;
          }),
        ),
      );
      await Promise.all(staged.map((s) => s.committed));
      if (stager.ordered) expect(most).toBe(1);
      expect(await tx((t) => t.users.page(null, ALL))).toHaveLength(5);
    });

    it("expired Idempotency-Keys are deleted in batches, and only those recorded at or before the cutoff", async () => {
      const key = (k: string, createdAt: number) => ({ scopeKey: k, leaseId: `ls_${k}`, request: "[1]", createdAt });
      await tx(async (t) => {
        for (const [k, at] of [
          ["a", 100],
          ["b", 200],
          ["c", 200],
          ["d", 300],
        ] as const)
          await t.idempotencyKeys.put(key(k, at));
      });
      expect(await tx((t) => t.idempotencyKeys.deleteRecordedBefore(200, 2))).toBe(2);
      expect(await tx((t) => t.idempotencyKeys.deleteRecordedBefore(200, 2))).toBe(1);
      expect(await tx((t) => t.idempotencyKeys.deleteRecordedBefore(200, 2))).toBe(0);
      // Re-recorded after it expired: a new use, kept.
      await tx((t) => t.idempotencyKeys.put(key("a", 400)));
      expect(await tx((t) => t.idempotencyKeys.deleteRecordedBefore(300, 10))).toBe(1);
      expect(await tx((t) => t.idempotencyKeys.get("a"))).toMatchObject({ createdAt: 400 });
      expect(await tx((t) => t.idempotencyKeys.get("d"))).toBeNull();
    });

    // Only for shared stores: SQLite has nothing to run these against (they would show as skipped).
    if (replicas)
      describe("coordination between replicas", () => {
        const sibling = async (): Promise<Storage> => {
          const other = await replicas.sibling(storage);
          extra.push(other);
          return other;
        };
        const settledWithin = async (p: Promise<unknown>, ms: number): Promise<boolean> =>
          Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

        it("is shared", () => {
          expect(storage.coordination.shared).toBe(true);
        });

        it("leadership is exclusive; when the leader closes, the other replica leads", async () => {
          const other = await sibling();
          await storage.coordination.lead(() => undefined);
          const waiting = other.coordination.lead(() => undefined);
          waiting.catch(() => undefined);
          expect(await settledWithin(waiting, 800)).toBe(false);
          await expect(other.coordination.leaderStager.stage(async () => 1)).rejects.toBeInstanceOf(
            LeadershipLostError,
          );
          await closeOnce(storage);
          const t0 = Date.now();
          await waiting;
          // Soon (it looks every 250 ms), not after a session timeout: what is checked is that it
          // takes over. Room for a stalled machine (it was 1 s, which a 0.75 s stall broke).
          expect(Date.now() - t0).toBeLessThan(5_000);
          await expect(
            other.coordination.leaderStager.stage(async (t) => t.users.insert(user("u1"))),
          ).resolves.toMatchObject({ value: undefined });
        });

        it("a leader whose session dies hears `lost` once, commits nothing more, and the other replica takes over", async () => {
          const other = await sibling();
          const lost: Error[] = [];
          await storage.coordination.lead((err) => lost.push(err));
          const waiting = other.coordination.lead(() => undefined);
          waiting.catch(() => undefined);
          // Committed before the session dies: with group commit, a staged transaction commits later.
          await (
            await storage.coordination.leaderStager.stage(async (t) => t.users.insert(user("before")))
          ).committed;
          await replicas.killLeaderSession(storage);
          const t0 = Date.now();
          await waiting;
          // Soon (it looks every 250 ms), not after a session timeout: what is checked is that it
          // takes over. Room for a stalled machine (it was 1 s, which a 0.75 s stall broke).
          expect(Date.now() - t0).toBeLessThan(5_000);
          await waitUntil(() => lost.length > 0);
          expect(lost).toHaveLength(1);
          expect(lost[0]).toBeInstanceOf(LeadershipLostError);
          await expect(
            storage.coordination.leaderStager.stage(async (t) => t.users.insert(user("after"))),
          ).rejects.toBeInstanceOf(LeadershipLostError);
          expect(await other.store.transaction((t) => t.users.get("after"))).toBeNull();
          expect(await other.store.transaction((t) => t.users.get("before"))).toMatchObject({ id: "before" });
          // The new leader commits; the old one may wait to lead again (and does not get it).
          await other.coordination.leaderStager.stage(async (t) => t.users.insert(user("new-leader")));
          const again = storage.coordination.lead(() => undefined);
          again.catch(() => undefined);
          expect(await settledWithin(again, 600)).toBe(false);
          expect(lost).toHaveLength(1);
        });

        it("a message published by one replica reaches the other's subscribers, and only on that channel", async () => {
          const other = await sibling();
          const heard: string[] = [];
          const off = await other.coordination.subscribe("wake", (p) => heard.push(p));
          await other.coordination.subscribe("else", (p) => heard.push(`else:${p}`));
          await storage.coordination.publish("wake", "hello");
          await waitUntil(() => heard.includes("hello"));
          await off();
          await storage.coordination.publish("wake", "gone");
          await storage.coordination.publish("else", "x");
          await waitUntil(() => heard.includes("else:x"));
          expect(heard).toEqual(["hello", "else:x"]);
        });
      });

    it("close can be called twice", async () => {
      await closeOnce(storage);
      await expect(
        Promise.race([storage.close().then(() => "closed"), new Promise((r) => setTimeout(() => r("hung"), 2_000))]),
      ).resolves.toBe("closed");
    });
  });
}

/** Polls until `check()` holds, for at most `ms`. */
async function waitUntil(check: () => boolean, ms = 3_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ── adapters ────────────────────────────────────────────────────────────────────────────────
const dirs: string[] = [];
const paths = new WeakMap<Storage, string>();
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function sqliteAt(url: string): Promise<Storage> {
  const storage = await openStorage(url);
  paths.set(storage, url);
  return storage;
}

storeContract(
  "sqlite (file)",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-store-"));
    dirs.push(dir);
    return sqliteAt(`sqlite:${join(dir, "contract.db")}`);
  },
  async (closed) => sqliteAt(paths.get(closed)!),
);

// PostgreSQL: a schema of its own per test on the run's server (test/pg/global-setup.ts); skipped,
// and said so at the end of the run, when there is none.
const urls = new WeakMap<Storage, string>();
async function postgresAt(url: string): Promise<Storage> {
  const storage = await openStorage(url);
  urls.set(storage, url);
  return storage;
}
describe.skipIf(!postgresUrl())("postgres", () => {
  storeContract(
    "postgres",
    () => postgresAt(freshPostgresUrl("contract")),
    (closed) => postgresAt(urls.get(closed)!),
    {
      sibling: (of) => postgresAt(urls.get(of)!),
      killLeaderSession: async (of) => {
        const url = urls.get(of)!;
        const schema = new URL(url).searchParams.get("schema")!;
        const admin = postgres(postgresUrl()!, { max: 1 });
        try {
          // The session holding this schema's leader lock (a bigint key: classid is its high half, objid its low half).
          const killed = await admin`
          SELECT pg_terminate_backend(pid) AS ok FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND ((classid::bigint << 32) | objid::bigint) = ${leaderLockKey(schema)}::bigint`;
          expect(killed.map((r) => r["ok"])).toEqual([true]);
        } finally {
          await admin.end();
        }
      },
    },
  );
});
