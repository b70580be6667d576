import { describe, expect, it } from "vitest";
import { createClient, GpupoolError, QueueTimeoutError, type QueueUpdate } from "../src/index.js";
import {
  openEventStream,
  releaseResult,
  sendJson,
  sendProblem,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

describe("acquire() following the queue", () => {
  it("reports queued positions over SSE, then returns the granted lease", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST" && request.path === "/v1/leases") {
        sendJson(res, 202, wireLease("queued", { position: 3 }));
      } else if (request.path === "/v1/leases/ls_1/events") {
        const stream = openEventStream(res);
        stream.send("queued", { position: 3, reason: "node", eta_s: null });
        stream.comment("ping");
        stream.send("queued", { position: 2, reason: "node", eta_s: 12, eta_max_s: 30 });
        stream.send("queued", { position: 1, reason: "concurrency", eta_s: null });
        stream.send("granted", { lease: wireLease("active") });
      } else if (request.path === "/v1/leases/ls_1/release") {
        sendJson(res, 200, releaseResult("ls_1", false));
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const updates: QueueUpdate[] = [];

    const lease = await pool.acquire({ duration: 60, maxWait: 45, onQueue: (update) => updates.push(update) });
    // maxWait goes out as max_wait: how long this caller will wait for a slot.
    expect(server.requests.find((r) => r.path === "/v1/leases")?.body).toEqual({ duration: 60, max_wait: 45 });

    expect(updates).toEqual([
      // A server before eta_max_s existed sends none: null.
      { leaseId: "ls_1", position: 3, reason: "node", etaS: null, etaMaxS: null },
      { leaseId: "ls_1", position: 2, reason: "node", etaS: 12, etaMaxS: 30 },
      { leaseId: "ls_1", position: 1, reason: "concurrency", etaS: null, etaMaxS: null },
    ]);
    expect(lease.status).toBe("active");
    expect(lease.device?.uuid).toBe("GPU-11111111-2222");
    expect(lease.grantedAt).toBeInstanceOf(Date);
    expect(lease.deadline).toBeInstanceOf(Date);
    const events = server.requests.find((r) => r.path === "/v1/leases/ls_1/events");
    expect(events?.headers["accept"]).toBe("text/event-stream");
    expect(events?.headers["authorization"]).toBe("Bearer ak_test");
  });

  it("gpu() releases a lease that was granted after queueing", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST" && request.path === "/v1/leases") {
        sendJson(res, 202, wireLease("queued"));
      } else if (request.path === "/v1/leases/ls_1/events") {
        const stream = openEventStream(res);
        stream.send("queued", { position: 1, reason: "node", eta_s: null });
        stream.send("granted", { lease: wireLease("active") });
      } else if (request.path === "/v1/leases/ls_1/release") {
        sendJson(res, 200, releaseResult("ls_1", false));
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const positions: number[] = [];

    const out = await pool.gpu({ onQueue: (u) => positions.push(u.position) }, ({ device }) => device.index);

    expect(out).toBe(1);
    expect(positions).toEqual([1]);
    expect(server.requests.filter((r) => r.path === "/v1/leases/ls_1/release")).toHaveLength(1);
  });

  it("throws QueueTimeoutError with the server's detail when the stream sends failed", async () => {
    const detail = "Waited 60 s for a GPU without getting one; nothing was charged. Try again in a minute.";
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST" && request.path === "/v1/leases") {
        sendJson(res, 202, wireLease("queued"));
      } else if (request.path === "/v1/leases/ls_1/events") {
        const stream = openEventStream(res);
        stream.send("queued", { position: 1, reason: "node", eta_s: null });
        stream.send("failed", {
          problem: {
            type: "urn:gpupool:problem:queue_timeout",
            title: "Queue timeout",
            status: 408,
            detail,
            code: "queue_timeout",
            waited: 60,
          },
        });
        stream.end();
      } else {
        sendProblem(res, 404, "not_found", "unexpected");
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = await pool.acquire().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(QueueTimeoutError);
    expect(error).toBeInstanceOf(GpupoolError);
    const timeout = error as QueueTimeoutError;
    expect(timeout.message).toBe(detail);
    expect(timeout.code).toBe("queue_timeout");
    expect(timeout.status).toBe(408);
    expect(timeout.waited).toBe(60);
    expect(timeout.problem["waited"]).toBe(60);
    // The server already ended the lease: no cancel needed.
    expect(server.requests.some((r) => r.method === "DELETE")).toBe(false);
  });

  it("cancels the lease (DELETE) and throws an AbortError when the caller aborts while queued", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST" && request.path === "/v1/leases") {
        sendJson(res, 202, wireLease("queued"));
      } else if (request.path === "/v1/leases/ls_1/events") {
        openEventStream(res).send("queued", { position: 4, reason: "node", eta_s: null });
        // ...and stays open: the queue is not moving.
      } else if (request.method === "DELETE" && request.path === "/v1/leases/ls_1") {
        sendJson(res, 200, releaseResult("ls_1", false));
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const controller = new AbortController();

    const acquiring = pool.acquire({
      signal: controller.signal,
      onQueue: () => controller.abort(),
    });

    const error = await acquiring.catch((e: unknown) => e);
    expect((error as Error).name).toBe("AbortError");
    expect(server.requests.filter((r) => r.method === "DELETE" && r.path === "/v1/leases/ls_1")).toHaveLength(1);
  });

  it("rethrows the caller's own abort reason", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") sendJson(res, 202, wireLease("queued"));
      else if (request.path.endsWith("/events")) openEventStream(res).comment("ping");
      else sendJson(res, 200, releaseResult("ls_1", false));
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const controller = new AbortController();
    const reason = new Error("user closed the tab");

    const acquiring = pool.acquire({ signal: controller.signal });
    await server.waitFor((r) => r.path.endsWith("/events"));
    controller.abort(reason);

    await expect(acquiring).rejects.toBe(reason);
    await server.waitFor((r) => r.method === "DELETE");
  });

  it("reconnects when the stream closes without an outcome and sees the grant", async () => {
    let connections = 0;
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") {
        sendJson(res, 202, wireLease("queued"));
      } else if (request.path === "/v1/leases/ls_1/events") {
        connections += 1;
        const stream = openEventStream(res);
        if (connections === 1) {
          stream.send("queued", { position: 2, reason: "node", eta_s: null });
          stream.end(); // e.g. a proxy cutting the connection
        } else {
          stream.send("queued", { position: 1, reason: "node", eta_s: null });
          stream.send("granted", { lease: wireLease("active") });
        }
      } else if (request.method === "GET" && request.path === "/v1/leases/ls_1") {
        sendJson(res, 200, wireLease("queued", { position: 1 }));
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const positions: number[] = [];

    const lease = await pool.acquire({ onQueue: (u) => positions.push(u.position) });

    expect(lease.status).toBe("active");
    expect(positions).toEqual([2, 1]);
    expect(connections).toBe(2);
  });

  it("cancels the lease and rethrows when onQueue throws", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") sendJson(res, 202, wireLease("queued"));
      else if (request.path.endsWith("/events"))
        openEventStream(res).send("queued", { position: 1, reason: "node", eta_s: null });
      else sendJson(res, 200, releaseResult("ls_1", false));
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const bug = new Error("bug in the progress bar");

    await expect(
      pool.acquire({
        onQueue: () => {
          throw bug;
        },
      }),
    ).rejects.toBe(bug);
    expect(server.requests.some((r) => r.method === "DELETE" && r.path === "/v1/leases/ls_1")).toBe(true);
  });

  it("cancels a lease whose creation was still in flight when the caller aborted", async () => {
    let answerPost: (() => void) | undefined;
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") {
        answerPost = () => {
          sendJson(res, 201, wireLease("active"));
        };
      } else {
        sendJson(res, 200, releaseResult("ls_1", false));
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const controller = new AbortController();

    const acquiring = pool.acquire({ signal: controller.signal });
    await server.waitFor((r) => r.method === "POST");
    controller.abort();

    // Rejects at once, before the server has even answered...
    expect(((await acquiring.catch((e: unknown) => e)) as Error).name).toBe("AbortError");
    // ...and the lease, once it exists, is given back.
    answerPost?.();
    const cancel = await server.waitFor((r) => r.method === "DELETE");
    expect(cancel.path).toBe("/v1/leases/ls_1");
  });

  it("throws when the lease ends while queued, with the lease's problem when it has one", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") sendJson(res, 202, wireLease("queued"));
      else if (request.path.endsWith("/events")) {
        openEventStream(res).send("ended", { lease: wireLease("cancelled") });
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = (await pool.acquire().catch((e: unknown) => e)) as GpupoolError;

    expect(error).toBeInstanceOf(GpupoolError);
    expect(error.code).toBe("lease_ended");
    expect(error.message).toContain("cancelled");
    expect(server.requests.some((r) => r.method === "DELETE")).toBe(false);
  });
});
