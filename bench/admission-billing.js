// The billing variant of the admission benchmark (npm run bench -- admission): the same durable
// admit+release cycle, but every call is charged to a signed-in user whose quota is used up, with
// overage on, so each one takes the credits path — the hold on the wallet in the admission's
// transaction, and at release the settlement (spend and release, each a wallet transaction), the
// month's spend and the usage record.
import { join } from "node:path";
import { pino } from "pino";
import { assemblePool, normalizeConfig, openStorage, systemClock } from "@gpupool/server";

export const billingConfig = (storageUrl) =>
  normalizeConfig({
    storage: { url: storageUrl },
    quota: {
      tiers: {
        anonymous: { quota: "7d", max_duration: "60s" },
        pro: { quota: "7d", priority: 3, max_duration: "60s" },
      },
    },
    pool: { simulated: [{ node: "bench", gpus: 64 }] },
    billing: {
      overage: { enabled: true, tiers: ["pro"], price_per_gpu_minute: "0.10", default_monthly_cap: "1000000" },
    },
    log: { level: "silent" },
  });

// As many users as the plain path has identities (admission.js passes its KEYS: importing it here would be a cycle).
let KEYS = 100;
const userOf = (i) => `u_bench${String(i % KEYS).padStart(11, "0")}`;

/**
 * KEYS pro users with a large purchased grant, overage on; with no quota (an override of 0) when
 * every call is to be paid from credits, else the tier's quota (7 days, never used up).
 */
async function seed(store, now, paidFrom) {
  await store.transaction(async (tx) => {
    for (let i = 0; i < KEYS; i++) {
      const id = userOf(i);
      await tx.users.insert({
        id,
        name: `bench-${i}`,
        tier: "pro",
        tokenHash: `h-${id}`,
        quotaOverrideMs: paidFrom === "credits" ? 0 : null,
        createdAt: now,
      });
      await tx.wallets.insertGrant({
        id: `cg_${id}`,
        userId: id,
        category: "purchased",
        amountMicros: 1_000_000 * 1_000_000,
        remainingMicros: 1_000_000 * 1_000_000,
        heldMicros: 0,
        priority: 10,
        effectiveAt: now - 1000,
        expiresAt: null,
        source: "bench",
        createdAt: now,
        idempotencyKey: `bench-${id}`,
      });
      await tx.wallets.putAccount({
        userId: id,
        overageEnabled: true,
        monthlyCapMicros: null,
        month: new Date(now).toISOString().slice(0, 7),
        monthSpentMicros: 0,
      });
    }
  });
}

/**
 * Runs `measure` on the cycle of a signed-in user paying overage for every call (`paidFrom`
 * "credits"), or of the same users, wallets and config with quota left, so that every call is
 * paid from quota ("quota"): the plain path of a signed-in user, the peer of the credits path.
 */
export async function billingInProcess(dir, measure, keys, paidFrom = "credits") {
  KEYS = keys;
  const c = billingConfig(`sqlite:${join(dir, "gpupool.db")}`);
  const storage = await openStorage(c.storage.url);
  await seed(storage.store, Date.now(), paidFrom);
  const pool = assemblePool(c, storage, { clock: systemClock, log: pino({ level: "silent" }), recordMetrics: false });
  await pool.replica.start();
  const size = c.policy.sizes.large;
  const result = await measure(async (i) => {
    const r = await pool.replica.admit({
      appId: null,
      charged: { kind: "user", id: userOf(i) },
      via: "user-token",
      durationMs: 1000,
      size,
      queue: true,
      node: null,
      idempotency: null,
    });
    if (r.kind !== "granted")
      throw new Error(`expected a grant, got ${r.kind}${r.kind === "denied" ? `: ${r.problem.detail}` : ""}`);
    if (r.lease.overageMs > 0 !== (paidFrom === "credits"))
      throw new Error(`expected the call to be paid from ${paidFrom}, overage ${r.lease.overageMs} ms`);
    await pool.replica.release(r.lease.id, false);
  });
  pool.stop();
  await storage.close();
  return result;
}
