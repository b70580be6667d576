import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { openStorage } from "../src/storage/open-store.js";
import type { PostgresConnections } from "../src/storage/postgres/connections.js";
import type { Session } from "../src/storage/postgres/session.js";
import { parsePostgresUrl } from "../src/storage/postgres/url.js";
import { StorageUnavailableError } from "../src/storage/store.js";
import type { Storage } from "../src/storage/store.js";
import { lease, serveAt, sleep } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * A replica frozen in the middle of a transaction (SIGSTOP, a GC pause, a blocked event loop) must
 * not hold an identity's locks for every other replica: PostgreSQL ends a session idle inside a
 * transaction after idle_in_transaction_session_timeout, and a request waits for a lock at most
 * lock_timeout (longer), so the request behind the frozen one goes on.
 */

const opened: Storage[] = [];
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => undefined)));
});

async function open(url: string): Promise<Storage> {
  const storage = await openStorage(url);
  opened.push(storage);
  return storage;
}

const EMPTY = { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 };
/**
 * The idle-in-transaction timeout of the frozen-replica test, and how long its frozen replica stops
 * answering. Not shorter: every transaction of the test's replicas is idle between its statements
 * while this process runs, and a stall of this process longer than the timeout (0.5–2 s on a busy
 * machine) ended the session of one that was not meant to freeze (with 300 ms, CONNECTION_CLOSED).
 */
const IDLE_MS = 2_500;
const FROZEN_MS = 7_000;

describe("postgres storage URL: session timeouts", () => {
  it("reads idle_in_transaction_session_timeout and lock_timeout (ms), with defaults, and keeps them from the driver", () => {
    expect(parsePostgresUrl("postgres://u@h/db")).toMatchObject({
      idleInTransactionTimeoutMs: 2_000,
      lockTimeoutMs: 3_000,
      statementTimeoutMs: 5_000,
    });
    expect(
      parsePostgresUrl("postgres://u@h/db?idle_in_transaction_session_timeout=0&lock_timeout=250&sslmode=require"),
    ).toMatchObject({
      idleInTransactionTimeoutMs: 0,
      lockTimeoutMs: 250,
      connection: "postgres://u@h/db?sslmode=require",
    });
    expect(() =>
      parsePostgresUrl("postgres://u@h/db?idle_in_transaction_session_timeout=-1&lock_timeout=soon"),
    ).toThrow(/idle_in_transaction_session_timeout=.*lock_timeout=/);
  });
});

