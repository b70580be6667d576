import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { postgresUrl } from "../pg/postgres-url.js";
import { IGNORED, findPgBouncer, startPgBouncer } from "../pg/pgbouncer.js";
import type { PgBouncer } from "../pg/pgbouncer.js";
import { call, runCli } from "./binary.js";
import type { ServerProcess } from "./binary.js";
import { Replicas, leaderOf, smallQuotaConfig, until } from "./replica-fixture.js";

/**
 * Replicas through PgBouncer, set up as docs/upgrades.md tells an operator to: session mode, the
 * startup parameters PgBouncer does not track ignored and set on the role instead. Leadership
 * (a session-level advisory lock), LISTEN/NOTIFY and migrations all work through it, and a leader
 * killed with -9 is replaced (PgBouncer's DISCARD ALL frees its lock with its server connection).
 */

const ADMIN = "pgbouncer-test-admin-token-0123456789";
const pg = postgresUrl();
const bin = findPgBouncer();
const fleet = new Replicas(ADMIN);
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await fleet.stopAll();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A role of this test's own, carrying what gpupool would have set per connection (the URL's defaults). */
async function roleFor(schema: string): Promise<string> {
  const role = `gp_bouncer_${randomBytes(4).toString("hex")}`;
  const sql = postgres(pg!, { max: 1, onnotice: () => undefined });
  try {
    await sql.unsafe(`CREATE ROLE ${role} LOGIN SUPERUSER`);
    await sql.unsafe(`ALTER ROLE ${role} SET search_path = ${schema}`);
    await sql.unsafe(`ALTER ROLE ${role} SET statement_timeout = 5000`);
    await sql.unsafe(`ALTER ROLE ${role} SET idle_in_transaction_session_timeout = 2000`);
    await sql.unsafe(`ALTER ROLE ${role} SET lock_timeout = 3000`);
  } finally {
    await sql.end();
  }
  cleanups.push(async () => {
    const s = postgres(pg!, { max: 1, onnotice: () => undefined });
    try {
      await s.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await s.unsafe(`DROP ROLE IF EXISTS ${role}`);
    } finally {
      await s.end();
    }
  });
  return role;
}

async function bouncer(
  mode: "session" | "transaction" | "statement",
  ignored: readonly string[] = IGNORED,
): Promise<{ bouncer: PgBouncer; schema: string }> {
  const schema = `gp_bouncer_${randomBytes(4).toString("hex")}`;
  const role = await roleFor(schema);
  const b = await startPgBouncer(bin!, pg!, role, mode, ignored);
  cleanups.push(() => b.stop());
  return { bouncer: b, schema };
}

function replicas(n: number, storage: string): Promise<ServerProcess[]> {
  return fleet.start(n, smallQuotaConfig(storage));
}

describe.skipIf(pg === null || (bin === null && process.env["CI"] !== "true"))(
  "replicas through PgBouncer",
  { timeout: 120_000 },
  () => {
    it("is installed where CI runs (Debian's pgbouncer)", () => {
      expect(bin, "CI installs pgbouncer (.ci/run)").not.toBeNull();
    });

    it("session mode: two replicas admit and release through it, one leads, a killed leader is replaced", async () => {
      const { bouncer: b, schema } = await bouncer("session");
      const servers = await replicas(2, `${b.url}?schema=${schema}`);
      const leader = await until(() => leaderOf(servers), 10_000).catch(async (e) => {
        const ready = await Promise.all(servers.map((s) => fetch(`${s.url}/readyz`).then((r) => r.text())));
        throw new Error(`${e}\n${ready.join("\n")}\n${servers.map((s) => s.output()).join("\n---\n")}\n${b.log()}`);
      });
      const follower = servers.find((s) => s !== leader)!;
      const owner = await call(leader.url, "POST", "/v1/admin/users", ADMIN, { name: "owner", tier: "pro" });
      const app = await call(leader.url, "POST", "/v1/admin/apps", ADMIN, { name: "demo", owner: owner.body.id });
      expect(app.status, JSON.stringify(app.body)).toBe(201);
      const key = app.body.key as string;
      // Through the follower (its admission tells the leader by NOTIFY) and through the leader.
      for (const s of [follower, leader]) {
        const r = await call(s.url, "POST", "/v1/leases", key, { duration: 5 });
        expect(r.status, JSON.stringify(r.body)).toBe(201);
        const released = await call(s.url, "POST", `/v1/leases/${r.body.id}/release`, key, {});
        expect(released.status, JSON.stringify(released.body)).toBe(200);
      }
      // The other replica heard of both (the ledger is shared, the word went by LISTEN/NOTIFY).
      const q = await call(follower.url, "GET", "/v1/quota", key);
      expect(q.body.reserved).toBe(0);
      expect(q.body.used).toBeGreaterThan(0);

      // A call in flight through the follower; then the leader dies.
      const held = await call(follower.url, "POST", "/v1/leases", key, { duration: 30 });
      expect(held.status).toBe(201);
      fleet.kill(leader);
      const next = await until(() => leaderOf([follower]), 30_000);
      expect(next).toBe(follower);
      expect((await call(next.url, "GET", `/v1/leases/${held.body.id}`, key)).body.status).toBe("active");
      const more = await call(next.url, "POST", "/v1/leases", key, { duration: 5 });
      expect(more.status, JSON.stringify(more.body)).toBe(201);
      for (const id of [held.body.id, more.body.id])
        expect((await call(next.url, "POST", `/v1/leases/${id}/release`, key, {})).status).toBe(200);
      expect((await call(next.url, "GET", "/v1/quota", key)).body.reserved).toBe(0);
    });

    it("transaction and statement mode: a replica refuses to start, saying why and what to change", async () => {
      for (const mode of ["transaction", "statement"] as const) {
        const { bouncer: b, schema } = await bouncer(mode);
        const r = await runCli(["server", "--port", "0", "--storage", `${b.url}?schema=${schema}`], {
          GPUPOOL_ADMIN_TOKEN: ADMIN,
        });
        expect(r.code, `${mode}: ${r.stdout}${r.stderr}`).toBe(1);
        expect(r.stderr, mode).toMatch(/pool_mode = session/);
        expect(r.stderr).toMatch(/several replicas would lead at once/);
        expect(r.stdout).not.toMatch(/listening on/);
      }
    });

    it("a pooler that refuses the leader session's keepalive parameters: a replica refuses to start, naming them", async () => {
      // Before, it started, served, and never led, saying nothing (what docs/upgrades.md said to configure).
      const { bouncer: b, schema } = await bouncer(
        "session",
        IGNORED.filter((p) => !p.startsWith("tcp_")),
      );
      const r = await runCli(["server", "--port", "0", "--storage", `${b.url}?schema=${schema}`], {
        GPUPOOL_ADMIN_TOKEN: ADMIN,
      });
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(r.stderr).toMatch(/leader's session cannot connect \(.*tcp_keepalives_idle/);
      expect(r.stderr).toMatch(/ignore_startup_parameters/);
    });
  },
);
