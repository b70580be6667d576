import { describe, expect, it } from "vitest";
import { createClient, isTraceparent, newTraceparent } from "../src/index.js";
import {
  releaseResult,
  sendJson,
  sendProblem,
  startFakeControlPlane,
  wireLease,
  type FakeControlPlane,
} from "./fake-control-plane.js";

let server: FakeControlPlane | undefined;

async function granting(): Promise<FakeControlPlane> {
  return startFakeControlPlane((request, res) => {
    if (request.method === "POST" && request.path === "/v1/leases") sendJson(res, 201, wireLease("active"));
    else if (request.method === "POST" && request.path === "/v1/leases/ls_1/release")
      sendJson(res, 200, releaseResult("ls_1", false));
    else sendProblem(res, 404, "not_found", `No route ${request.method} ${request.path}.`);
  });
}

const traceparents = (s: FakeControlPlane) =>
  s.requests.map((r) => `${r.method} ${r.path} ${String(r.headers["traceparent"])}`);

describe("W3C trace context: one trace per gpu() call", () => {
  it("a call without one gets a new traceparent, the same on its lease and its release request, another per call", async () => {
    server = await granting();
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    await pool.gpu(() => "a");
    await pool.gpu(() => "b");
    const sent = server.requests.map((r) => r.headers["traceparent"] as string);
    expect(sent).toHaveLength(4);
    for (const t of sent) expect(isTraceparent(t), t).toBe(true);
    expect(sent[0]).toBe(sent[1]);
    expect(sent[2]).toBe(sent[3]);
    expect(sent[0]?.split("-")[1]).not.toBe(sent[2]?.split("-")[1]);
  });

  it("the caller's traceparent is sent as it is; a malformed one is refused before any request", async () => {
    server = await granting();
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    await pool.gpu({ traceparent: mine }, () => "a");
    expect(traceparents(server)).toEqual([`POST /v1/leases ${mine}`, `POST /v1/leases/ls_1/release ${mine}`]);
    await expect(pool.gpu({ traceparent: "00-nope" }, () => "a")).rejects.toThrow(TypeError);
    expect(server.requests).toHaveLength(2);
  });

  it("acquire() and release() send one only when asked", async () => {
    server = await granting();
    const pool = createClient({ url: server.url, appKey: "ak_test" });
    const lease = await pool.acquire();
    await pool.release(lease.id);
    expect(server.requests.map((r) => r.headers["traceparent"])).toEqual([undefined, undefined]);
  });

  it("makes only valid traceparents, and tells valid ones from invalid", () => {
    for (let i = 0; i < 50; i++) expect(isTraceparent(newTraceparent())).toBe(true);
    expect(isTraceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01")).toBe(false);
    expect(isTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")).toBe(false);
    expect(isTraceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toBe(false);
    expect(isTraceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")).toBe(false);
    expect(isTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")).toBe(true);
  });
});
