import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import {
  createClient,
  DurationTooLongError,
  GpupoolError,
  InvalidIpTokenError,
  InvalidRequestError,
  NoGpuAvailableError,
  NotFoundError,
  problemToError,
  QueueTimeoutError,
  QuotaExceededError,
  RunsExceededError,
  ServerUnavailableError,
  UnauthorizedError,
  type Problem,
} from "../src/index.js";
import { sendProblem, startFakeControlPlane, type FakeControlPlane } from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

const problem = (code: string, status: number, fields: Record<string, unknown> = {}): Problem => ({
  type: `urn:gpupool:problem:${code}`,
  title: code,
  status,
  detail: `detail of ${code}`,
  code,
  ...fields,
});

describe("problems become typed errors", () => {
  it("429 quota_exceeded → QuotaExceededError with every field and the server's detail", async () => {
    const detail =
      "Your anonymous quota has 30 s left but this call asks for 60 s. Retry after 10:30 UTC, or sign in for 3.5 min a day.";
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(
        res,
        429,
        "quota_exceeded",
        detail,
        {
          requested: 60,
          left: 30,
          quota: 120,
          used: 30,
          reserved: 60,
          tier: "anonymous",
          identity: "ip:203.0.113.7",
          resets_at: "2025-01-02T10:00:00.000Z",
          retry_at: "2025-01-01T10:30:00.000Z",
          next_step: "sign_in",
        },
        { "retry-after": "1800" },
      ),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = await pool.acquire({ duration: 60, ipToken: "ipt_x" }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(QuotaExceededError);
    const quota = error as QuotaExceededError;
    expect(quota.name).toBe("QuotaExceededError");
    expect(quota.message).toBe(detail);
    expect(quota.detail).toBe(detail);
    expect(quota.code).toBe("quota_exceeded");
    expect(quota.status).toBe(429);
    expect(quota.requested).toBe(60);
    expect(quota.left).toBe(30);
    expect(quota.quota).toBe(120);
    expect(quota.used).toBe(30);
    expect(quota.reserved).toBe(60);
    expect(quota.tier).toBe("anonymous");
    expect(quota.identity).toBe("ip:203.0.113.7");
    expect(quota.resetsAt).toEqual(new Date("2025-01-02T10:00:00.000Z"));
    expect(quota.retryAt).toEqual(new Date("2025-01-01T10:30:00.000Z"));
    expect(quota.nextStep).toBe("sign_in");
    expect(quota.problem["resets_at"]).toBe("2025-01-02T10:00:00.000Z");
  });

  it("derives retryAt from Retry-After when the body has no retry_at", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(
        res,
        429,
        "runs_exceeded",
        "10 runs a day on the free tier.",
        { runs: 10, max_runs: 10 },
        {
          "retry-after": "60",
        },
      ),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const before = Date.now();

    const error = (await pool.acquire().catch((e: unknown) => e)) as RunsExceededError;

    expect(error).toBeInstanceOf(RunsExceededError);
    expect(error.runs).toBe(10);
    expect(error.maxRuns).toBe(10);
    const retryAt = new Date(String(error.problem["retry_at"])).getTime();
    expect(retryAt).toBeGreaterThanOrEqual(before + 59_000);
  });

  it("401 invalid_ip_token → InvalidIpTokenError with its reason", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 401, "invalid_ip_token", "The X-IP-Token expired 3 min ago.", { reason: "expired" }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = (await pool.quota({ ipToken: "old" }).catch((e: unknown) => e)) as InvalidIpTokenError;

    expect(error).toBeInstanceOf(InvalidIpTokenError);
    expect(error.reason).toBe("expired");
    expect(error.message).toBe("The X-IP-Token expired 3 min ago.");
  });

  it("maps each documented code to its class and unknown codes to GpupoolError", () => {
    const cases: Array<[Problem, abstract new (...args: never[]) => GpupoolError]> = [
      [problem("quota_exceeded", 429), QuotaExceededError],
      [problem("duration_too_long", 422, { duration: 600, max_duration: 120 }), DurationTooLongError],
      [problem("runs_exceeded", 429), RunsExceededError],
      [problem("invalid_ip_token", 401, { reason: "wrong_app" }), InvalidIpTokenError],
      [problem("queue_timeout", 408), QueueTimeoutError],
      [problem("no_gpu_available", 503, { reason: "queue_full" }), NoGpuAvailableError],
      [problem("unauthorized", 401), UnauthorizedError],
      [problem("not_found", 404), NotFoundError],
      [problem("invalid_request", 400), InvalidRequestError],
    ];
    for (const [input, ErrorClass] of cases) {
      const error = problemToError(input);
      expect(error).toBeInstanceOf(ErrorClass);
      expect(error.message).toBe(input.detail);
      expect(error.problem).toBe(input);
    }
    const unknown = problemToError(problem("conflict", 409));
    expect(unknown.constructor).toBe(GpupoolError);
    expect(unknown.code).toBe("conflict");
    expect(
      (problemToError(problem("duration_too_long", 422, { max_duration: 120 })) as DurationTooLongError).maxDuration,
    ).toBe(120);
    expect(
      (problemToError(problem("no_gpu_available", 503, { reason: "queue_full" })) as NoGpuAvailableError).reason,
    ).toBe("queue_full");
    // A predicted_wait refusal says the expected wait, its bound and what the call could wait.
    const predicted = problemToError(
      problem("no_gpu_available", 503, { reason: "predicted_wait", eta_s: 57, eta_max_s: 69, max_wait_s: 60 }),
    ) as NoGpuAvailableError;
    expect(predicted).toMatchObject({ reason: "predicted_wait", etaS: 57, etaMaxS: 69, maxWaitS: 60 });
    const full = problemToError(problem("no_gpu_available", 503, { reason: "queue_full" })) as NoGpuAvailableError;
    expect(full).toMatchObject({ etaS: null, etaMaxS: null, maxWaitS: null });
    expect(problemToError(problem("toString", 400)).constructor).toBe(GpupoolError);
  });

  it("400 invalid_request lists every invalid field", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 400, "invalid_request", "2 fields are invalid.", {
        errors: [
          { field: "duration", message: "must be a positive number" },
          { field: "size", message: "must be one of large, xlarge" },
        ],
      }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = (await pool.acquire({ duration: -1, size: "huge" }).catch((e: unknown) => e)) as InvalidRequestError;

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.errors.map((e) => e.field)).toEqual(["duration", "size"]);
  });
});

