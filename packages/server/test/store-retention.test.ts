import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import { newLease } from "./store-fixtures.js";
import type { LeaseRecord, LeaseStatus, NewLease, Storage, Store, Tx } from "../src/storage/store.js";
import { usageRecordOf } from "../src/use-cases/accounts/usage-records.js";

/**
 * The storage contract's retention part (RetentionTx), run against both adapters: what each batch
 * deletes and what it must never delete, and that a batch is bounded by its limit.
 */
function retentionContract(name: string, open: () => Promise<{ storage: Storage; reopen: () => Promise<Storage> }>) {
  describe(`storage contract, retention: ${name}`, () => {
    let storage: Storage;
    let store: Store;
    let reopen: () => Promise<Storage>;
    const extra: Storage[] = [];
    beforeEach(async () => {
      ({ storage, reopen } = await open());
      store = storage.store;
    });
    afterEach(async () => {
      for (const s of [storage, ...extra.splice(0)]) await s.close().catch(() => undefined);
    });
    const tx = <T>(fn: (t: Tx) => Promise<T>): Promise<T> => store.transaction(fn);

    const DAY = 86_400_000;
    const NOW = 1_000 * DAY;
    const lease = (id: string, queuedAt: number, over: Partial<NewLease> = {}): NewLease =>
      newLease(id, { queuedAt, ...over });
    /** A lease that ended at `endedAt` with `status`, with its usage record unless `usage` is false. */
    const ended = async (id: string, endedAt: number, o: { status?: LeaseStatus; usage?: boolean } = {}) =>
      tx(async (t) => {
        const l = await t.leases.insert(lease(id, endedAt - 70_000));
        const done: LeaseRecord = {
          ...l,
          status: o.status ?? "released",
          grantedAt: endedAt - 60_000,
          endedAt,
          heldMs: 60_000,
          chargedMs: 60_000,
        };
        await t.leases.update(done);
        if (o.usage !== false) await t.usage.insert(usageRecordOf(done));
        return done;
      });
    const leaseIds = async () =>
      (await tx((t) => t.leases.list({ limit: 1000 }))).map((l) => l.id).sort((a, b) => a.localeCompare(b));
    const usageIds = async () =>
      (await tx((t) => t.usage.list({ scope: { kind: "all" }, from: 0, to: Number.MAX_SAFE_INTEGER }, null, 1000))).map(
        (r) => r.id,
      );
    /** Walks a table to its end, as the job does; the largest batch seen. */
    async function walk<K>(from: K, batch: (t: Tx, after: K) => Promise<{ deleted: number; next: K | null }>) {
      let after: K | null = from;
      let deleted = 0;
      let batches = 0;
      while (after !== null) {
        const at: K = after;
        const r = await tx((t) => batch(t, at));
        deleted += r.deleted;
        after = r.next;
        if (++batches > 100) throw new Error("the walk does not end");
      }
      return { deleted, batches };
    }

    it("leases: only ended ones older than the cutoff whose usage record exists; never live ones or the newest; bounded batches", async () => {
      const cutoff = NOW - 30 * DAY;
      for (let i = 0; i < 5; i++) await ended(`old-${i}`, cutoff - DAY + i);
      await ended("old-cancelled", cutoff - DAY, { status: "cancelled" });
      await ended("old-without-usage", cutoff - DAY, { usage: false });
      await tx((t) => t.leases.insert(lease("old-queued", cutoff - 2 * DAY)));
      await tx(async (t) => {
        const l = await t.leases.insert(lease("old-active", cutoff - 2 * DAY));
        await t.leases.update({ ...l, status: "active", grantedAt: cutoff - DAY, deadline: cutoff + 60_000 });
      });
      await ended("recent", cutoff + DAY);
      // Deleting at most 2 per batch, walking 2 leases per batch.
      const batches: number[] = [];
      let after: number | null = 0;
      while (after !== null) {
        const at: number = after;
        const r = await tx((t) => t.retention.deleteEndedLeases(at, cutoff, 2));
        batches.push(r.deleted);
        after = r.next;
      }
      expect(Math.max(...batches)).toBeLessThanOrEqual(2);
      expect(batches.reduce((a, b) => a + b, 0)).toBe(6);
      expect(await leaseIds()).toEqual(["old-active", "old-queued", "old-without-usage", "recent"]);
      // The bill is untouched: every usage record is still there.
      expect((await usageIds()).length).toBe(7);
      expect(await tx((t) => t.leases.get("old-0"))).toBeNull();

      // The newest lease stays even when it is old enough: its seq is never handed out again.
      const newest = await ended("newest-but-old", cutoff - DAY);
      expect((await walk(0, (t, a: number) => t.retention.deleteEndedLeases(a, NOW, 10))).deleted).toBe(1); // "recent"
      expect(await leaseIds()).toEqual(["newest-but-old", "old-active", "old-queued", "old-without-usage"]);
      const next = await tx((t) => t.leases.insert(lease("after", NOW)));
      expect(next.seq).toBeGreaterThan(newest.seq);
    });

    it("usage records: only those older than their cutoff whose lease is gone, oldest first, bounded", async () => {
      for (let i = 0; i < 5; i++) await ended(`u-${i}`, NOW - 400 * DAY + i);
      await ended("kept-lease", NOW - 400 * DAY);
      await ended("recent", NOW - DAY);
      // The leases go first (as the job does), all but "kept-lease" (whose lease is still kept) and the newest.
      await tx(async (t) => {
        const l = await t.leases.get("kept-lease");
        await t.leases.update({ ...l!, status: "active", endedAt: null });
      });
      await walk(0, (t, a: number) => t.retention.deleteEndedLeases(a, NOW, 100));
      expect(await tx((t) => t.retention.deleteUsageRecords(NOW - 365 * DAY, 3))).toBe(3);
      expect(await tx((t) => t.retention.deleteUsageRecords(NOW - 365 * DAY, 3))).toBe(2);
      expect(await tx((t) => t.retention.deleteUsageRecords(NOW - 365 * DAY, 3))).toBe(0);
      expect((await usageIds()).sort()).toEqual(["kept-lease", "recent"]);
    });

    it("ledgers: only those that read as no ledger — window long over or nothing counted, nothing reserved, no live lease", async () => {
      const W = DAY;
      const before = NOW - W - 7 * DAY; // windows that started before this ended more than 7 days ago
      const old = { windowStartedAt: before - 1, usedMs: 50_000, reservedMs: 0, bonusMs: 10_000, runs: 3 };
      const ledgers = {
        "ip:a": old,
        "ip:b": old,
        "ip:c": { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 },
        "user:reserved": { ...old, reservedMs: 60_000 },
        "user:recent": { ...old, windowStartedAt: before + 1 },
        "user:bonus-waiting": { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 5_000, runs: 0 },
        // An overage lease reserves nothing on the ledger, but it is live: its settlement reads the ledger.
        "user:live": old,
      };
      await tx(async (t) => {
        for (const [identity, state] of Object.entries(ledgers)) await t.ledgers.put(identity, state);
        await t.leases.insert(lease("live", NOW, { identityId: "live", quotaMs: 0, overageMs: 60_000 }));
      });
      const r = await walk("", (t, a: string) => t.retention.deleteIdleLedgers(a, before, 2));
      expect(r.deleted).toBe(3);
      expect(r.batches).toBe(4); // 7 ledgers, 2 looked at per batch
      const left = await tx(async (t) => {
        const out: Record<string, unknown> = {};
        for (const identity of Object.keys(ledgers)) out[identity] = await t.ledgers.get(identity);
        return out;
      });
      expect(left).toEqual({
        ...ledgers,
        "ip:a": null,
        "ip:b": null,
        "ip:c": null,
      });
    });

    it("ledgers: one deleted and then written again is stored (no write is lost to a cached row)", async () => {
      const old = { windowStartedAt: 1, usedMs: 50_000, reservedMs: 0, bonusMs: 0, runs: 3 };
      const fresh = { windowStartedAt: NOW, usedMs: 0, reservedMs: 60_000, bonusMs: 0, runs: 1 };
      await tx((t) => t.ledgers.put("ip:x", old));
      expect(await tx((t) => t.ledgers.get("ip:x"))).toEqual(old);
      expect((await walk("", (t, a: string) => t.retention.deleteIdleLedgers(a, NOW, 10))).deleted).toBe(1);
      expect(await tx((t) => t.ledgers.get("ip:x"))).toBeNull();
      await tx(async (t) => {
        await t.ledgers.get("ip:x");
        await t.ledgers.put("ip:x", fresh);
      });
      // A change staged in the same commit group as the delete, before it, is stored after all.
      await tx((t) => t.ledgers.put("ip:y", old));
      expect(await tx((t) => t.ledgers.get("ip:y"))).toEqual(old);
      await Promise.all([
        tx(async (t) => t.ledgers.put("ip:y", { ...fresh, usedMs: 7 })),
        tx((t) => t.retention.deleteIdleLedgers("", NOW, 10)),
      ]);
      await storage.close();
      const again = await reopen();
      extra.push(again);
      storage = again;
      expect(await again.store.transaction((t) => t.ledgers.get("ip:x"))).toEqual(fresh);
      expect(await again.store.transaction((t) => t.ledgers.get("ip:y"))).toEqual({ ...fresh, usedMs: 7 });
    });

    it("sessions, dashboard sessions and sign-in codes: those that ended (expired or revoked) before the cutoff, bounded", async () => {
      const cutoff = NOW - 7 * DAY;
      await tx(async (t) => {
        await t.users.insert({
          id: "u1",
          name: "u1",
          tier: "free",
          tokenHash: "th",
          quotaOverrideMs: null,
          createdAt: 1,
        });
        const s = (idHash: string, expiresAt: number, revokedAt: number | null) =>
          t.sessions.insert({ idHash, userId: "u1", createdAt: 1, expiresAt, revokedAt });
        const d = (idHash: string, expiresAt: number, revokedAt: number | null) =>
          t.dashboard.insertSession({ idHash, role: "user", userId: "u1", createdAt: 1, expiresAt, revokedAt });
        for (const add of [s, d]) {
          await add("expired-1", cutoff - 3, null);
          await add("expired-2", cutoff - 2, null);
          await add("revoked", NOW + DAY, cutoff - 1);
          await add("revoked-lately", NOW + DAY, cutoff + 1);
          await add("expired-lately", cutoff + 1, null);
          await add("live", NOW + DAY, null);
        }
        const code = (codeHash: string, expiresAt: number, usedAt: number | null) =>
          t.dashboard.insertCode({ codeHash, role: "admin", userId: null, createdAt: 1, expiresAt, usedAt });
        await code("used-old", cutoff - 5, cutoff - 10);
        await code("unused-old", cutoff - 5, null);
        await code("recent", NOW + 60_000, null);
      });
      for (const del of [
        (t: Tx, n: number) => t.retention.deleteEndedSessions(cutoff, n),
        (t: Tx, n: number) => t.retention.deleteEndedDashboardSessions(cutoff, n),
      ]) {
        expect(await tx((t) => del(t, 2))).toBe(2);
        expect(await tx((t) => del(t, 2))).toBe(1);
        expect(await tx((t) => del(t, 2))).toBe(0);
      }
      const kept = ["revoked-lately", "expired-lately", "live"];
      const gone = ["expired-1", "expired-2", "revoked"];
      for (const id of kept) {
        expect(await tx((t) => t.sessions.get(id)), id).not.toBeNull();
        expect(await tx((t) => t.dashboard.getSession(id)), id).not.toBeNull();
      }
      for (const id of gone) {
        expect(await tx((t) => t.sessions.get(id)), id).toBeNull();
        expect(await tx((t) => t.dashboard.getSession(id)), id).toBeNull();
      }
      expect(await tx((t) => t.retention.deleteExpiredDashboardCodes(cutoff, 10))).toBe(2);
      expect(await tx((t) => t.retention.deleteExpiredDashboardCodes(cutoff, 10))).toBe(0);
    });

    if (name === "postgres")
      it("a row another transaction holds is passed by, not waited for, and deleted by a later run", async () => {
        await ended("held", NOW - 40 * DAY);
        await ended("free", NOW - 40 * DAY);
        await ended("newest", NOW);
        let letGo!: () => void;
        const holding = new Promise<void>((r) => (letGo = r));
        let held!: () => void;
        const locked = new Promise<void>((r) => (held = r));
        // A release reading its lease holds the row until it commits.
        const release = tx(async (t) => {
          await t.leases.get("held");
          held();
          await holding;
        });
        await locked;
        const first = await walk(0, (t, a: number) => t.retention.deleteEndedLeases(a, NOW - 30 * DAY, 10));
        expect(first.deleted).toBe(1);
        letGo();
        await release;
        const second = await walk(0, (t, a: number) => t.retention.deleteEndedLeases(a, NOW - 30 * DAY, 10));
        expect(second.deleted).toBe(1);
        expect(await leaseIds()).toEqual(["newest"]);
      });
  });
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

retentionContract("sqlite (file)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-retention-"));
  dirs.push(dir);
  const url = `sqlite:${join(dir, "retention.db")}`;
  return { storage: await openStorage(url), reopen: () => openStorage(url) };
});

describe.skipIf(!postgresUrl())("postgres", () => {
  retentionContract("postgres", async () => {
    const url = freshPostgresUrl("retention");
    return { storage: await openStorage(url), reopen: () => openStorage(url) };
  });
});
