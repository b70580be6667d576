import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { ADMIN, expectProblem, lease, serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";
import { LEADER_CHANNEL } from "../src/replication/messages.js";
import { openStorage } from "../src/storage/open-store.js";
import { StorageUnavailableError } from "../src/storage/store.js";
import type { Coordination, Storage, Tx } from "../src/storage/store.js";

/** `coordination` whose publish of a follower's "admitted" word to the leader fails while `fail()` says so. */
function failingPublish(coordination: Coordination, fail: () => boolean): Coordination {
  return new Proxy(coordination, {
    get(target, prop) {
      if (prop === "publish")
        return (channel: string, payload: string) =>
          channel === LEADER_CHANNEL && payload.includes('"admitted"') && fail()
            ? Promise.reject(new StorageUnavailableError("notify failed (test)", { reason: "unreachable" }))
            : target.publish(channel, payload);
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/**
 * What a replica that does not lead answers about the pool (two in-process servers on one
 * PostgreSQL schema: the first leads). Operators behind a load balancer reach either.
 */
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0).reverse()) await s.close();
});

/**
 * Two servers on one fresh schema: the one that leads, and a follower. `wrap`: what the second
 * one's storage does instead (a fault to inject); it then starts once the first one leads.
 */
async function pair(wrap?: (s: Storage) => Storage): Promise<{ leader: TestServer; follower: TestServer }> {
  const storageUrl = freshPostgresUrl("follower");
  const raw = { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } };
  const first = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-follower-")), raw, { storageUrl });
  servers.push(first);
  if (wrap) await waitFor(async () => (await first.call("GET", "/readyz")).body.leader, 10_000);
  const second = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-follower-")), raw, {
    storageUrl,
    ...(wrap ? { storage: wrap(await openStorage(storageUrl)) } : {}),
  });
  servers.push(second);
  const leader = await waitFor(async () =>
    (await first.call("GET", "/readyz")).body.leader
      ? first
      : (await second.call("GET", "/readyz")).body.leader
        ? second
        : null,
  );
  return { leader, follower: leader === first ? second : first };
}

