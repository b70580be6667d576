import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createClient } from "@gpupool/sdk";
import { startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

/**
 * The SDK's lease request survives a lost answer (issue 14, item 6): a real `gpupool server`
 * behind a proxy that, for the first POST /v1/leases, lets the server do the work and then drops
 * the connection (or answers 503 in its place). The SDK sends one Idempotency-Key per call and
 * retries with it, so the caller gets the lease the server made — and the server holds one lease,
 * one reservation, not two.
 */

const ADMIN = "sdk-retry-test-admin-token-0123456789";
const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function server(): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-sdk-retry-"));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, "gpupool.yaml");
  writeFileSync(
    config,
    [`storage:`, `  url: "${testStorage(join(dir, "pool.db"))}"`, "log:", "  level: warn"].join("\n"),
  );
  const s = await startServerBinary(["--config", config], { GPUPOOL_ADMIN_TOKEN: ADMIN });
  cleanup.push(() => s.stop("SIGKILL"));
  return s;
}

/** How the proxy spoils the first lease request. */
type Fault = "drop-after-server-answered" | "503-before-server";

/** A proxy to `target` that spoils the first POST /v1/leases as `fault` says; records each one's Idempotency-Key. */
async function proxy(target: string, fault: Fault): Promise<{ url: string; keys: (string | undefined)[] }> {
  const keys: (string | undefined)[] = [];
  const upstream = new URL(target);
  const forward = (req: IncomingMessage, res: ServerResponse, spoil: boolean): void => {
    const out = request(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        if (spoil) {
          // The server did the work; its answer never reaches the client.
          answer.resume();
          answer.on("end", () => req.socket.destroy());
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    req.pipe(out);
  };
  const proxyServer: Server = createServer((req, res) => {
    const lease = req.method === "POST" && req.url === "/v1/leases";
    if (lease) keys.push(req.headers["idempotency-key"] as string | undefined);
    const first = lease && keys.length === 1;
    if (first && fault === "503-before-server") {
      req.resume();
      res.writeHead(503, { "content-type": "application/problem+json", "retry-after": "0" });
      res.end(
        JSON.stringify({
          type: "urn:gpupool:problem:storage_unavailable",
          title: "Storage unavailable",
          status: 503,
          detail: "The pool's database did not answer in time (test).",
          code: "storage_unavailable",
          reason: "timeout",
        }),
      );
      return;
    }
    forward(req, res, first && fault === "drop-after-server-answered");
  });
  await new Promise<void>((resolve) => proxyServer.listen(0, "127.0.0.1", resolve));
  cleanup.push(() => {
    proxyServer.closeAllConnections();
    return new Promise((resolve) => proxyServer.close(resolve));
  });
  return { url: `http://127.0.0.1:${(proxyServer.address() as AddressInfo).port}`, keys };
}

async function adminCall(base: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return res.json();
}

async function setUp(fault: Fault) {
  const s = await server();
  const owner = await adminCall(s.url, "POST", "/v1/admin/users", { name: "owner", tier: "pro" });
  const app = await adminCall(s.url, "POST", "/v1/admin/apps", { name: "demo", owner: owner.id });
  const p = await proxy(s.url, fault);
  return { s, p, appKey: app.key as string };
}

describe("the SDK retries a lease request with its Idempotency-Key", () => {
  it("the connection drops after the server made the lease: the call gets that lease, and the server holds one", async () => {
    const { s, p, appKey } = await setUp("drop-after-server-answered");
    const pool = createClient({ url: p.url, appKey });
    const lease = await pool.acquire({ duration: 20 });
    expect(lease.status).toBe("active");
    // Two attempts, one key.
    expect(p.keys).toHaveLength(2);
    expect(p.keys[0]).toMatch(/^[\x21-\x7e]{1,255}$/);
    expect(p.keys[1]).toBe(p.keys[0]);
    const all = (await adminCall(s.url, "GET", "/v1/leases?limit=50")).leases as { id: string }[];
    expect(all.map((l) => l.id)).toEqual([lease.id]);
    expect((await pool.quota()).reserved).toBe(20);
    // A new call is a new key.
    const next = await pool.acquire({ duration: 5 });
    expect(next.id).not.toBe(lease.id);
    expect(p.keys[2]).not.toBe(p.keys[0]);
  });

  it("a 503 storage_unavailable is retried (same key) and the call succeeds", async () => {
    const { s, p, appKey } = await setUp("503-before-server");
    const pool = createClient({ url: p.url, appKey });
    const lease = await pool.acquire({ duration: 10 });
    expect(lease.status).toBe("active");
    expect(p.keys).toHaveLength(2);
    expect(p.keys[1]).toBe(p.keys[0]);
    expect(((await adminCall(s.url, "GET", "/v1/leases?limit=50")).leases as unknown[]).length).toBe(1);
  });

  it("a caller's own key makes a repeated call return the same lease", async () => {
    const { p, appKey } = await setUp("503-before-server");
    const pool = createClient({ url: p.url, appKey });
    const first = await pool.acquire({ duration: 10, idempotencyKey: "job-42" });
    const again = await pool.acquire({ duration: 10, idempotencyKey: "job-42" });
    expect(again.id).toBe(first.id);
  });
});
