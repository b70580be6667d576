import { mkdtempSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createClient } from "@gpupool/sdk";
import { serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";
import { startOtlpReceiver } from "../../../test/otlp-receiver.js";
import type { OtlpReceiver, ReceivedSpan } from "../../../test/otlp-receiver.js";

/**
 * Issue 18, tracing: a server with `tracing.otlp_endpoint` sends OTLP/HTTP spans of each lease's
 * life to a local receiver. One SDK `gpu()` call is one trace — its lease request, the admission,
 * the queue wait if any, the grant, its release request, the release and the settlement — and
 * the caller's own `traceparent` is kept. A server without the setting sends nothing.
 */

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function pool(tracing: Record<string, unknown> | null): Promise<TestServer> {
  const t = await serveAt(mkdtempSync(join(tmpdir(), "gpupool-tracing-")), {
    server: { port: 0 },
    // One slot: a second call waits.
    pool: { simulated: [{ node: "sim-0", gpus: 1, slots_per_gpu: 1 }] },
    ...(tracing === null ? {} : { tracing }),
  });
  cleanup.push(() => t.close());
  await t.server.listen();
  return t;
}

async function receiver(): Promise<OtlpReceiver> {
  const r = await startOtlpReceiver();
  cleanup.push(() => r.close());
  return r;
}

const inTrace = (r: OtlpReceiver, traceId: string): ReceivedSpan[] => r.spans.filter((s) => s.traceId === traceId);
const named = (spans: ReceivedSpan[], name: string): ReceivedSpan => {
  const found = spans.filter((s) => s.name === name);
  expect(
    found.map((s) => s.name),
    `one ${name} span in ${spans.map((s) => s.name).join(", ")}`,
  ).toEqual([name]);
  return found[0] as ReceivedSpan;
};

/** Waits until the trace holds its settlement (the last span of a call) and the release request's span. */
async function wholeCall(r: OtlpReceiver, traceId: string): Promise<ReceivedSpan[]> {
  await waitFor(
    () => {
      const names = inTrace(r, traceId).map((s) => s.name);
      return names.includes("gpupool.settlement") && names.includes("POST /v1/leases/:id/release");
    },
    20_000,
    50,
  );
  return inTrace(r, traceId);
}

describe("tracing a lease's life (OTLP/HTTP)", () => {
  it("one trace per gpu() call, granted at once or after a queue wait, with the caller's traceparent kept", async () => {
    const r = await receiver();
    const t = await pool({ otlp_endpoint: `${r.url}/v1/traces`, export_delay: "50ms", service_name: "pool-a" });
    const ada = await t.user("ada", "pro");
    const client = createClient({ url: t.server.url, token: ada.token });

    // 1. Granted at once, inside the caller's own trace.
    const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpan = "00f067aa0ba902b7";
    let firstLease = "";
    await client.gpu({ duration: 5, traceparent: `00-${callerTrace}-${callerSpan}-01` }, ({ lease }) => {
      firstLease = lease.id;
    });
    const first = await wholeCall(r, callerTrace);
    const post = named(first, "POST /v1/leases");
    expect(post.parentSpanId).toBe(callerSpan);
    expect(post.kind).toBe(2); // SERVER
    expect(post.attributes).toMatchObject({ "http.request.method": "POST", "http.route": "/v1/leases" });
    expect(post.attributes["http.response.status_code"]).toBe(201);
    expect(post.resource["service.name"]).toBe("pool-a");
    const admission = named(first, "gpupool.admission");
    expect(admission.parentSpanId).toBe(post.spanId);
    expect(admission.attributes).toMatchObject({
      "gpupool.outcome": "granted",
      "gpupool.lease.id": firstLease,
      "gpupool.charged_as": "user",
      "user.id": ada.id,
      "gpupool.lease.duration_s": 5,
    });
    expect(named(first, "gpupool.grant").parentSpanId).toBe(admission.spanId);
    expect(first.map((s) => s.name)).not.toContain("gpupool.queue_wait");
    const releaseRequest = named(first, "POST /v1/leases/:id/release");
    expect(releaseRequest.parentSpanId).toBe(callerSpan);
    const release = named(first, "gpupool.release");
    expect(release.parentSpanId).toBe(releaseRequest.spanId);
    expect(release.attributes).toMatchObject({ "gpupool.lease.id": firstLease, "gpupool.outcome": "released" });
    const settlement = named(first, "gpupool.settlement");
    expect(settlement.parentSpanId).toBe(release.spanId);
    expect(settlement.attributes).toMatchObject({ "gpupool.lease.id": firstLease, "gpupool.paid_by": "quota" });
    expect(settlement.attributes["gpupool.charged_s"]).toBeGreaterThan(0);
    expect(settlement.attributes["gpupool.quota_s"]).toBe(settlement.attributes["gpupool.charged_s"]);
    expect(settlement.attributes["gpupool.overage_s"]).toBe(0);

    // 2. Queued behind a held slot; no traceparent given: the SDK makes one for the call.
    const held = await client.acquire({ duration: 10 });
    let queued!: () => void;
    const isQueued = new Promise<void>((resolve) => (queued = resolve));
    let secondLease = "";
    const call = client.gpu({ duration: 5, onQueue: () => queued() }, ({ lease }) => {
      secondLease = lease.id;
    });
    await isQueued;
    await client.release(held.id);
    await call;
    const waited = await waitFor(
      () => r.spans.find((s) => s.name === "gpupool.admission" && s.attributes["gpupool.outcome"] === "queued"),
      20_000,
      50,
    );
    expect(waited.traceId).not.toBe(callerTrace);
    const second = await wholeCall(r, waited.traceId);
    expect(waited.attributes["gpupool.lease.id"]).toBe(secondLease);
    expect(waited.attributes["gpupool.queue.position"]).toBe(1);
    expect(named(second, "POST /v1/leases").parentSpanId).toBe(
      named(second, "POST /v1/leases/:id/release").parentSpanId,
    );
    const wait = named(second, "gpupool.queue_wait");
    expect(wait.parentSpanId).toBe(waited.spanId);
    expect(wait.attributes).toMatchObject({ "gpupool.lease.id": secondLease, "gpupool.outcome": "granted" });
    expect(named(second, "gpupool.grant").parentSpanId).toBe(waited.spanId);
    expect(named(second, "gpupool.release").attributes["gpupool.lease.id"]).toBe(secondLease);
    expect(named(second, "gpupool.settlement").attributes["gpupool.lease.id"]).toBe(secondLease);
    // The held lease (acquired without a traceparent) is a trace of its own, not part of either call.
    const heldAdmission = r.spans.find(
      (s) => s.name === "gpupool.admission" && s.attributes["gpupool.lease.id"] === held.id,
    );
    expect(heldAdmission?.traceId).not.toBe(waited.traceId);
    expect(heldAdmission?.traceId).not.toBe(callerTrace);

    // Nothing secret or personal: no token, no address, in any attribute or resource.
    const said = JSON.stringify(r.spans.map((s) => [s.attributes, s.resource]));
    expect(said).not.toContain(ada.token);
    expect(said).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b|::1|localhost/);
    expect(said).not.toMatch(/authorization|client\.address|x-ip-token/i);
  }, 60_000);

  it("a refusal is recorded on the admission span with its problem code", async () => {
    const r = await receiver();
    const t = await pool({ otlp_endpoint: `${r.url}/v1/traces`, export_delay: "50ms" });
    const ada = await t.user("ada", "pro");
    const client = createClient({ url: t.server.url, token: ada.token });
    await client.acquire({ duration: 10 });
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await t.call("POST", "/v1/leases", {
      token: ada.token,
      body: { queue: false },
      headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` },
    });
    expect(res.status).toBe(503);
    const admission = await waitFor(() => inTrace(r, traceId).find((s) => s.name === "gpupool.admission"), 20_000, 50);
    expect(admission.attributes).toMatchObject({
      "gpupool.outcome": "refused",
      "gpupool.problem.code": "no_gpu_available",
    });
    const post = await waitFor(() => inTrace(r, traceId).find((s) => s.name === "POST /v1/leases"), 20_000, 50);
    expect(post.attributes["http.response.status_code"]).toBe(503);
    expect(admission.parentSpanId).toBe(post.spanId);
  }, 60_000);

  it("a lease left to run out ends in gpupool.expiry, settled in full, in the trace of its admission", async () => {
    const r = await receiver();
    const t = await pool({ otlp_endpoint: `${r.url}/v1/traces`, export_delay: "50ms" });
    const ada = await t.user("ada", "pro");
    const client = createClient({ url: t.server.url, token: ada.token });
    const traceId = "5bf92f3577b34da6a3ce929d0e0e4737";
    const lease = await client.acquire({ duration: 1, traceparent: `00-${traceId}-00f067aa0ba902b8-01` });
    const expiry = await waitFor(() => inTrace(r, traceId).find((s) => s.name === "gpupool.expiry"), 20_000, 50);
    const settlement = await waitFor(
      () => inTrace(r, traceId).find((s) => s.name === "gpupool.settlement"),
      20_000,
      50,
    );
    const admission = named(inTrace(r, traceId), "gpupool.admission");
    expect(expiry.parentSpanId).toBe(admission.spanId);
    expect(expiry.attributes).toMatchObject({ "gpupool.lease.id": lease.id, "gpupool.outcome": "expired" });
    expect(settlement.parentSpanId).toBe(expiry.spanId);
    expect(settlement.attributes).toMatchObject({ "gpupool.charged_s": 1, "gpupool.refunded_s": 0 });
  }, 60_000);

  it("a release from another trace is still recorded in the lease's trace, linked to the request that asked", async () => {
    const r = await receiver();
    const t = await pool({ otlp_endpoint: `${r.url}/v1/traces`, export_delay: "50ms" });
    const ada = await t.user("ada", "pro");
    const client = createClient({ url: t.server.url, token: ada.token });
    const leaseTrace = "6bf92f3577b34da6a3ce929d0e0e4738";
    const otherTrace = "7bf92f3577b34da6a3ce929d0e0e4739";
    const lease = await client.acquire({ duration: 30, traceparent: `00-${leaseTrace}-00f067aa0ba902b9-01` });
    await client.release(lease.id, { traceparent: `00-${otherTrace}-00f067aa0ba902ba-01` });
    const release = await waitFor(() => inTrace(r, leaseTrace).find((s) => s.name === "gpupool.release"), 20_000, 50);
    const asked = await waitFor(
      () => inTrace(r, otherTrace).find((s) => s.name === "POST /v1/leases/:id/release"),
      20_000,
      50,
    );
    expect(release.parentSpanId).toBe(named(inTrace(r, leaseTrace), "gpupool.admission").spanId);
    expect(release.links).toEqual([{ traceId: otherTrace, spanId: asked.spanId }]);
    expect(inTrace(r, otherTrace).map((s) => s.name)).toEqual(["POST /v1/leases/:id/release"]);
  }, 60_000);

  it("sample_ratio 0 records no call, even one whose caller sampled it", async () => {
    const r = await receiver();
    const t = await pool({ otlp_endpoint: `${r.url}/v1/traces`, export_delay: "50ms", sample_ratio: 0 });
    const ada = await t.user("ada");
    const client = createClient({ url: t.server.url, token: ada.token });
    await client.gpu({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, () => "a");
    await client.gpu(() => "b");
    // Closing flushes whatever was recorded.
    await t.close();
    cleanup.pop();
    expect(r.spans.map((s) => s.name)).toEqual([]);
  }, 60_000);

  it("a collector that never answers does not stop the pool: calls go through and the server still closes", async () => {
    // Accepts connections and never answers.
    const sockets: Socket[] = [];
    const silent = createNetServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanup.push(() => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => silent.close(resolve));
    });
    const { port } = silent.address() as AddressInfo;
    const t = await pool({ otlp_endpoint: `http://127.0.0.1:${port}/v1/traces`, export_delay: "10ms" });
    const ada = await t.user("ada");
    const client = createClient({ url: t.server.url, token: ada.token });
    expect(await client.gpu(() => "still served")).toBe("still served");
    expect(await client.gpu(() => "and again")).toBe("and again");
    cleanup.pop();
    await t.close();
  }, 60_000);

  it("a server without an endpoint sends nothing, even for a caller that sends a traceparent", async () => {
    const r = await receiver();
    // The exporter would read this variable: a server that started one would send there.
    process.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = `${r.url}/v1/traces`;
    cleanup.push(async () => delete process.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]);
    const t = await pool(null);
    expect(t.server.context.config.tracing.endpoint).toBeNull();
    const ada = await t.user("ada");
    const client = createClient({ url: t.server.url, token: ada.token });
    await client.gpu({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, () => "done");
    await t.close();
    cleanup.pop();
    expect(r.posts).toBe(0);
  }, 60_000);
});