describe.skipIf(!postgresUrl())("a replica that does not lead", () => {
  it("shows the pool as the database records it (devices, busy slots, active and queued leases), saying it does not lead", async () => {
    const { leader, follower } = await pair();
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const granted = [];
    for (let i = 0; i < 4; i++) granted.push((await lease(leader, app.key, { duration: 20 })).body.id as string);
    const queued = await lease(leader, app.key, { duration: 20 });
    expect(queued.status).toBe(202);

    const view = (await follower.call("GET", "/v1/admin/pool", { token: ADMIN })).body;
    expect(view).toMatchObject({ leader: false, source: "database", slots: { total: 4, busy: 4 } });
    expect(view.devices).toHaveLength(2);
    expect(view.devices.flatMap((d: { slots: (string | null)[] }) => d.slots).sort()).toEqual([...granted].sort());
    expect(view.active.map((a: { id: string }) => a.id).sort()).toEqual([...granted].sort());
    expect(view.queue).toEqual([expect.objectContaining({ lease: queued.body.id, position: 1, reason: null })]);

    // The leader's own view is the same pool, from its scheduler.
    expect((await leader.call("GET", "/v1/admin/pool", { token: ADMIN })).body).toMatchObject({
      leader: true,
      source: "leader",
      slots: { total: 4, busy: 4 },
    });
  });

  it("/readyz says it is ready but does not lead, and does not report a queue or slots it cannot know", async () => {
    const { leader, follower } = await pair();
    expect((await leader.call("GET", "/readyz")).body).toMatchObject({
      status: "ready",
      leader: true,
      queue: 0,
      slots: { total: 4, busy: 0 },
    });
    expect((await follower.call("GET", "/readyz")).body).toMatchObject({
      status: "ready",
      storage: "postgres",
      leader: false,
      queue: null,
      slots: null,
    });
  });

  it("/metrics: gpupool_leader on each replica; the pool's gauges only from the leader (a follower has no pool to report)", async () => {
    const { leader, follower } = await pair();
    const gauge = (text: string, name: string): number | null => {
      const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
      return m ? Number(m[1]) : null;
    };
    const ofLeader = String((await leader.call("GET", "/metrics")).body);
    const ofFollower = String((await follower.call("GET", "/metrics")).body);
    expect(gauge(ofLeader, "gpupool_leader")).toBe(1);
    expect(gauge(ofFollower, "gpupool_leader")).toBe(0);
    expect(gauge(ofLeader, "gpupool_slots_total")).toBe(4);
    expect(gauge(ofLeader, "gpupool_queue_depth")).toBe(0);
    for (const name of [
      "gpupool_slots_total",
      "gpupool_slots_busy",
      "gpupool_slot_utilization",
      "gpupool_queue_depth",
      "gpupool_active_leases",
    ])
      expect(ofFollower, name).not.toContain(name);
    // The follower's own process metrics are still there.
    expect(ofFollower).toContain("gpupool_process_");
  });

  it("/metrics of a follower counts its commit groups: calls through it show in gpupool_follower_group_members", async () => {
    const { leader, follower } = await pair();
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const count = async (t: TestServer): Promise<number> => {
      const m = /^gpupool_follower_group_members_count (\S+)$/m.exec(String((await t.call("GET", "/metrics")).body));
      return m ? Number(m[1]) : -1;
    };
    expect(await count(follower)).toBe(0);
    const granted = await lease(follower, app.key, { duration: 5 });
    expect(granted.status).toBe(201);
    expect((await follower.call("DELETE", `/v1/leases/${granted.body.id as string}`, { token: app.key })).status).toBe(
      200,
    );
    // The admission and the release each committed in a group of the follower (of one, alone).
    expect(await count(follower)).toBeGreaterThanOrEqual(2);
    expect(String((await follower.call("GET", "/metrics")).body)).toContain("gpupool_follower_group_fallbacks_total");
    // The leader commits its own way: it reports no follower groups.
    expect(await count(leader)).toBe(0);
  });

  it("queue: false with every slot busy, asked through the follower: the leader's refusal, reason included", async () => {
    const { leader, follower } = await pair();
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    for (let i = 0; i < 4; i++) expect((await lease(leader, app.key, { duration: 20 })).status).toBe(201);
    const refused = expectProblem(
      await lease(follower, app.key, { duration: 5, queue: false }),
      503,
      "no_gpu_available",
    );
    expect(refused.reason).toBe("queue_disabled");
  });

  it("a call expected to outwait its max_wait, asked through the follower: 503 predicted_wait with eta_s, its bound and an honest Retry-After", async () => {
    const { leader, follower } = await pair();
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    for (let i = 0; i < 4; i++) expect((await lease(leader, app.key, { duration: 20 })).status).toBe(201);
    const r = await lease(follower, app.key, { duration: 5, max_wait: 5 });
    const refused = expectProblem(r, 503, "no_gpu_available");
    expect(refused).toMatchObject({ reason: "predicted_wait", max_wait_s: 5 });
    // Nothing learnt yet: the expected wait is the blockers' 20 s, as the leader itself would say.
    expect(refused.eta_s).toBeGreaterThan(10);
    expect(refused.eta_s).toBeLessThanOrEqual(20);
    expect(refused.eta_max_s).toBeGreaterThanOrEqual(refused.eta_s);
    expect(refused.detail).toMatch(/expected to be about \d+s/);
    // Retry once the expected wait would leave a tenth of the 5 s unused (eta_s − 4.5 s, rounded
    // up), as the leader says it — not the follower's generic 5 s.
    expect(Number(r.headers["retry-after"])).toBe(refused.eta_s - 4);
  });

  it("Idempotency-Key across replicas: asked through the follower, retried through the leader and the follower, one lease", async () => {
    const { leader, follower } = await pair();
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const ask = (t: TestServer, body: Record<string, unknown>) =>
      t.call("POST", "/v1/leases", { token: app.key, body, headers: { "idempotency-key": "across-1" } });
    const first = await ask(follower, { duration: 9 });
    expect(first.status).toBe(201);
    const answers = await Promise.all([
      ask(leader, { duration: 9 }),
      ask(follower, { duration: 9 }),
      ask(leader, { duration: 9 }),
      ask(follower, { duration: 9 }),
    ]);
    for (const r of answers) expect({ status: r.status, id: r.body.id }).toEqual({ status: 201, id: first.body.id });
    expectProblem(await ask(leader, { duration: 10 }), 409, "idempotency_key_reused");
    expectProblem(await ask(follower, { duration: 10 }), 409, "idempotency_key_reused");
    const leases = (await leader.call("GET", "/v1/leases?limit=50", { token: ADMIN })).body.leases;
    expect(leases.map((l: { id: string }) => l.id)).toEqual([first.body.id]);
    // And a burst with a new key, spread over both: still one lease.
    const burst = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        (i % 2 ? leader : follower).call("POST", "/v1/leases", {
          token: app.key,
          body: { duration: 4 },
          headers: { "idempotency-key": "burst-2" },
        }),
      ),
    );
    expect(new Set(burst.map((r) => r.body.id)).size).toBe(1);
    expect((await leader.call("GET", "/v1/leases?limit=50", { token: ADMIN })).body.leases).toHaveLength(2);
  });

  it("the follower's word to the leader goes with its admission (in its transaction): a NOTIFY of its own that would fail is never needed, and a free GPU gives 201", async () => {
    let failures = 1;
    const { leader, follower } = await pair((storage) => ({
      ...storage,
      coordination: failingPublish(storage.coordination, () => failures-- > 0),
      close: () => storage.close(),
    }));
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const r = await lease(follower, app.key, { duration: 20 });
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 201, code: undefined });
    expect(r.body).toMatchObject({ status: "active" });
    expect((await leader.call("GET", `/v1/leases/${r.body.id}`, { token: ADMIN })).body.status).toBe("active");
  });

  it("the follower stored the lease but could not tell the leader (a store whose transactions carry no word): the answer is the lease (202), not 503 'nothing was changed'; the leader places it", async () => {
    let failures = 1;
    const { leader, follower } = await pair((storage) => ({
      ...storage,
      store: new Proxy(storage.store, {
        get(target, prop) {
          // The follower's admission runs in its group commit where the store has one: neither can notify.
          if (prop === "transaction" || prop === "groupedTransaction")
            return <T>(fn: (tx: Tx) => Promise<T>) =>
              target.transaction((tx) => {
                const { publish, ...rest } = tx;
                void publish;
                return fn(rest);
              });
          const v = Reflect.get(target, prop, target) as unknown;
          return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
      coordination: failingPublish(storage.coordination, () => failures-- > 0),
      close: () => storage.close(),
    }));
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const r = await lease(follower, app.key, { duration: 20 });
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 202, code: undefined });
    expect(r.body).toMatchObject({ status: "queued" });
    // The follower tells the leader again: the lease is granted (a GPU is free), not left queued.
    await waitFor(
      async () => (await leader.call("GET", `/v1/leases/${r.body.id}`, { token: ADMIN })).body.status === "active",
      10_000,
    );
  });
});
