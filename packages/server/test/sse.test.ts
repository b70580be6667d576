import { schedulerOptionsFor } from "@gpupool/core";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { lease, startTestServer } from "./harness.js";

/** GET /v1/leases/:id/events over a real socket: what a browser or the SDK sees while waiting. */

let t: TestServer;
let url: string;
const streams: AbortController[] = [];
afterEach(async () => {
  for (const c of streams.splice(0)) c.abort();
  await t?.close();
});

const BLOCKER_S = 50;
/** The room a promise leaves per class for higher classes arriving later (the minute's timeout). */
const ROOM_S = schedulerOptionsFor({ queueTimeoutMs: 60_000 }).promiseRoomMs / 1000;

async function setup(raw: Record<string, unknown> = {}) {
  t = await startTestServer({ ...raw, server: { port: 0 } });
  url = await t.server.listen();
  const alice = await t.user("alice", "free");
  const owner = await t.user("owner", "pro");
  const blockers: string[] = [];
  for (let i = 0; i < 4; i++) blockers.push((await lease(t, owner.token, { duration: BLOCKER_S })).body.id);
  return { alice, owner, blockers };
}

interface Sse {
  readonly status: number;
  readonly contentType: string | null;
  /** Resolves with the next event (waiting up to 3 s), or null when the stream ended. */
  next(): Promise<{ event: string; data: any } | null>;
}

async function open(id: string, token: string): Promise<Sse> {
  const ctl = new AbortController();
  streams.push(ctl);
  const res = await fetch(`${url}/v1/leases/${id}/events`, {
    headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
    signal: ctl.signal,
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  return {
    status: res.status,
    contentType: res.headers.get("content-type"),
    async next() {
      const deadline = Date.now() + 3_000;
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.startsWith(":")) continue; // keep-alive comment
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const data = /^data: (.*)$/m.exec(block)?.[1];
          return { event, data: data === undefined ? null : JSON.parse(data) };
        }
        if (done) return null;
        const chunk = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error("no SSE event within 3 s")), Math.max(1, deadline - Date.now())),
          ),
        ]);
        if (chunk.done) done = true;
        else buffer += decoder.decode(chunk.value, { stream: true });
      }
    },
  };
}

const release = (id: string, token: string) => t.call("POST", `/v1/leases/${id}/release`, { token, body: {} });

