import { PROBLEM_CODES, PROBLEM_STATUS } from "@gpupool/contract";
import { describe, expect, it } from "vitest";
import {
  createClient,
  ForbiddenError,
  GpupoolError,
  InvalidIpTokenError,
  InvalidRequestError,
  problemToError,
  ServerUnavailableError,
  UnauthorizedError,
  type Problem,
} from "../src/index.js";
import {
  openEventStream,
  sendJson,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

const problem = (code: string, status: number, fields: Record<string, unknown> = {}): Problem => ({
  type: `urn:gpupool:problem:${code}`,
  title: code,
  status,
  detail: `detail of ${code}`,
  code,
  ...fields,
});

describe("the SDK reads the wire through @gpupool/contract", () => {
  it("every problem code of the contract becomes a GpupoolError with that code and status", () => {
    for (const code of PROBLEM_CODES) {
      const error = problemToError(problem(code, PROBLEM_STATUS[code]));
      expect(error, code).toBeInstanceOf(GpupoolError);
      expect(error.code).toBe(code);
      expect(error.status).toBe(PROBLEM_STATUS[code]);
    }
    expect(problemToError(problem("admin_disabled", 403))).toBeInstanceOf(ForbiddenError);
    expect(problemToError(problem("forbidden", 403))).toBeInstanceOf(ForbiddenError);
    expect(problemToError(problem("invalid_session", 401))).toBeInstanceOf(UnauthorizedError);
    expect(problemToError(problem("invalid_credentials", 401))).toBeInstanceOf(UnauthorizedError);
    expect(problemToError(problem("payload_too_large", 413))).toBeInstanceOf(InvalidRequestError);
    expect(problemToError(problem("storage_unavailable", 503, { reason: "contention" }))).toBeInstanceOf(
      ServerUnavailableError,
    );
  });

  it("unknown_user is an InvalidIpTokenError with that reason", () => {
    const error = problemToError(problem("invalid_ip_token", 401, { reason: "unknown_user" })) as InvalidIpTokenError;
    expect(error).toBeInstanceOf(InvalidIpTokenError);
    expect(error.reason).toBe("unknown_user");
  });

  it("a body that does not match the contract is an invalid_response naming the field", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendJson(res, 200, { ...wireLease("active"), charged: "2s" }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const error = (await pool.lease("ls_1").catch((e: unknown) => e)) as GpupoolError;
    expect(error).toBeInstanceOf(GpupoolError);
    expect(error.code).toBe("invalid_response");
    expect(error.message).toMatch(/charged/);
    expect(error.message).toMatch(/GET .*\/v1\/leases\/ls_1 answered 200/);
  });

  it("accepts fields a newer server adds", async () => {
    server = await startFakeControlPlane((_request, res) =>
      sendJson(res, 200, { ...wireLease("active"), energy: { joules: 60 } }),
    );
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const lease = await pool.lease("ls_1");
    expect(lease.status).toBe("active");
    expect(lease.node).toBe("sim-0");
    expect(lease.failed).toBe(false);
  });

  it("a lease that ended with a problem throws it as a whole problem: status and title come with the code", async () => {
    server = await startFakeControlPlane((request, res) => {
      if (request.method === "POST") sendJson(res, 202, wireLease("queued"));
      else if (request.path.endsWith("/events")) {
        openEventStream(res).send("ended", {
          lease: wireLease("failed", {
            problem: { code: "no_gpu_available", detail: "Node gpu-1 stopped answering." },
          }),
        });
      }
    });
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const error = (await pool.acquire().catch((e: unknown) => e)) as GpupoolError;
    expect(error.code).toBe("no_gpu_available");
    expect(error.status).toBe(503);
    expect(error.message).toBe("Node gpu-1 stopped answering.");
  });
});
