import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { lockKey } from "../src/storage/postgres/connections.js";
import { LATEST_VERSION, MIGRATIONS } from "../src/storage/migrations.js";
import type { Migration } from "../src/storage/migrations.js";
import { migrateStorage } from "../src/storage/migrate-storage.js";
import { openStorage } from "../src/storage/open-store.js";
import { SchemaTooNewError } from "../src/storage/schema-version.js";
import { serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * The rolling upgrade of docs/upgrades.md, first step: two replicas of the running release keep
 * admitting and releasing leases while what `gpupool migrate` of the next release runs
 * (`migrateStorage` with a longer list) applies an online version — two indexes on a leases table
 * of 100k rows, built concurrently. No request of the older replicas fails.
 */

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0).reverse()) await s.close();
});

/** Holds an advisory lock that the migration waits for between its two index builds, so requests are seen to run in the middle. */
const PAUSE_KEY = lockKey("test-pause", "rolling-upgrade");

describe.skipIf(!postgresUrl())("a migration applied while an older replica keeps serving", () => {
  it("builds indexes online under admit/release load on two older replicas; none of their requests fails", async () => {
    const storageUrl = freshPostgresUrl("rolling");
    const schema = new URL(storageUrl).searchParams.get("schema")!;
    const admin = postgres(postgresUrl()!, { max: 2, onnotice: () => undefined });
    try {
      await migrateStorage(storageUrl);
      // Ended leases, as a pool that has run for a while has them: the index builds take a moment.
      await admin.unsafe(`
        INSERT INTO "${schema}".leases (id, app_id, identity_kind, identity_id, tier, size, slots, cost, duration_ms,
          reserved_ms, status, queued_at, granted_at, ended_at, held_ms, charged_ms, refunded_ms, failed)
        SELECT 'seed-' || g, NULL, 'user', 'seed-' || (g % 1000), 'free', 'large', 2, 1, 30000, 0,
          'released', g, g, g + 1000, 1000, 1000, 29000, false
        FROM generate_series(1, 100000) AS g`);

      const raw = { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } };
      for (let i = 0; i < 2; i++)
        servers.push(await serveAt(mkdtempSync(join(tmpdir(), "gpupool-rolling-")), raw, { storageUrl }));
      const [a, b] = servers as [TestServer, TestServer];
      const users = await Promise.all([0, 1, 2, 3].map((i) => a.user(`caller-${i}`, "pro")));

      const failures: string[] = [];
      let cycles = 0;
      let stop = false;
      /** Admit and release, over and over, alternating replicas: every answer must be a success. */
      const worker = async (token: string, i: number): Promise<void> => {
        for (let n = i; !stop; n++) {
          const via = n % 2 === 0 ? a : b;
          const admitted = await via.call("POST", "/v1/leases", { token, body: { duration: 10 } });
          if (admitted.status !== 201) {
            failures.push(`admit ${admitted.status} ${JSON.stringify(admitted.body)}`);
            continue;
          }
          const released = await (n % 2 === 0 ? b : a).call("POST", `/v1/leases/${admitted.body.id}/release`, {
            token,
            body: {},
          });
          if (released.status !== 200) failures.push(`release ${released.status} ${JSON.stringify(released.body)}`);
          else cycles++;
        }
      };
      const workers = users.map((u, i) => worker(u.token, i));
      await waitFor(() => cycles >= 20, 30_000);

      const next: Migration[] = [
        ...MIGRATIONS,
        {
          version: LATEST_VERSION + 1,
          why: "Leases by tier (a test's index), built while older replicas serve.",
          online: true,
          sqlite: "CREATE INDEX IF NOT EXISTS leases_tier ON leases(tier, seq);",
          postgres: `
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_tier ON leases(tier, seq);
  SELECT pg_advisory_lock_shared(${PAUSE_KEY}::bigint);
  SELECT pg_advisory_unlock_shared(${PAUSE_KEY}::bigint);
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_ended ON leases(ended_at, seq) WHERE ended_at IS NOT NULL;
  `,
        },
      ];
      const migrated = await admin.reserve();
      try {
        await migrated`SELECT pg_advisory_lock(${PAUSE_KEY}::bigint)`;
        const migration = migrateStorage(storageUrl, { migrations: next });
        // The first index is built, and the migration waits at the pause: the replicas still serve.
        await waitFor(
          async () =>
            (
              await admin`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                          AND ((classid::bigint << 32) | objid::bigint) = ${PAUSE_KEY}::bigint`
            ).length > 0,
          60_000,
          50,
        );
        const before = cycles;
        await waitFor(() => cycles >= before + 20, 30_000);
        await migrated`SELECT pg_advisory_unlock(${PAUSE_KEY}::bigint)`;
        expect((await migration).applied.map((m) => m.version)).toEqual([LATEST_VERSION + 1]);
      } finally {
        migrated.release();
      }
      const after = cycles;
      await waitFor(() => cycles >= after + 20, 30_000);
      stop = true;
      await Promise.all(workers);

      expect(failures).toEqual([]);
      const indexes = await admin<{ name: string; valid: boolean }[]>`
        SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ${schema} AND c.relname IN ('leases_tier', 'leases_ended') ORDER BY c.relname`;
      expect(indexes).toEqual([
        { name: "leases_ended", valid: true },
        { name: "leases_tier", valid: true },
      ]);
      // The older replicas serve on; one that restarts now is refused (the next step deploys the new binary).
      expect((await a.call("GET", "/readyz")).status).toBe(200);
      await expect(openStorage(storageUrl)).rejects.toBeInstanceOf(SchemaTooNewError);
    } finally {
      await admin.end();
    }
  }, 180_000);
});
