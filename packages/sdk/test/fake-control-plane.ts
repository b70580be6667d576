// A stand-in for the control plane that speaks the v1 wire format (docs/wire.md), for SDK
// unit tests only: each test scripts the answers it needs. End-to-end tests against the
// real server live with the server.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Lease, Quota, ReleaseResult } from "@gpupool/contract";
import { afterEach } from "vitest";

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage["headers"];
  readonly body: unknown;
}

export type Handler = (request: RecordedRequest, res: ServerResponse) => void | Promise<void>;

export interface FakeControlPlane {
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Resolves with the first recorded request matching, waiting for it if needed. */
  waitFor(predicate: (request: RecordedRequest) => boolean): Promise<RecordedRequest>;
  close(): Promise<void>;
}

/** Planes started by the running test: each is closed after it (this module registers the hook in every test file that uses it). */
const started = new Set<FakeControlPlane>();
afterEach(async () => {
  const open = [...started];
  started.clear();
  await Promise.all(open.map((plane) => plane.close()));
});

export async function startFakeControlPlane(handler: Handler): Promise<FakeControlPlane> {
  const requests: RecordedRequest[] = [];
  const waiters: Array<{ predicate: (r: RecordedRequest) => boolean; resolve: (r: RecordedRequest) => void }> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const url = new URL(req.url ?? "/", "http://localhost");
      const recorded: RecordedRequest = {
        method: req.method ?? "GET",
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body: text === "" ? undefined : (JSON.parse(text) as unknown),
      };
      requests.push(recorded);
      for (const waiter of [...waiters]) {
        if (waiter.predicate(recorded)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(recorded);
        }
      }
      Promise.resolve(handler(recorded, res)).catch((error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const plane: FakeControlPlane = {
    url: `http://127.0.0.1:${port}`,
    requests,
    waitFor(predicate) {
      const found = requests.find(predicate);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve) => waiters.push({ predicate, resolve }));
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
  started.add(plane);
  return plane;
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

export function sendProblem(
  res: ServerResponse,
  status: number,
  code: string,
  detail: string,
  fields: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": "application/problem+json", ...headers });
  res.end(
    JSON.stringify({
      type: `urn:gpupool:problem:${code}`,
      title: code.replace(/_/g, " "),
      status,
      detail,
      code,
      ...fields,
    }),
  );
}

export interface EventStream {
  send(event: string, data: unknown): void;
  comment(text: string): void;
  end(): void;
}

export function openEventStream(res: ServerResponse): EventStream {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.flushHeaders();
  return {
    send: (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`),
    comment: (text) => res.write(`: ${text}\n`),
    end: () => res.end(),
  };
}

/** Overage as a pool without billing configured answers it: off, and why. */
export const overageOff = {
  available: false,
  enabled: false,
  blocked_by: "operator_disabled",
  price_per_gpu_minute_micros: 0,
  monthly_cap_micros: null,
  spent_micros: 0,
  held_micros: 0,
  month: "2025-01",
  month_ends_at: "2025-02-01T00:00:00.000Z",
  currency: "USD",
  display: { price_per_gpu_minute: "$0.00", spent: "$0.00", held: "$0.00" },
};

/** What paid for a call that the quota paid in full. */
export const quotaOnlyBilling = {
  quota_s: 60,
  overage_s: 0,
  hold_micros: 0,
  charged_micros: 0,
  currency: "USD",
  display: { hold: "$0.00", charged: "$0.00" },
};

/** Fixtures are checked against the contract, so the fake speaks what the real server sends. */
export const quotaObject = Quota.parse({
  identity: { kind: "ip", id: "203.0.113.7", tier: "anonymous" },
  quota: 120,
  used: 30,
  reserved: 60,
  left: 30,
  bonus: 0,
  window: 86400,
  window_started_at: "2025-01-01T10:00:00.000Z",
  resets_at: "2025-01-02T10:00:00.000Z",
  priority: 1,
  max_duration: 120,
  runs: 3,
  max_runs: null,
  credits: null,
  overage: overageOff,
});

/** A lease object as the server sends it; `granted` fills in device, grant time and deadline. */
export function wireLease(
  status: "queued" | "active" | "released" | "cancelled" | "failed",
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  const now = Date.now();
  const granted = status === "active" || status === "released";
  const lease = {
    id: "ls_1",
    status,
    app: "a_demo",
    identity: { kind: "ip", id: "203.0.113.7", tier: "anonymous" },
    size: "large",
    duration: 60,
    reserved: 60,
    cost: 1,
    node: granted ? "sim-0" : null,
    device: granted ? { node: "sim-0", index: 1, uuid: "GPU-11111111-2222", name: "Simulated H200", slots: [0] } : null,
    queued_at: new Date(now - 1000).toISOString(),
    granted_at: granted ? new Date(now).toISOString() : null,
    deadline: granted ? new Date(now + 60_000).toISOString() : null,
    ended_at: null,
    position: status === "queued" ? 2 : null,
    reason: status === "queued" ? "node" : null,
    eta_s: null,
    held_ms: null,
    charged: 0,
    refunded: 0,
    failed: false,
    billing: quotaOnlyBilling,
    problem: null,
    quota: quotaObject,
    ...overrides,
  };
  Lease.parse(lease);
  return lease;
}

export function releaseResult(id: string, failed: boolean): Record<string, unknown> {
  return ReleaseResult.parse({
    id,
    status: failed ? "failed" : "released",
    held_ms: 1234,
    charged: 2,
    refunded: 58,
    billing: { ...quotaOnlyBilling, quota_s: 2 },
    quota: quotaObject,
  });
}
