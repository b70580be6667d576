import { pino } from "pino";
import { systemClock } from "../src/clock.js";
import type { normalizeConfig } from "../src/config.js";
import { assemblePool } from "../src/main/pool.js";
import { openStorage } from "../src/storage/open-store.js";
import type { Storage } from "../src/storage/store.js";

/** Replicas a test opened, to stop (newest first) when it is over. */
export type OpenedReplicas = { stop(): void; storage: Storage }[];

/** An in-process replica on `config`'s store, started; remembered in `opened`. */
export async function openReplica(config: ReturnType<typeof normalizeConfig>, opened: OpenedReplicas) {
  const storage = await openStorage(config.storage.url);
  const pool = assemblePool(config, storage, { clock: systemClock, log: pino({ level: "silent" }) });
  opened.push({ stop: () => pool.stop(), storage });
  await pool.replica.start();
  return pool.replica;
}

/** Stops every replica in `opened`, newest first, and closes its storage. */
export async function closeReplicas(opened: OpenedReplicas): Promise<void> {
  for (const p of opened.splice(0).reverse()) {
    p.stop();
    await p.storage.close();
  }
}
