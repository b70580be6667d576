import { describe, expect, it } from "vitest";
import { createClient, LeaseDeadlineError, QuotaExceededError, type GpuContext } from "../src/index.js";
import {
  releaseResult,
  sendJson,
  sendProblem,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
  type Handler,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

/** Grants at once (201) and accepts releases, overriding the lease fields given. */
function grantingHandler(lease: Record<string, unknown> = {}): Handler {
  return (request, res) => {
    if (request.method === "POST" && request.path === "/v1/leases") {
      sendJson(res, 201, wireLease("active", lease));
    } else if (request.method === "POST" && request.path === "/v1/leases/ls_1/release") {
      const failed = (request.body as { failed?: boolean } | undefined)?.failed === true;
      sendJson(res, 200, releaseResult("ls_1", failed));
    } else {
      sendProblem(res, 404, "not_found", `No route ${request.method} ${request.path}.`);
    }
  };
}

const releases = (s: FakeControlPlane) => s.requests.filter((r) => r.path === "/v1/leases/ls_1/release");

describe("gpu()", () => {
  it("acquires (201), runs fn with the device, returns its result and releases", async () => {
    server = await startFakeControlPlane(grantingHandler());
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    let seen: GpuContext | undefined;

    const result = await pool.gpu({ duration: 30, size: "large", ipToken: "ipt_viewer" }, (context) => {
      seen = context;
      return "image.png";
    });

    expect(result).toBe("image.png");
    expect(seen?.lease.id).toBe("ls_1");
    expect(seen?.lease.status).toBe("active");
    expect(seen?.device.uuid).toBe("GPU-11111111-2222");
    expect(seen?.device.env()).toEqual({ CUDA_VISIBLE_DEVICES: "GPU-11111111-2222" });
    expect(seen?.signal.aborted).toBe(false);

    const post = server.requests.find((r) => r.method === "POST" && r.path === "/v1/leases");
    expect(post?.body).toEqual({ duration: 30, size: "large" });
    expect(post?.headers["authorization"]).toBe("Bearer ak_test");
    expect(post?.headers["x-ip-token"]).toBe("ipt_viewer");
    expect(releases(server).map((r) => r.body)).toEqual([{ failed: false }]);
  });

  it("releases with failed: true and rethrows when fn throws", async () => {
    server = await startFakeControlPlane(grantingHandler());
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const boom = new Error("CUDA out of memory");

    await expect(
      pool.gpu({}, () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(releases(server).map((r) => r.body)).toEqual([{ failed: true }]);
  });

  it("aborts the signal at the lease deadline with a LeaseDeadlineError", async () => {
    const grantedAt = new Date();
    server = await startFakeControlPlane(
      grantingHandler({
        duration: 0.05,
        granted_at: grantedAt.toISOString(),
        deadline: new Date(grantedAt.getTime() + 50).toISOString(),
      }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const reason = await pool.gpu({ duration: 0.05 }, ({ signal }) => {
      return new Promise<unknown>((resolve) => signal.addEventListener("abort", () => resolve(signal.reason)));
    });

    expect(reason).toBeInstanceOf(LeaseDeadlineError);
    expect((reason as LeaseDeadlineError).leaseId).toBe("ls_1");
    expect((reason as LeaseDeadlineError).code).toBe("lease_deadline");
    expect(releases(server)).toHaveLength(1);
  });

  it("reports a failed release through onReleaseError without hiding fn's result", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.path === "/v1/leases") sendJson(res, 201, wireLease("active"));
      else sendProblem(res, 503, "storage_unavailable", "The ledger database is not answering.");
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const reported: unknown[] = [];

    const result = await pool.gpu({ onReleaseError: (error) => reported.push(error) }, () => 42);

    expect(result).toBe(42);
    expect(reported).toHaveLength(1);
    expect((reported[0] as Error).name).toBe("ServerUnavailableError");
  });

  it("throws the typed refusal and never calls fn when the lease is refused", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 429, "quota_exceeded", "Your anonymous quota has 30 s left.", {
        requested: 60,
        left: 30,
        quota: 120,
        tier: "anonymous",
        identity: "ip:203.0.113.7",
        resets_at: null,
        retry_at: null,
      }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    let called = false;

    await expect(
      pool.gpu({}, () => {
        called = true;
      }),
    ).rejects.toBeInstanceOf(QuotaExceededError);
    expect(called).toBe(false);
  });

  it("aborts fn's signal with the caller's reason when the caller aborts mid-run", async () => {
    server = await startFakeControlPlane(grantingHandler());
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const controller = new AbortController();
    const reason = new Error("request closed");

    const error = await pool
      .gpu({ signal: controller.signal }, ({ signal }) => {
        const stopped = new Promise<never>((_resolve, reject) => {
          signal.addEventListener("abort", () => {
            reject(signal.reason as Error);
          });
        });
        controller.abort(reason);
        return stopped;
      })
      .catch((e: unknown) => e);

    expect(error).toBe(reason);
    expect(releases(server).map((r) => r.body)).toEqual([{ failed: true }]);
  });
});
