import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { ADMIN, expectProblem, lease, serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";

/**
 * What a replica that does not lead answers about the pool (two in-process servers on one
 * PostgreSQL schema: the first leads). Operators behind a load balancer reach either.
 */
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0).reverse()) await s.close();
});

/** Two servers on one fresh schema: the one that leads, and a follower. */
async function pair(): Promise<{ leader: TestServer; follower: TestServer }> {
  const storageUrl = freshPostgresUrl("follower");
  const raw = { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } };
  const first = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-follower-")), raw, { storageUrl });
  servers.push(first);
  const second = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-follower-")), raw, { storageUrl });
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
});