describe("lease events (SSE)", () => {
  it("a queued lease sees queued {position, reason}, then granted {lease} when a slot frees; then the stream ends", async () => {
    const { alice, owner, blockers } = await setup();
    const q = await lease(t, alice.token, { duration: 20 });
    expect(q.status).toBe(202);
    const sse = await open(q.body.id, alice.token);
    expect(sse.status).toBe(200);
    expect(sse.contentType).toMatch(/^text\/event-stream/);
    const queued = await sse.next();
    expect(queued).toEqual({
      event: "queued",
      data: { position: 1, reason: "node", eta_s: expect.any(Number), eta_max_s: expect.any(Number) },
    });
    // The bound comes from the blockers' deadlines: never more than their whole duration, and the
    // room a promise to a free call leaves for pro calls arriving later (one class's room, derived
    // from the queue timeout). Nothing has been learnt of what calls hold yet, so the expected wait
    // is the blockers' (never above the bound).
    expect(queued?.data.eta_max_s).toBeGreaterThan(0);
    expect(queued?.data.eta_max_s).toBeLessThanOrEqual(BLOCKER_S + ROOM_S);
    expect(queued?.data.eta_s).toBeLessThanOrEqual(BLOCKER_S);
    expect(queued?.data.eta_s).toBeGreaterThan(0);
    expect(queued?.data.eta_s).toBeLessThanOrEqual(queued?.data.eta_max_s);

    await release(blockers[2]!, owner.token);
    const granted = await sse.next();
    expect(granted?.event).toBe("granted");
    expect(granted?.data.lease).toMatchObject({ id: q.body.id, status: "active", duration: 20 });
    expect(granted?.data.lease.device).toMatchObject({ node: "sim-0" });
    expect(Date.parse(granted?.data.lease.deadline) - Date.parse(granted?.data.lease.granted_at)).toBe(20_000);
    expect(await sse.next()).toBeNull();
  });

  it("positions are re-sent as the queue moves", async () => {
    const { alice, owner, blockers } = await setup();
    const first = await lease(t, alice.token, { duration: 5 });
    const second = await lease(t, alice.token, { duration: 5 });
    const sse = await open(second.body.id, alice.token);
    expect(await sse.next()).toEqual({
      event: "queued",
      data: { position: 2, reason: "node", eta_s: expect.any(Number), eta_max_s: expect.any(Number) },
    });
    await release(first.body.id, alice.token); // cancels the one ahead
    expect(await sse.next()).toEqual({
      event: "queued",
      data: { position: 1, reason: "node", eta_s: expect.any(Number), eta_max_s: expect.any(Number) },
    });
    await release(blockers[0]!, owner.token);
    // A repeat of the unchanged position may come first; the next change is the grant.
    let e = await sse.next();
    while (e?.event === "queued" && e.data.position === 1) e = await sse.next();
    expect(e?.event).toBe("granted");
    expect(e?.data.lease).toMatchObject({ id: second.body.id, status: "active" });
  });

  it("a queue timeout is sent as failed {problem: queue_timeout}", async () => {
    // Queued rather than refused at once (it is expected to wait longer than 600 ms).
    const { alice } = await setup({ queue: { timeout: "600ms", predicted_wait: false } });
    const q = await lease(t, alice.token, { duration: 20 });
    const sse = await open(q.body.id, alice.token);
    expect((await sse.next())?.event).toBe("queued");
    const failed = await sse.next();
    expect(failed?.event).toBe("failed");
    expect(failed?.data.problem).toMatchObject({
      code: "queue_timeout",
      status: 408,
      type: "urn:gpupool:problem:queue_timeout",
    });
    expect(failed?.data.problem.detail).toMatch(/queue/);
    expect(failed?.data.problem.waited).toBeGreaterThanOrEqual(0.5);
    expect(await sse.next()).toBeNull();
    // Subscribing after the fact tells the same story.
    const late = await open(q.body.id, alice.token);
    expect(await late.next()).toMatchObject({ event: "failed", data: { problem: { code: "queue_timeout" } } });
  });

  it("cancelling a watched queued lease ends the stream with ended {lease: cancelled}", async () => {
    const { alice } = await setup();
    const q = await lease(t, alice.token, { duration: 20 });
    const sse = await open(q.body.id, alice.token);
    expect((await sse.next())?.event).toBe("queued");
    await t.call("DELETE", `/v1/leases/${q.body.id}`, { token: alice.token });
    const ended = await sse.next();
    expect(ended).toMatchObject({
      event: "ended",
      data: { lease: { id: q.body.id, status: "cancelled", charged: 0, refunded: 20 } },
    });
    expect(await sse.next()).toBeNull();
  });

  it("the current state comes first: an active lease answers granted, an ended one ended", async () => {
    const { owner, blockers } = await setup();
    const active = await open(blockers[0]!, owner.token);
    expect(await active.next()).toMatchObject({
      event: "granted",
      data: { lease: { id: blockers[0], status: "active" } },
    });
    expect(await active.next()).toBeNull();
    await release(blockers[1]!, owner.token);
    const ended = await open(blockers[1]!, owner.token);
    expect(await ended.next()).toMatchObject({
      event: "ended",
      data: { lease: { id: blockers[1], status: "released" } },
    });
  });

  it("unknown leases and missing credentials get problems, not streams", async () => {
    const { alice } = await setup();
    const missing = await fetch(`${url}/v1/leases/ls_nope/events`, {
      headers: { authorization: `Bearer ${alice.token}` },
    });
    expect(missing.status).toBe(404);
    expect(missing.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(((await missing.json()) as { code: string }).code).toBe("not_found");
    const anon = await fetch(`${url}/v1/leases/ls_nope/events`);
    expect(anon.status).toBe(401);
  });
});

describe("shutting down with streams open", () => {
  it("closing the server ends open event streams instead of waiting for their leases", async () => {
    const { alice } = await setup();
    const q = await lease(t, alice.token, { duration: 20 });
    const sse = await open(q.body.id, alice.token);
    expect((await sse.next())?.event).toBe("queued");
    // Without ending the stream, close() waits for the lease to leave the queue (60 s), past the
    // test's timeout.
    await t.server.close();
    expect(await sse.next()).toBeNull();
  });
});
