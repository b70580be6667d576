// A stand-in for the control plane's node and lease routes (docs/wire.md shapes), so the device
// API's mapping of every control-plane answer can be tested one by one. The end-to-end test
// (test/e2e/agent.test.ts) runs the agent against the real server.
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Lease } from "@gpupool/contract";

export interface Recorded {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingMessage["headers"];
  readonly body: unknown;
}

export interface Answer {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

export interface FakeControlPlane {
  readonly url: string;
  readonly requests: Recorded[];
  /** How POST /v1/leases answers (default: granted on device 0). */
  onLease: (req: Recorded) => Answer;
  /** How POST /v1/nodes/register answers (default: 200). */
  onRegister: (req: Recorded) => Answer;
  /** How POST /v1/nodes/heartbeat answers (default: 200). */
  onHeartbeat: (req: Recorded) => Answer;
  /** Current state for GET /v1/leases/:id. */
  readonly leases: Map<string, Record<string, unknown>>;
  /** Pushes an event to the open event stream(s) of a lease. */
  push(leaseId: string, event: string, data: unknown): void;
  /** Resolves once an event stream for the lease is open. */
  streamOpen(leaseId: string): Promise<void>;
  waitFor(predicate: (r: Recorded) => boolean, ms?: number): Promise<Recorded>;
  close(): Promise<void>;
}

export const NODE = "node-a";

/** What paid for a call on a pool without credits: all of it the quota. */
const NO_BILLING = {
  quota_s: 60,
  overage_s: 0,
  hold_micros: 0,
  charged_micros: 0,
  currency: "USD",
  display: { hold: "$0.00", charged: "$0.00" },
};

/** A lease as the control plane sends it (checked against the contract, so the fake cannot drift). */
export function leaseJson(
  fields: Partial<Record<string, unknown>> & { id: string; status: string },
): Record<string, unknown> {
  const granted = fields.status === "active";
  const now = Date.now();
  const lease = {
    app: "a_app",
    identity: { kind: "app", id: "a_app", tier: "anonymous" },
    size: "large",
    duration: 60,
    reserved: 60,
    cost: 1,
    node: NODE,
    device: granted
      ? { node: NODE, index: 0, uuid: "GPU-00000000-0000-0000-0000-000000000000", name: "Simulated GPU", slots: [0] }
      : null,
    queued_at: new Date(now).toISOString(),
    granted_at: granted ? new Date(now).toISOString() : null,
    deadline: granted ? new Date(now + 60_000).toISOString() : null,
    ended_at: null,
    position: granted ? null : 1,
    reason: granted ? null : "node",
    eta_s: null,
    held_ms: null,
    charged: 0,
    refunded: 0,
    failed: false,
    billing: NO_BILLING,
    problem: null,
    quota: null,
    ...fields,
  };
  Lease.parse(lease);
  return lease;
}

export function problemJson(
  code: string,
  status: number,
  detail: string,
  fields: Record<string, unknown> = {},
): Record<string, unknown> {
  return { type: `urn:gpupool:problem:${code}`, title: code, status, detail, code, ...fields };
}

export async function startFakeControlPlane(): Promise<FakeControlPlane> {
  const requests: Recorded[] = [];
  const waiters: { predicate: (r: Recorded) => boolean; resolve: (r: Recorded) => void }[] = [];
  const streams = new Map<string, Set<ServerResponse>>();
  const streamWaiters = new Map<string, (() => void)[]>();
  const leases = new Map<string, Record<string, unknown>>();
  let seq = 0;

  const fake: FakeControlPlane = {
    url: "",
    requests,
    leases,
    onLease: () => ({ status: 201, body: leaseJson({ id: `ls_${++seq}`, status: "active" }) }),
    onRegister: () => ({
      status: 200,
      body: {
        node: { id: "n_1", name: NODE },
        devices: 1,
        registration: "1700000000000",
        heartbeat_interval_s: 0.2,
        heartbeat_timeout_s: 5,
      },
    }),
    onHeartbeat: () => ({
      status: 200,
      body: { node: { id: "n_1", name: NODE }, heartbeat_interval_s: 0.2, heartbeat_timeout_s: 5 },
    }),
    push(leaseId, event, data) {
      for (const res of streams.get(leaseId) ?? []) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    streamOpen(leaseId) {
      if ((streams.get(leaseId)?.size ?? 0) > 0) return Promise.resolve();
      return new Promise((resolve) => streamWaiters.set(leaseId, [...(streamWaiters.get(leaseId) ?? []), resolve]));
    },
    waitFor(predicate, ms = 5_000) {
      const found = requests.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no such request reached the fake control plane")), ms);
        waiters.push({ predicate, resolve: (r) => (clearTimeout(timer), resolve(r)) });
      });
    },
    close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };

  const send = (res: ServerResponse, a: Answer) => {
    res.writeHead(a.status, {
      "content-type": a.status >= 400 ? "application/problem+json" : "application/json",
      ...a.headers,
    });
    res.end(a.body === undefined ? "" : JSON.stringify(a.body));
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const path = new URL(req.url ?? "/", "http://x").pathname;
      const r: Recorded = {
        method: req.method ?? "GET",
        path,
        headers: req.headers,
        body: text === "" ? undefined : (JSON.parse(text) as unknown),
      };
      requests.push(r);
      for (const w of [...waiters]) {
        if (!w.predicate(r)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(r);
      }
      const m = /^\/v1\/leases\/([^/]+)(\/events|\/release)?$/.exec(path);
      if (r.method === "POST" && path === "/v1/nodes/register") return send(res, fake.onRegister(r));
      if (r.method === "POST" && path === "/v1/nodes/heartbeat") return send(res, fake.onHeartbeat(r));
      if (r.method === "POST" && path === "/v1/leases") {
        const a = fake.onLease(r);
        const body = a.body as Record<string, unknown> | undefined;
        if (typeof body?.["id"] === "string") leases.set(body["id"], body);
        return send(res, a);
      }
      if (m && m[2] === "/events") {
        const id = decodeURIComponent(m[1]!);
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(`event: queued\ndata: ${JSON.stringify({ position: 2, reason: "node", eta_s: null })}\n\n`);
        const set = streams.get(id) ?? new Set();
        set.add(res);
        streams.set(id, set);
        res.on("close", () => set.delete(res));
        for (const resolve of streamWaiters.get(id) ?? []) resolve();
        streamWaiters.delete(id);
        return;
      }
      if (m && r.method === "GET") {
        const lease = leases.get(decodeURIComponent(m[1]!));
        return lease
          ? send(res, { status: 200, body: lease })
          : send(res, { status: 404, body: problemJson("not_found", 404, "No such lease.") });
      }
      if (m && (m[2] === "/release" || r.method === "DELETE"))
        return send(res, {
          status: 200,
          body: {
            id: m[1],
            status: "released",
            held_ms: 1000,
            charged: 1,
            refunded: 59,
            billing: { ...NO_BILLING, quota_s: 1 },
            quota: null,
          },
        });
      send(res, { status: 404, body: problemJson("not_found", 404, `no ${r.method} ${path}`) });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (fake as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}
