import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../../../test/pg/cluster.js";
import type { Cluster } from "../../../test/pg/cluster.js";
import { freshPostgresUrl, postgresBin, postgresUrl } from "../../../test/pg/postgres-url.js";
import { lockSpace } from "../src/storage/postgres/connections.js";
import type { TestServer } from "./harness.js";
import { ADMIN, lease, serveAt, sleep } from "./harness.js";

/**
 * Reads on PostgreSQL are plain snapshot reads (issue 17): a quota, a lease, a diagnosis, a list
 * takes no advisory lock and no row lock — so it never waits for an admission of the same
 * identity — and gets no transaction id, so it writes no WAL. Before, `GET /v1/quota` took the
 * identity's advisory lock and `SELECT … FOR UPDATE` (0.91 transactions, 0.54 WAL flushes each).
 */

const DAY_MS = 86_400_000;
const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close().catch(() => undefined);
});

/** A server on `url`, its clock at `clock.at` (ms). */
async function server(url: string, clock: { at: number }): Promise<TestServer> {
  const t = await serveAt(
    mkdtempSync(join(tmpdir(), "gpupool-reads-")),
    {},
    {
      storageUrl: url,
      clock: { now: () => clock.at },
    },
  );
  opened.push(t);
  return t;
}

/** A user who has used 1 s of their window (a lease granted and released), an app, and one lease of each. */
async function withHistory(t: TestServer, clock: { at: number }) {
  const alice = await t.user("alice", "free");
  const app = await t.appFor("demo", alice.id);
  const granted = await lease(t, alice.token, { duration: 10 });
  expect(granted.status).toBe(201);
  clock.at += 2_000;
  const released = await t.call("POST", `/v1/leases/${granted.body.id}/release`, { token: alice.token, body: {} });
  expect(released.status).toBe(200);
  return { alice, app, leaseId: granted.body.id as string };
}

/** Every read a caller can make of the identity's state and lists, each expected 200. */
function reads(s: { alice: { id: string; token: string }; leaseId: string }): [string, string, string][] {
  return [
    ["GET", "/v1/quota", s.alice.token],
    ["GET", "/v1/me", s.alice.token],
    ["GET", `/v1/leases/${s.leaseId}`, s.alice.token],
    ["GET", "/v1/leases?limit=5", s.alice.token],
    ["GET", "/v1/leases?status=released&limit=5", s.alice.token],
    ["GET", "/v1/diagnose?duration=5", s.alice.token],
    ["GET", `/v1/admin/users/${s.alice.id}`, ADMIN],
    ["GET", "/v1/admin/users?limit=10", ADMIN],
    ["GET", "/v1/admin/apps?limit=10", ADMIN],
  ];
}