describe("server unavailable", () => {
  it("connection refused → ServerUnavailableError naming the URL and the reason", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const pool = createClient({ url: `http://127.0.0.1:${port}`, appKey: "ak_test" });

    const error = (await pool.acquire().catch((e: unknown) => e)) as ServerUnavailableError;

    expect(error).toBeInstanceOf(ServerUnavailableError);
    expect(error.url).toBe(`http://127.0.0.1:${port}/v1/leases`);
    expect(error.message).toContain(`http://127.0.0.1:${port}/v1/leases`);
    expect(error.message).toContain("ECONNREFUSED");
    expect(error.code).toBe("server_unavailable");
    expect(error.status).toBe(0);
    expect(error.cause).toBeDefined();
  });

  it("a 500 without a problem body → ServerUnavailableError with the status", async () => {
    server = await startFakeControlPlane((_request, res) => {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<h1>Bad Gateway</h1>");
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = (await pool.quota().catch((e: unknown) => e)) as ServerUnavailableError;

    expect(error).toBeInstanceOf(ServerUnavailableError);
    expect(error.status).toBe(502);
    expect(error.message).toContain(`${server.url}/v1/quota`);
    expect(error.message).toContain("502");
  });

  it("503 no_gpu_available stays a NoGpuAvailableError", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendProblem(res, 503, "no_gpu_available", "No GPU free and queue: false.", { reason: "queue_disabled" }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });

    const error = await pool.acquire({ queue: false }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(NoGpuAvailableError);
    expect((error as NoGpuAvailableError).reason).toBe("queue_disabled");
    expect(server.requests[0]?.body).toEqual({ queue: false });
  });

  it("a server that does not answer within timeoutMs → ServerUnavailableError", async () => {
    server = await startFakeControlPlane(() => {
      // never answers
    });
    const pool = createClient({ url: server.url, appKey: "ak_test", timeoutMs: 50 });

    const error = (await pool.quota().catch((e: unknown) => e)) as ServerUnavailableError;

    expect(error).toBeInstanceOf(ServerUnavailableError);
    expect(error.message).toContain("did not answer within 50 ms");
  });
});
