import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { ADMIN, lease, serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";
import { closeStreams, stream } from "./sse-reader.js";

/**
 * The dashboard's live views on a replica that does not lead: they follow the leader's grants and
 * releases. The streams' poll is made an hour long, so what they show they were told.
 */
const HOUR = "1h";

const servers: TestServer[] = [];
afterEach(async () => {
  closeStreams();
  for (const s of servers.splice(0).reverse()) await s.close();
});

/** A leader and a follower on one fresh PostgreSQL schema, one slot between them; the follower listening. */
async function twoReplicas(name: string): Promise<{ first: TestServer; follower: TestServer; url: string }> {
  const storageUrl = freshPostgresUrl(name);
  const raw = {
    pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] },
    queue: { predicted_wait: false },
    server: { port: 0 },
    dashboard: { live_poll: HOUR },
  };
  const first = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-dash-")), raw, { storageUrl });
  servers.push(first);
  await waitFor(async () => (await first.call("GET", "/readyz")).body.leader, 10_000);
  const follower = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-dash-")), raw, { storageUrl });
  servers.push(follower);
  expect((await follower.call("GET", "/readyz")).body.leader).toBe(false);
  return { first, follower, url: await follower.server.listen() };
}

describe.skipIf(!postgresUrl())("dashboard streams on a replica that does not lead", () => {
  it("the pool, the queue and a user's meter follow a lease granted and released on the leader", async () => {
    const { first, url } = await twoReplicas("dashfollow");
    const alice = await first.user("alice", "pro");
    const bob = await first.user("bob", "pro");
    const pool = await stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    const meter = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${alice.token}` });
    await pool.until("pool", (p) => p.leader === false && p.active.length === 0);
    await meter.until("me", (m) => m.quota.reserved === 0);

    const held = await lease(first, alice.token, { duration: 40 });
    expect(held.status).toBe(201);
    const seen = await pool.until("pool", (p) => p.active.some((a: { id: string }) => a.id === held.body.id));
    expect(seen.source).toBe("database");
    await meter.until("me", (m) => m.quota.reserved === 40);
    const waiting = await lease(first, bob.token, { duration: 40 });
    expect(waiting.status).toBe(202);
    await pool.until("queue", (q) => q.leader === false && q.depth === 1);

    expect(
      (await first.call("POST", `/v1/leases/${held.body.id}/release`, { token: alice.token, body: {} })).status,
    ).toBe(200);
    await meter.until("me", (m) => m.quota.reserved === 0 && m.quota.used > 0);
    await pool.until("queue", (q) => q.depth === 0);
    await pool.until("pool", (p) => p.active.length === 1 && p.active[0].id === waiting.body.id);
  });

  it("a call admitted through the follower shows on both replicas' streams, granted or queued", async () => {
    const { first, follower, url } = await twoReplicas("dashadmit");
    const leaderUrl = await first.server.listen();
    const alice = await first.user("alice", "pro");
    const bob = await first.user("bob", "pro");
    const here = await stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    const there = await stream(`${leaderUrl}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    const meter = await stream(`${url}/v1/me/events`, { authorization: `Bearer ${bob.token}` });
    await here.until("queue", (q) => q.depth === 0);
    await there.until("queue", (q) => q.depth === 0);
    await meter.until("me", (m) => m.quota.reserved === 0);

    const held = await lease(follower, alice.token, { duration: 40 });
    expect(held.status).toBe(201);
    for (const s of [here, there]) await s.until("pool", (p) => p.active.some((a: any) => a.id === held.body.id));
    const waiting = await lease(follower, bob.token, { duration: 30 });
    expect(waiting.status).toBe(202);
    for (const s of [here, there]) await s.until("queue", (q) => q.depth === 1);
    await meter.until("me", (m) => m.quota.reserved === 30);
  });
});