describe.skipIf(!postgresUrl())("PostgreSQL reads take no locks", () => {
  it("every read answers while another transaction holds the identity's advisory lock and ledger row (an admission in flight)", async () => {
    const url = freshPostgresUrl("reads-nowait");
    const clock = { at: Date.now() };
    const t = await server(url, clock);
    const s = await withHistory(t, clock);
    const before = (await t.call("GET", "/v1/quota", { token: s.alice.token })).body;

    // An admission for alice in flight on another replica: her advisory lock, then her ledger and
    // lease rows FOR UPDATE (the lock order of postgres-tx.ts), held until we let go — on a session
    // of our own, which no idle timeout ends.
    const schema = new URL(url).searchParams.get("schema")!;
    const sql = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
    opened.push({ close: () => sql.end({ timeout: 1 }) });
    let holding = false;
    let releaseLocks!: () => void;
    const letGo = new Promise<void>((r) => (releaseLocks = r));
    const locked = new Promise<void>((resolve, reject) => {
      sql
        .begin(async (tx) => {
          await tx`SELECT pg_advisory_xact_lock(${lockSpace("ledger", schema)}::int4, hashtext(${`user:${s.alice.id}`}))`;
          await tx`SELECT 1 FROM ledgers WHERE identity = ${`user:${s.alice.id}`} FOR UPDATE`;
          await tx`SELECT 1 FROM leases WHERE id = ${s.leaseId} FOR UPDATE`;
          holding = true;
          resolve();
          await letGo;
        })
        .catch(reject)
        .finally(() => (holding = false));
    });
    await locked;

    for (const [method, path, token] of reads(s)) {
      const r = await t.call(method, path, { token });
      expect(r.status, `${path}: ${JSON.stringify(r.body)}`).toBe(200);
      // Answered while the locks were still held: it did not wait for them.
      expect(holding, path).toBe(true);
    }
    expect((await t.call("GET", "/v1/quota", { token: s.alice.token })).body).toEqual(before);
    expect(holding).toBe(true);
    releaseLocks();
  });

  it("a read of a window that ended shows a fresh window, and writes nothing: the stored ledger keeps the old window until a write", async () => {
    const url = freshPostgresUrl("reads-rolled");
    const clock = { at: Date.now() };
    const t = await server(url, clock);
    const s = await withHistory(t, clock);
    const quota = async () => (await t.call("GET", "/v1/quota", { token: s.alice.token })).body;
    const used = (await quota()).used;
    expect(used).toBeGreaterThan(0);

    clock.at += 2 * DAY_MS;
    const rolled = await quota();
    expect(rolled).toMatchObject({ used: 0, reserved: 0, runs: 0, window_started_at: null });
    const diagnosis = (await t.call("GET", "/v1/diagnose?duration=5", { token: s.alice.token })).body;
    expect(diagnosis.quota).toMatchObject({ used: 0 });
    const sql = postgres(postgresUrl()!, {
      max: 1,
      onnotice: () => undefined,
      connection: { search_path: new URL(url).searchParams.get("schema")! },
    });
    opened.push({ close: () => sql.end({ timeout: 1 }) });
    const [row] = await sql`SELECT used_ms FROM ledgers WHERE identity = ${`user:${s.alice.id}`}`;
    expect(Number(row?.["used_ms"])).toBe(used * 1000);
    // The next admission rolls it for real.
    const next = await lease(t, s.alice.token, { duration: 5 });
    expect(next.status).toBe(201);
    expect(next.body.quota).toMatchObject({ used: 0, reserved: 5 });
  });
});

describe.skipIf(!postgresUrl())("PostgreSQL reads write nothing (a cluster of their own)", () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster(postgresBin()!);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("50 rounds of every read assign no transaction id and write (almost) no WAL", { timeout: 180_000 }, async () => {
    // The leader renews its lease (a write) every 2 minutes: none during the reads.
    const url = `${cluster.url}${cluster.url.includes("?") ? "&" : "?"}schema=reads&leader_lease=600000`;
    const clock = { at: Date.now() };
    const t = await server(url, clock);
    const s = await withHistory(t, clock);
    const sql = postgres(cluster.url, { max: 1, onnotice: () => undefined });
    opened.push({ close: () => sql.end({ timeout: 1 }) });
    const mark = async () => {
      const [r] = await sql`SELECT pg_current_wal_insert_lsn() AS lsn, txid_current_snapshot() AS snap`;
      return { lsn: String(r?.["lsn"]), xmax: Number(String(r?.["snap"]).split(":")[1]) };
    };
    // Settle what the setup left (hint bits are not WAL-logged here: no checksums, no wal_log_hints).
    for (const [method, path, token] of reads(s)) await t.call(method, path, { token });
    await sleep(50);

    const rounds = 50;
    const start = await mark();
    for (let i = 0; i < rounds; i++)
      for (const [method, path, token] of reads(s)) {
        const r = await t.call(method, path, { token });
        expect(r.status, path).toBe(200);
      }
    const end = await mark();
    const [bytes] = await sql`SELECT pg_wal_lsn_diff(${end.lsn}, ${start.lsn})::bigint AS n`;
    const reqs = rounds * reads(s).length;
    // Before: every quota read alone took a transaction id (FOR UPDATE) and wrote its lock and commit.
    // The slack is for the server's background records (a running-transactions record every 15 s).
    expect(end.xmax - start.xmax, "transaction ids assigned").toBeLessThan(reqs / 50);
    expect(Number(bytes?.["n"]), "WAL bytes").toBeLessThan(reqs);
  });
});