describe.skipIf(!postgresUrl())("postgres sessions idle in a transaction", () => {
  it("the pool's sessions and the leader's have the timeouts of the URL", async () => {
    const url = `${freshPostgresUrl("timeouts-set")}&idle_in_transaction_session_timeout=1234&lock_timeout=2345&statement_timeout=3456`;
    const storage = await open(url);
    await storage.coordination.lead(() => undefined);
    // The store's sessions and the leader's, as the connections keep them (not part of the Store interface).
    const connections = (storage.store as unknown as { connections: PostgresConnections }).connections;
    const leader = (connections as unknown as { leaderSessions: Set<Session> }).leaderSessions;
    expect(leader.size).toBe(1);
    const pooled = await connections.pool.run(async (s) => s.sql);
    for (const session of [pooled, ...[...leader].map((s) => s.sql)]) {
      const [row] = await session`
        SELECT current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('lock_timeout') AS lock,
               current_setting('statement_timeout') AS statement, current_setting('idle_session_timeout') AS idle_session`;
      expect(row).toEqual({ idle: "1234ms", lock: "2345ms", statement: "3456ms", idle_session: "0" });
    }
  });

  it("a replica frozen inside a transaction loses its session after the idle timeout; the next request for that identity goes on, and the frozen one's later writes are never sent", async () => {
    // One connection per replica, so the frozen replica's next transaction reconnects the very
    // connection its frozen transaction began on.
    const url = `${freshPostgresUrl("idle-tx")}&idle_in_transaction_session_timeout=${IDLE_MS}&lock_timeout=20000&max=1`;
    const frozen = await open(url);
    const other = await open(url);
    await other.store.transaction((t) => t.ledgers.put("user:frozen", { ...EMPTY, reservedMs: 1_000 }));

    let locked!: () => void;
    const hasLock = new Promise<void>((r) => (locked = r));
    let woke!: (err: unknown) => void;
    const lateWrite = new Promise<unknown>((r) => (woke = r));
    const t0 = Date.now();
    // Holds the identity's ledger lock, then stops answering for longer than the idle timeout
    // (a SIGSTOP would freeze the whole process; here only this transaction waits).
    const stalled = frozen.store.transaction(async (t) => {
      const l = (await t.ledgers.get("user:frozen")) ?? EMPTY;
      locked();
      await sleep(FROZEN_MS);
      // What it would have written when it woke: must never reach the database.
      await t.ledgers.put("user:frozen", { ...l, reservedMs: 999_000 }).then(
        () => woke(null),
        (err: unknown) => woke(err),
      );
    });
    stalled.catch(() => undefined);
    await hasLock;

    // Another replica admits for the same identity: it waits for the lock until PostgreSQL ends the
    // frozen session (IDLE_MS), then goes on — long before the frozen replica wakes up (FROZEN_MS;
    // the bound leaves room for a stalled machine, and was 1.2 s against a 1.2 s freeze).
    await other.store.transaction(async (t) => {
      const l = (await t.ledgers.get("user:frozen")) ?? EMPTY;
      await t.ledgers.put("user:frozen", { ...l, reservedMs: l.reservedMs + 2_000 });
    });
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(IDLE_MS - 50);
    expect(waited).toBeLessThan(FROZEN_MS - 1_000);

    // The frozen replica's transaction failed as soon as its session was gone; the replica works
    // again, on a new session (the same connection, reconnected).
    await expect(stalled).rejects.toBeInstanceOf(StorageUnavailableError);
    expect(await frozen.store.transaction((t) => t.ledgers.get("user:frozen"))).toMatchObject({ reservedMs: 3_000 });

    // When it wakes, its late write is refused here rather than sent on that new session, outside
    // any transaction and without the lock it read the ledger under (nor into a closed socket).
    expect(await lateWrite).toBeInstanceOf(StorageUnavailableError);
    await sleep(100);
    expect(await other.store.transaction((t) => t.ledgers.get("user:frozen"))).toMatchObject({ reservedMs: 3_000 });
  });

  it("a lock held by a busy (not idle) session is waited for at most lock_timeout: 503 storage_unavailable, not the statement timeout", async () => {
    const url = `${freshPostgresUrl("lock-timeout")}&lock_timeout=300&statement_timeout=5000`;
    const storage = await open(url);
    await storage.store.transaction((t) => t.ledgers.put("user:busy", EMPTY));
    const schema = new URL(url).searchParams.get("schema")!;
    const holder = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
    try {
      let locked!: () => void;
      const hasLock = new Promise<void>((r) => (locked = r));
      const holding = holder.begin(async (sql) => {
        await sql`SELECT * FROM ledgers WHERE identity = 'user:busy' FOR UPDATE`;
        locked();
        // Far longer than lock_timeout, so only lock_timeout can end the wait before the bound below
        // (it was 1.5 s against a bound of 1.2 s, with no room for a stalled machine).
        await sql`SELECT pg_sleep(5)`;
      });
      await hasLock;
      const t0 = Date.now();
      const err: unknown = await storage.store
        .transaction((t) => t.ledgers.get("user:busy"))
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(StorageUnavailableError);
      expect((err as Error).message).toMatch(/lock_timeout/);
      expect((err as StorageUnavailableError).reason).toBe("contention");
      expect(Date.now() - t0).toBeLessThan(4_000);
      await holding;
    } finally {
      await holder.end();
    }
  });
});

describe.skipIf(!postgresUrl())("a replica frozen mid-transaction, seen over HTTP", () => {
  it("with the default timeouts, the next lease request for that identity on another replica is granted once PostgreSQL ends the frozen session", async () => {
    const url = freshPostgresUrl("idle-http");
    const dir = mkdtempSync(join(tmpdir(), "gpupool-idle-"));
    const server = await serveAt(dir, { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } }, { storageUrl: url });
    servers.push(server);
    const owner = await server.user("frozen-owner", "pro");
    const first = await lease(server, owner.token, { duration: 10 });
    expect(first.status).toBe(201);

    // Another replica of the same schema stalls while it holds the user's ledger lock, for longer
    // than the statement timeout (5 s): without the idle timeout (2 s) every request for that user
    // would wait for it and fail with 503.
    const frozen = await open(url);
    let locked!: () => void;
    const hasLock = new Promise<void>((r) => (locked = r));
    const stalled = frozen.store.transaction(async (t) => {
      await t.ledgers.get(`user:${owner.id}`);
      locked();
      await sleep(6_000);
    });
    stalled.catch(() => undefined);
    await hasLock;

    const t0 = Date.now();
    const second = await lease(server, owner.token, { duration: 10 });
    expect(second.status, JSON.stringify(second.body)).toBe(201);
    // The 201 is what shows the idle timeout (2 s) worked: waiting on, the request would have met
    // lock_timeout (3 s) or statement_timeout (5 s), a 503. The bound only keeps it below the
    // frozen replica's wake-up (6 s), with room for a stalled machine (it was 3 s).
    expect(Date.now() - t0).toBeLessThan(4_500);
    const quota = await server.call("GET", "/v1/quota", { token: owner.token });
    expect(quota.body).toMatchObject({ reserved: 20 });
    await expect(stalled).rejects.toBeInstanceOf(StorageUnavailableError);
  });
});
