import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "./billing-fixture.js";
import type { TestServer } from "./harness.js";
import { ADMIN, serveAt, waitFor } from "./harness.js";

/**
 * What a lease on a node that went silent is charged: the time its GPU was known to be held,
 * until the node was last heard from — not the heartbeat timeout the pool waited on top.
 */
let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const GPU = {
  index: 0,
  uuid: "GPU-00000000-aaaa-bbbb-cccc-ddddeeeeffff",
  name: "NVIDIA A100-SXM4-80GB",
  memory_mb: 81920,
  slots: 2,
};
const NODES = { heartbeat_interval: "100ms", heartbeat_timeout: "2s" };
const raw = { pool: { simulated: [] }, nodes: NODES };

/**
 * On a clock the test moves (shared by a restarted server): on real time a stall between the
 * grant and the heartbeat changed what was held, and one of 1.7 s lost the node before it. The
 * node's heartbeat timer still runs on real time, and finds it silent only once the clock says so.
 */
async function setup(clock: ManualClock) {
  t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-test-")), raw, { clock });
  const owner = await t.user("owner", "pro");
  const app = await t.appFor("spaces-app", owner.id);
  const created = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "gpu-host-1" } });
  const nodeKey = created.body.key as string;
  expect(
    (
      await t.call("POST", "/v1/nodes/register", {
        token: nodeKey,
        body: { devices: [GPU], agent_url: "http://127.0.0.1:7071" },
      })
    ).status,
  ).toBe(200);
  const lease = await t.call("POST", "/v1/leases", {
    token: app.key,
    body: { duration: 60 },
    headers: { "x-gpupool-node-key": nodeKey },
  });
  expect(lease.status).toBe(201);
  return { app, nodeKey, lease: lease.body };
}

/** Whole seconds, at least one (cost 1): what a lease that held `heldMs` is charged. */
const expectedCharge = (heldMs: number) => Math.max(1, Math.ceil(heldMs / 1_000));

const leaseNow = (id: string, key: string) => t.call("GET", `/v1/leases/${id}`, { token: key }).then((r) => r.body);

describe("a lease on a node that goes silent", () => {
  it("is charged until the node's last heartbeat, and the pool still shows when that was", async () => {
    const clock = new ManualClock();
    const { app, nodeKey, lease } = await setup(clock);
    clock.advance(300);
    expect((await t.call("POST", "/v1/nodes/heartbeat", { token: nodeKey, body: {} })).status).toBe(200);
    const heardAt = clock.now();
    // Then nothing: lost 2 s later. Held 0.3 s → 1 s charged (2.3 s or more, had it run to the detection).
    clock.advance(2_000);
    const failed = await waitFor(async () => {
      const l = await leaseNow(lease.id, app.key);
      return l.status === "failed" ? l : null;
    }, 6_000);
    // Charged what it held until the last heartbeat (0.3 s), rounded up to whole seconds — never
    // the 2 s the pool then waited to call the node lost.
    expect(failed.held_ms).toBe(300);
    expect(Date.parse(failed.ended_at)).toBeLessThanOrEqual(heardAt + 50);
    expect(failed.held_ms).toBeLessThanOrEqual(heardAt + 50 - Date.parse(failed.granted_at));
    const charged = expectedCharge(failed.held_ms);
    expect(failed).toMatchObject({ charged, refunded: 60 - charged });
    expect(failed.problem.detail).toMatch(new RegExp(`charged only the ${charged}s it held`));
    const node = (await t.call("GET", "/v1/admin/pool", { token: ADMIN })).body.nodes[0];
    expect(node).toMatchObject({ name: "gpu-host-1", state: "lost" });
    expect(Date.parse(node.heartbeat_at)).toBeLessThanOrEqual(heardAt);
  });

  it("lost while the control plane was down: charged until its last heartbeat too", async () => {
    const clock = new ManualClock();
    const { app, nodeKey, lease } = await setup(clock);
    clock.advance(300);
    expect((await t.call("POST", "/v1/nodes/heartbeat", { token: nodeKey, body: {} })).status).toBe(200);
    const dir = t.dir;
    await t.server.close();
    clock.advance(2_500);
    t = await serveAt(dir, raw, { clock });
    const l = await leaseNow(lease.id, app.key);
    const charged = expectedCharge(l.held_ms);
    expect(l).toMatchObject({
      status: "failed",
      charged,
      refunded: 60 - charged,
      problem: { code: "no_gpu_available" },
    });
    // Held until the last heartbeat (0.3 s after the grant), not the 2.5 s the server was down.
    expect(l.held_ms).toBe(300);
  });
});
