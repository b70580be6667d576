import postgres from "postgres";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { systemClock } from "../src/clock.js";
import { normalizeConfig } from "../src/config.js";
import { assemblePool } from "../src/main/pool.js";
import type { PoolParts } from "../src/main/pool.js";
import { openStorage } from "../src/storage/open-store.js";
import { CONNECTIONS_BESIDE_POOL } from "../src/storage/postgres/connections.js";
import { DEFAULT_POOL_MAX } from "../src/storage/postgres/url.js";
import type { Storage } from "../src/storage/store.js";
import { sleep } from "./harness.js";

/**
 * Ten replicas with the default pool size, started together and each busy with more transactions
 * than its pool holds, stay within PostgreSQL's default connection limit (max_connections 100, less
 * superuser_reserved_connections 3): counted in pg_stat_activity by the application_name each
 * replica gives its connections (`gpupool:<schema>:<replica>`, `gpupool-leader:<schema>:<replica>`).
 */

const REPLICAS = 10;
const DEFAULT_LIMIT = 100 - 3;

describe.skipIf(!postgresUrl())("the connection budget", () => {
  it("10 replicas started together, their pools full, open at most 10 × (max + 2) connections, under 97", async () => {
    const url = freshPostgresUrl("budget");
    const schema = new URL(url).searchParams.get("schema")!;
    const config = normalizeConfig({ storage: { url }, pool: { simulated: [{ node: "sim-0", gpus: 1 }] } });
    const log = pino({ level: "silent" });
    const admin = postgres(postgresUrl()!, { max: 1, onnotice: () => undefined });
    const storages: Storage[] = [];
    const pools: PoolParts[] = [];
    try {
      storages.push(...(await Promise.all(Array.from({ length: REPLICAS }, () => openStorage(url)))));
      for (const storage of storages) pools.push(assemblePool(config, storage, { clock: systemClock, log }));
      await Promise.all(pools.map((p) => p.replica.start()));

      /** Connections per replica now, by the replica part of their application_name. */
      const count = async (): Promise<Map<string, number>> => {
        const rows = await admin<{ app: string }[]>`
          SELECT application_name AS app FROM pg_stat_activity
          WHERE application_name LIKE ${`gpupool:${schema}:%`} OR application_name LIKE ${`gpupool-leader:${schema}:%`}`;
        const by = new Map<string, number>();
        for (const { app } of rows) {
          const replica = app.slice(app.lastIndexOf(":") + 1);
          by.set(replica, (by.get(replica) ?? 0) + 1);
        }
        return by;
      };

      // Each replica runs three times as many transactions at once as its pool has sessions,
      // each holding its session a moment, while the connections are counted.
      let busy = true;
      const load = Promise.all(
        storages.map((s) =>
          Promise.all(
            Array.from({ length: DEFAULT_POOL_MAX * 3 }, () =>
              s.store.transaction(async (t) => {
                await t.users.get("nobody");
                await sleep(150);
              }),
            ),
          ),
        ),
      ).finally(() => (busy = false));
      let peakTotal = 0;
      let peakReplica = 0;
      let replicasSeen = 0;
      while (busy) {
        const by = await count();
        peakTotal = Math.max(
          peakTotal,
          [...by.values()].reduce((a, b) => a + b, 0),
        );
        peakReplica = Math.max(peakReplica, ...by.values());
        replicasSeen = Math.max(replicasSeen, by.size);
      }
      await load;

      expect(replicasSeen).toBe(REPLICAS);
      // The pools were full: a replica had its whole pool open, and its LISTEN and leader connections.
      expect(peakReplica).toBe(DEFAULT_POOL_MAX + CONNECTIONS_BESIDE_POOL);
      expect(peakTotal).toBeLessThanOrEqual(REPLICAS * (DEFAULT_POOL_MAX + CONNECTIONS_BESIDE_POOL));
      expect(peakTotal).toBeLessThanOrEqual(DEFAULT_LIMIT);
    } finally {
      for (const p of pools) p.stop();
      await Promise.all(storages.map((s) => s.close()));
      await admin.end();
    }
  }, 120_000);
});
