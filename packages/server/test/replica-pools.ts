import { pino } from "pino";
import { systemClock } from "../src/clock.js";
import { normalizeConfig } from "../src/config.js";
import { assemblePool } from "../src/main/pool.js";
import { openStorage } from "../src/storage/open-store.js";
import { waitFor } from "./harness.js";
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

/** How the follower tests configure their replicas: anonymous calls with a week's quota, 64 GPUs. */
export function replicaConfig(url: string) {
  return normalizeConfig({
    storage: { url },
    quota: { tiers: { anonymous: { quota: "7d", max_duration: "600s" } } },
    pool: { simulated: [{ node: "sim", gpus: 64 }] },
    log: { level: "silent" },
  });
}

/** A replica that leads (waited for), then `followers` more on the same store, which do not. */
export async function leaderAndFollowers(
  config: ReturnType<typeof normalizeConfig>,
  opened: OpenedReplicas,
  followers: number,
) {
  const leader = await openReplica(config, opened);
  await waitFor(async () => leader.isLeader, 20_000);
  const rest = [];
  for (let i = 0; i < followers; i++) rest.push(await openReplica(config, opened));
  if (rest.some((f) => f.isLeader)) throw new Error("a second replica leads");
  return { leader, followers: rest };
}
