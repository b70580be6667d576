import { afterEach, describe, expect, it, vi } from "vitest";
import { PoolViewer } from "../src/use-cases/admin/pool-view.js";
import type { TestServer } from "./harness.js";
import { ADMIN, lease, startTestServer } from "./harness.js";
import { closeStreams, stream } from "./sse-reader.js";

/** The operator's queue at depth: capped pool events with every call counted, the whole line by pages, shared streams. */

let t: TestServer;
afterEach(async () => {
  closeStreams();
  vi.restoreAllMocks();
  await t?.close();
});

/** One slot in the pool, and calls that wait for it rather than being refused for the predicted wait. */
const ONE_SLOT = {
  pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] },
  queue: { predicted_wait: false },
  server: { port: 0 },
};

/** One call holds the only slot and `n` short calls wait behind it (from ten users); their ids in arrival order. */
async function queueOf(n: number): Promise<string[]> {
  const holder = await t.user("holder", "free");
  expect((await lease(t, holder.token, { duration: 60 })).status).toBe(201);
  const users = await Promise.all(Array.from({ length: 10 }, (_, i) => i).map((i) => t.user(`waiter${i}`, "free")));
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const l = await lease(t, users[i % users.length]!.token, { duration: 2 });
    expect(l.status).toBe(202);
    ids.push(l.body.id);
  }
  return ids;
}

describe("the queue at depth", () => {
  it("the pool view and its event list the first 200 in line and count all 250; the line pages through every one", async () => {
    t = await startTestServer(ONE_SLOT);
    const url = await t.server.listen();
    const ids = await queueOf(250);
    const pool = await t.call("GET", "/v1/admin/pool", { token: ADMIN });
    expect(pool.status).toBe(200);
    expect(pool.body.queue).toHaveLength(200);
    expect(pool.body.queue.map((e: any) => e.position)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(pool.body.queued).toEqual({ total: 250, listed: 200, by_reason: { node: 250 }, by_kind: { user: 250 } });
    const live = await stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` });
    const event = await live.until("pool", (p) => p.queued?.total === 250);
    expect(event.queue).toHaveLength(200);
    await live.until("queue", (q) => q.depth === 250);

    const seen: any[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r: any = await t.call("GET", `/v1/admin/queue/entries?limit=100${cursor ? `&cursor=${cursor}` : ""}`, {
        token: ADMIN,
      });
      expect(r.status).toBe(200);
      expect(r.body.total).toBe(250);
      seen.push(...r.body.entries);
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor !== null && pages < 10);
    expect(pages).toBe(3);
    expect(seen.map((e) => e.position)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    expect(new Set(seen.map((e) => e.lease))).toEqual(new Set(ids));
    expect(seen.slice(0, 200)).toEqual(pool.body.queue);
    // Without a limit, a page is as long as the pool view's list.
    expect((await t.call("GET", "/v1/admin/queue/entries", { token: ADMIN })).body.entries).toHaveLength(200);
    const bad = await t.call("GET", "/v1/admin/queue/entries?cursor=bm9wZQ", { token: ADMIN });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe("invalid_request");
    expect((await t.call("GET", "/v1/admin/queue/entries?limit=0", { token: ADMIN })).status).toBe(400);
    const alice = await t.user("alice", "free");
    expect((await t.call("GET", "/v1/admin/queue/entries", { token: alice.token })).status).toBe(403);
  });

  it("sixty open pool streams read the pool once per change between them, not once each, and each hears the change", async () => {
    t = await startTestServer(ONE_SLOT);
    const url = await t.server.listen();
    const alice = await t.user("alice", "free");
    const streams = await Promise.all(
      Array.from({ length: 60 }, () => stream(`${url}/v1/admin/pool/events`, { authorization: `Bearer ${ADMIN}` })),
    );
    for (const s of streams) await s.until("pool", (p) => p.active.length === 0);
    const reads = vi.spyOn(PoolViewer.prototype, "view");
    const granted = await lease(t, alice.token, { duration: 60 });
    expect(granted.status).toBe(201);
    for (const s of streams) await s.until("pool", (p) => p.active.some((a: any) => a.id === granted.body.id));
    // Before views were shared, every stream read (and serialized) the pool itself: 60 reads at least.
    expect(reads.mock.calls.length).toBeGreaterThan(0);
    expect(reads.mock.calls.length).toBeLessThan(30);
  });
});
