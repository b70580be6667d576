import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import { fileURLToPath } from "node:url";
import type { IncomingHttpHeaders } from "node:http";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cgroupPathOf, startAgent } from "../src/index.js";
import type { RunningAgent } from "../src/index.js";
import { NODE, leaseJson, problemJson, startFakeControlPlane } from "./fake-control-plane.js";
import type { FakeControlPlane } from "./fake-control-plane.js";

const APP_KEY = "gpu_a_device-api-test-key";
const NODE_KEY = "gpu_n_device-api-test-node";
const DEVICES = [
  { index: 0, uuid: "GPU-00000000-0000-0000-0000-000000000000", name: "Simulated GPU", memoryMb: 81920, slots: 2 },
];

let cp: FakeControlPlane;
let agent: RunningAgent;
let base: string;
const children: ChildProcess[] = [];

async function start(options: { defaultAppKey?: string; server?: string } = {}): Promise<void> {
  agent = await startAgent({
    server: options.server ?? cp.url,
    nodeKey: NODE_KEY,
    devices: DEVICES,
    port: 0,
    graceMs: 200,
    pingIntervalMs: 100,
    watchIntervalMs: 50,
    log: pino({ level: process.env["AGENT_TEST_LOG"] ?? "silent" }),
    defaultAppKey: options.defaultAppKey ?? null,
    stateFile: null,
  });
  base = `${agent.url}/apps/${APP_KEY}`;
}

async function ready(): Promise<void> {
  for (let i = 0; i < 200 && !agent.ready(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(agent.ready()).toBe(true);
}

beforeEach(async () => {
  cp = await startFakeControlPlane();
});
afterEach(async () => {
  await agent?.close();
  await cp.close();
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

const post = (path: string, init: RequestInit = {}) => fetch(`${base}${path}`, { method: "POST", ...init });

/** Raw chunks of a streamed response, as the HTTP client received them. */
function rawStream(
  url: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; chunks: string[]; ended: Promise<void>; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST" }, (res) => {
      const chunks: string[] = [];
      res.on("data", (d: Buffer) => chunks.push(d.toString("utf8")));
      const ended = new Promise<void>((r) => res.on("close", () => r()));
      resolve({ status: res.statusCode ?? 0, headers: res.headers, chunks, ended, close: () => req.destroy() });
    });
    req.on("error", reject);
    req.end();
  });
}

async function until(predicate: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("registration", () => {
  it("registers its devices with the node key and its own URL, then heartbeats", async () => {
    await start();
    await ready();
    const reg = await cp.waitFor((r) => r.path === "/v1/nodes/register");
    expect(reg.headers.authorization).toBe(`Bearer ${NODE_KEY}`);
    expect(reg.body).toEqual({
      devices: [{ index: 0, uuid: DEVICES[0]!.uuid, name: "Simulated GPU", memory_mb: 81920, slots: 2 }],
      agent_url: agent.url,
    });
    await cp.waitFor((r) => r.path === "/v1/nodes/heartbeat");
    expect(await (await fetch(`${agent.url}/healthz`)).json()).toMatchObject({
      status: "ready",
      node: NODE,
      devices: 1,
    });
  });

  it("until registered the device API answers 503 saying why; a refused node key is named", async () => {
    cp.onRegister = () => ({
      status: 401,
      body: problemJson("unauthorized", 401, "The bearer token is not valid on this server."),
    });
    await start();
    await cp.waitFor((r) => r.path === "/v1/nodes/register");
    const r = await post("/schedule?enableQueue=true");
    expect(r.status).toBe(503);
    expect(r.headers.get("content-type")).toMatch(/application\/problem\+json/);
    const body = (await r.json()) as { code: string; detail: string };
    expect(body.code).toBe("control_plane_unavailable");
    expect(body.detail).toMatch(/refused: \[unauthorized\].*--node-key/);
    // startup-report still answers 200, so a `spaces` app can start while the node registers.
    expect((await post("/startup-report")).status).toBe(200);
  });

  it("a control plane that forgot the node gets its devices again, and leases it failed meanwhile are stopped here", async () => {
    await start();
    await ready();
    const token = (await (await post("/schedule")).json()) as { allowToken: string; leaseId: string };
    const c = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    children.push(c);
    const exited = new Promise<NodeJS.Signals | null>((resolve) => c.once("exit", (_code, signal) => resolve(signal)));
    expect((await post(`/allow?allowToken=${token.allowToken}&pid=${c.pid}`)).status).toBe(200);
    // The pool lost the node (missed heartbeats) and failed its lease.
    cp.leases.set(token.leaseId, leaseJson({ id: token.leaseId, status: "failed" }));
    const before = cp.requests.filter((q) => q.path === "/v1/nodes/register").length;
    cp.onHeartbeat = () => ({
      status: 409,
      body: problemJson("node_not_registered", 409, "Node node-a is not registered."),
    });
    await until(() => cp.requests.filter((q) => q.path === "/v1/nodes/register").length > before);
    cp.onHeartbeat = () => ({
      status: 200,
      body: { node: { id: "n_1", name: NODE }, heartbeat_interval_s: 0.2, heartbeat_timeout_s: 5 },
    });
    expect(await exited).toBe("SIGTERM");
    expect(agent.ready()).toBe(true);
  });
});

describe("one node key, two agents", () => {
  it("heartbeats carry the registration; told another agent took the node over, the agent stops taking work and says why", async () => {
    cp.onRegister = () => ({
      status: 200,
      body: {
        node: { id: "n_1", name: NODE },
        devices: 1,
        registration: "1700000000000",
        heartbeat_interval_s: 0.1,
        heartbeat_timeout_s: 5,
      },
    });
    await start();
    await ready();
    expect((await cp.waitFor((r) => r.path === "/v1/nodes/heartbeat")).body).toEqual({ registration: "1700000000000" });
    cp.onHeartbeat = () => ({
      status: 409,
      body: problemJson(
        "node_not_registered",
        409,
        "Node node-a was registered since by another agent (http://10.0.0.9:7071).",
        { reason: "replaced" },
      ),
    });
    cp.onRegister = () => ({
      status: 409,
      body: problemJson(
        "conflict",
        409,
        "Node node-a is in use by another agent (http://10.0.0.9:7071, last heartbeat 0s ago): two agents cannot share a node key.",
        { reason: "node_in_use" },
      ),
    });
    const again = await cp.waitFor(
      (r) =>
        r.path === "/v1/nodes/register" &&
        (r.body as Record<string, unknown>)["previous_registration"] === "1700000000000",
    );
    expect(again.headers.authorization).toBe(`Bearer ${NODE_KEY}`);
    await until(() => !agent.ready());
    const r = await post("/schedule");
    expect(r.status).toBe(503);
    expect(((await r.json()) as { detail: string }).detail).toMatch(
      /in use by another agent \(http:\/\/10\.0\.0\.9:7071/,
    );
  });
});

describe("POST /schedule", () => {
  it("granted (201) → 200 JSON grant in the spaces format; the request carries the app key, node key, token and body", async () => {
    cp.onLease = () => ({
      status: 201,
      body: leaseJson({ id: "ls_g", status: "active", identity: { kind: "user", id: "u_ada", tier: "pro" } }),
    });
    await start();
    await ready();
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const r = await post(
      "/schedule?cgroupPath=%2Fdocker%2Fabc&taskId=140234&enableQueue=true&tokenVersion=2&durationSeconds=30&gpuSize=xlarge&token=eyJ.tok.en",
      { headers: { traceparent } },
    );
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^application\/json/);
    expect(r.headers.get("x-authenticated")).toBe("pro");
    const grant = (await r.json()) as Record<string, unknown>;
    expect(grant).toMatchObject({
      idle: false,
      nvidiaIndex: 0,
      nvidiaUUID: DEVICES[0]!.uuid,
      leaseId: "ls_g",
      node: NODE,
    });
    expect(grant["allowToken"]).toMatch(/^[\w-]{32}$/);
    const sent = await cp.waitFor((q) => q.path === "/v1/leases");
    expect(sent.headers.authorization).toBe(`Bearer ${APP_KEY}`);
    expect(sent.headers["x-gpupool-node-key"]).toBe(NODE_KEY);
    expect(sent.headers["x-ip-token"]).toBe("eyJ.tok.en");
    // The caller's trace context goes on to the pool (its spans of the lease join the caller's trace).
    expect(sent.headers["traceparent"]).toBe(traceparent);
    expect(sent.body).toEqual({ duration: 30, size: "xlarge", queue: true });
  });

  it("no X-Authenticated for IP and app identities; regular for free users", async () => {
    await start();
    await ready();
    expect((await post("/schedule")).headers.get("x-authenticated")).toBeNull();
    cp.onLease = () => ({
      status: 201,
      body: leaseJson({ id: "ls_f", status: "active", identity: { kind: "user", id: "u_bob", tier: "free" } }),
    });
    expect((await post("/schedule")).headers.get("x-authenticated")).toBe("regular");
  });

  const refusals: [string, number, () => Record<string, unknown>, number, (body: Record<string, unknown>) => void][] = [
    [
      "quota_exceeded → 429 {left: int, wait > 0}",
      429,
      () =>
        problemJson("quota_exceeded", 429, "This call needs 1m of GPU quota but user:u_bob has 29.5s left.", {
          left: 29.5,
          requested: 60,
          tier: "free",
          identity: "user:u_bob",
          retry_at: new Date(Date.now() + 90_000).toISOString(),
        }),
      429,
      (b) => {
        expect(b["left"]).toBe(29);
        expect(b["wait"]).toBeGreaterThan(80);
        expect(b["wait"]).toBeLessThanOrEqual(90);
        expect(b["code"]).toBe("quota_exceeded");
      },
    ],
    [
      "duration_too_long (422) → 429 with wait < 0",
      422,
      () =>
        problemJson("duration_too_long", 422, "300s is over the 120s maximum of the free tier.", {
          max_duration: 120,
          tier: "free",
          identity: "user:u_bob",
        }),
      429,
      (b) => expect(b["wait"]).toBeLessThan(0),
    ],
    [
      "runs_exceeded → 429 with wait = 0",
      429,
      () =>
        problemJson("runs_exceeded", 429, "Daily runs limit reached.", {
          runs: 5,
          max_runs: 5,
          tier: "free",
          identity: "user:u_bob",
        }),
      429,
      (b) => expect(b["wait"]).toBe(0),
    ],
    [
      "no_gpu_available → 503",
      503,
      () =>
        problemJson("no_gpu_available", 503, "No GPU is free and the request may not wait.", {
          reason: "queue_disabled",
        }),
      503,
      (b) => expect(b["code"]).toBe("no_gpu_available"),
    ],
    [
      "invalid_ip_token → 401",
      401,
      () => problemJson("invalid_ip_token", 401, "The X-IP-Token expired.", { reason: "expired" }),
      401,
      (b) => expect(b["reason"]).toBe("expired"),
    ],
    [
      "a bad app key (401 unauthorized) → 403 forbidden, not the client's 'expired token'",
      401,
      () => problemJson("unauthorized", 401, "The bearer token is not valid on this server."),
      403,
      (b) => {
        // The status, the code and the type agree: a 403 is `forbidden`, whatever the pool's code was.
        expect(b).toMatchObject({
          status: 403,
          code: "forbidden",
          type: "urn:gpupool:problem:forbidden",
          title: "Not allowed",
          reason: "app_key_refused",
        });
        expect(b["detail"]).toMatch(/SPACES_ZERO_DEVICE_API_URL/);
      },
    ],
  ];
  for (const [name, cpStatus, makeProblem, status, check] of refusals) {
    it(name, async () => {
      const problem = makeProblem();
      cp.onLease = () => ({ status: cpStatus, body: problem });
      await start();
      await ready();
      const r = await post("/schedule?durationSeconds=60");
      expect(r.status).toBe(status);
      expect(r.headers.get("content-type")).not.toMatch(/event-stream/);
      expect(r.headers.get("x-gpupool-detail")).toContain(String(problem["detail"]));
      const body = (await r.json()) as Record<string, unknown>;
      expect(body["detail"]).toBeTypeOf("string");
      check(body);
    });
  }

  it("the quota 429 says regular/pro in X-Authenticated from the problem's identity", async () => {
    cp.onLease = () => ({
      status: 429,
      body: problemJson("quota_exceeded", 429, "no quota", {
        left: 0,
        tier: "team",
        identity: "user:u_t",
        retry_at: new Date(Date.now() + 5_000).toISOString(),
      }),
    });
    await start();
    await ready();
    expect((await post("/schedule")).headers.get("x-authenticated")).toBe("pro");
  });

  it("an unreachable control plane → 503 naming it", async () => {
    await start();
    await ready();
    await cp.close();
    const r = await post("/schedule");
    expect(r.status).toBe(503);
    expect(((await r.json()) as { detail: string }).detail).toMatch(
      /control plane is not answering .*cannot reach the control plane at http:\/\/127\.0\.0\.1:\d+/,
    );
    cp = await startFakeControlPlane();
  });

  it("a GPU granted on another node is given back, never handed to the app", async () => {
    cp.onLease = () => ({
      status: 201,
      body: leaseJson({
        id: "ls_other",
        status: "active",
        device: { node: "node-b", index: 0, uuid: "GPU-b", name: "x", slots: [0] },
      }),
    });
    await start();
    await ready();
    const r = await post("/schedule");
    expect(r.status).toBe(503);
    expect(((await r.json()) as { detail: string }).detail).toMatch(/node node-b, not of this node \(node-a\)/);
    expect((await cp.waitFor((q) => q.path === "/v1/leases/ls_other/release")).body).toEqual({ failed: true });
  });

  it("a GPU this host does not have (the pool's device list for the node is another agent's) is given back, never handed to the app", async () => {
    cp.onLease = () => ({
      status: 201,
      body: leaseJson({
        id: "ls_foreign",
        status: "active",
        device: { node: NODE, index: 3, uuid: "GPU-ffffffff-0000-0000-0000-000000000003", name: "x", slots: [0] },
      }),
    });
    await start();
    await ready();
    const r = await post("/schedule");
    expect(r.status).toBe(503);
    const body = (await r.json()) as { code: string; reason: string; detail: string };
    expect(body).toMatchObject({ code: "control_plane_unavailable", reason: "foreign_device" });
    expect(body.detail).toMatch(
      /granted GPU GPU-ffffffff-0000-0000-0000-000000000003 \(index 3\) of node node-a, which is not a GPU of this host.*node key also used by an agent on another host/,
    );
    expect((await cp.waitFor((q) => q.path === "/v1/leases/ls_foreign/release")).body).toEqual({ failed: true });
  });

  it("bad parameters are a 400 naming each one; a repeated parameter too; a huge URL is refused", async () => {
    await start();
    await ready();
    const r = await post("/schedule?durationSeconds=soon&gpuSize=HUGE&taskId=a%20b");
    expect(r.status).toBe(400);
    const body = (await r.json()) as { errors: { field: string }[]; detail: string };
    expect(body.errors.map((e) => e.field)).toEqual(["durationSeconds", "gpuSize", "taskId"]);
    expect((await post("/schedule?token=a&token=b")).status).toBe(400);
    expect((await post(`/schedule?token=${"x".repeat(9000)}`)).status).toBe(400);
    const huge = await post(`/schedule?cgroupPath=${"y".repeat(17_000)}`);
    expect([414, 431]).toContain(huge.status);
    expect(cp.requests.filter((q) => q.path === "/v1/leases")).toHaveLength(0);
  });

  it("durationSeconds under a second is refused as the message says; a size the pool does not know names gpuSize, not the pool's body field", async () => {
    await start();
    await ready();
    const short = await post("/schedule?durationSeconds=0.4");
    expect(short.status).toBe(400);
    expect(((await short.json()) as { detail: string }).detail).toMatch(
      /durationSeconds must be a number of seconds from 1 to 86400/,
    );
    expect(cp.requests.filter((q) => q.path === "/v1/leases")).toHaveLength(0);
    // What the pool answers for {size: "mega"} (its body validation).
    cp.onLease = () => ({
      status: 400,
      body: problemJson(
        "invalid_request",
        400,
        "The request body is invalid: size must be one of large, xlarge. Nothing was changed.",
        { errors: [{ field: "size", message: "must be one of large, xlarge" }] },
      ),
    });
    const mega = await post("/schedule?gpuSize=mega");
    expect(mega.status).toBe(400);
    const body = (await mega.json()) as { code: string; detail: string; errors: { field: string }[] };
    expect(body.code).toBe("invalid_request");
    expect(body.detail).toBe(
      "The /schedule query is invalid: gpuSize must be one of large, xlarge. Nothing was requested.",
    );
    expect(body.errors).toEqual([{ field: "gpuSize", message: "must be one of large, xlarge" }]);
  });

  it("the app key comes from the path, else a Bearer header, else the agent's default; none → 403 saying how", async () => {
    await start();
    await ready();
    const none = await fetch(`${agent.url}/schedule`, { method: "POST" });
    expect(none.status).toBe(403);
    expect(((await none.json()) as { detail: string }).detail).toMatch(
      /SPACES_ZERO_DEVICE_API_URL at http:\/\/<agent>\/apps\/<app-key>/,
    );
    const bearer = await fetch(`${agent.url}/schedule`, {
      method: "POST",
      headers: { authorization: `Bearer ${APP_KEY}` },
    });
    expect(bearer.status).toBe(200);
    expect((await cp.waitFor((q) => q.path === "/v1/leases")).headers.authorization).toBe(`Bearer ${APP_KEY}`);
  });
});

describe("queued: the event stream", () => {
  it("202 → 200 text/event-stream: pings (one event per chunk), then succeeded with the grant", async () => {
    cp.onLease = () => ({
      status: 202,
      body: leaseJson({ id: "ls_q", status: "queued", position: 3, reason: "concurrency" }),
    });
    await start();
    await ready();
    const s = await rawStream(`${base}/schedule?enableQueue=true`);
    expect(s.status).toBe(200);
    expect(s.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(s.headers["x-queuing-reason"]).toBe("concurrency");
    await cp.streamOpen("ls_q");
    expect(await (await fetch(`${base}/queue-size`)).json()).toBe(1);
    cp.push("ls_q", "queued", { position: 1, reason: "concurrency", eta_s: 4 });
    await until(() => s.chunks.some((c) => c.includes('"position":1')));
    cp.leases.set("ls_q", leaseJson({ id: "ls_q", status: "active" }));
    cp.push("ls_q", "granted", { lease: leaseJson({ id: "ls_q", status: "active" }) });
    await s.ended;
    for (const chunk of s.chunks) expect(chunk).toMatch(/^event: (ping|succeeded)\ndata: [^\n]*\n\n$/);
    const last = s.chunks[s.chunks.length - 1]!;
    expect(last.startsWith("event: succeeded\n")).toBe(true);
    const grant = JSON.parse(/data: (.*)\n/.exec(last)![1]!) as Record<string, unknown>;
    expect(grant).toMatchObject({ idle: false, nvidiaIndex: 0, nvidiaUUID: DEVICES[0]!.uuid, leaseId: "ls_q" });
    expect(await (await fetch(`${base}/queue-size`)).json()).toBe(0);
  });

  it("a failed wait (queue timeout) → event: failed with the pool's detail", async () => {
    cp.onLease = () => ({ status: 202, body: leaseJson({ id: "ls_t", status: "queued" }) });
    await start();
    await ready();
    const s = await rawStream(`${base}/schedule`);
    await cp.streamOpen("ls_t");
    cp.push("ls_t", "failed", {
      problem: problemJson("queue_timeout", 408, "No GPU became free within 60s; nothing was charged."),
    });
    await s.ended;
    const last = s.chunks[s.chunks.length - 1]!;
    expect(last).toMatch(
      /^event: failed\ndata: \{"code":"queue_timeout","status":408,"detail":"No GPU became free within 60s; nothing was charged."\}\n\n$/,
    );
  });

  it("a client that leaves while waiting gets its queued lease cancelled", async () => {
    cp.onLease = () => ({ status: 202, body: leaseJson({ id: "ls_gone", status: "queued" }) });
    await start();
    await ready();
    const s = await rawStream(`${base}/schedule`);
    await cp.streamOpen("ls_gone");
    s.close();
    await cp.waitFor((q) => q.method === "DELETE" && q.path === "/v1/leases/ls_gone");
  });
});

describe("allow and release", () => {
  async function grant(): Promise<string> {
    const r = await post("/schedule");
    return ((await r.json()) as { allowToken: string }).allowToken;
  }

  function sleeper(): ChildProcess {
    const c = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    children.push(c);
    return c;
  }

  it("release without allow → 204 (not used); with allow → 200; then 404 saying it ended; an unknown token → 404", async () => {
    await start();
    await ready();
    const unused = await grant();
    const r204 = await post(`/release?allowToken=${unused}&fail=false`);
    expect(r204.status).toBe(204);
    expect((await cp.waitFor((q) => q.path.endsWith("/release"))).body).toEqual({ failed: false });

    const used = await grant();
    const c = sleeper();
    const allowed = await post(`/allow?allowToken=${used}&pid=${c.pid}`);
    expect(allowed.status).toBe(200);
    const r200 = await post(`/release?allowToken=${used}&fail=true`);
    expect(r200.status).toBe(200);
    const again = await post(`/release?allowToken=${used}&fail=false`);
    expect(again.status).toBe(404);
    expect(((await again.json()) as { detail: string }).detail).toMatch(/has ended: it was released \(failed\)/);
    expect((await post("/release?allowToken=nope")).status).toBe(404);
    // The SDK's process is never signalled at release.
    expect(c.exitCode).toBeNull();
  });

  it("allow: a missing pid, pid 1, the agent's own pid and a pid that does not exist are refused clearly", async () => {
    await start();
    await ready();
    const token = await grant();
    expect((await post(`/allow?allowToken=${token}`)).status).toBe(400);
    expect((await post(`/allow?allowToken=${token}&pid=1`)).status).toBe(400);
    expect((await post(`/allow?allowToken=${token}&pid=${process.pid}`)).status).toBe(400);
    const missing = await post(`/allow?allowToken=${token}&pid=4194000`);
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { detail: string }).detail).toMatch(
      /No process with pid 4194000 .*PID namespace/,
    );
    const c = sleeper();
    expect((await post(`/allow?allowToken=unknown&pid=${c.pid}`)).status).toBe(404);
  });

  it("a lease scheduled with a cgroupPath (the spaces client's own cgroup) takes only pids in that cgroup", async () => {
    await start();
    await ready();
    const c = sleeper();
    const theirs = (
      (await (await post("/schedule?cgroupPath=%2Fsomeone-else&taskId=1")).json()) as { allowToken: string }
    ).allowToken;
    const refused = await post(`/allow?allowToken=${theirs}&pid=${c.pid}`);
    expect(refused.status).toBe(403);
    const body = (await refused.json()) as { code: string; reason: string; detail: string };
    expect(body).toMatchObject({ code: "forbidden", reason: "pid_cgroup_mismatch" });
    expect(body.detail).toMatch(
      new RegExp(`pid ${c.pid} is in cgroup .*, not in /someone-else, the cgroupPath this lease was scheduled with`),
    );
    const mine = cgroupPathOf(readFileSync("/proc/self/cgroup", "utf8"))!;
    const own = (
      (await (await post(`/schedule?cgroupPath=${encodeURIComponent(mine)}&taskId=1`)).json()) as { allowToken: string }
    ).allowToken;
    expect((await post(`/allow?allowToken=${own}&pid=${c.pid}`)).status).toBe(200);
  });

  // The agent runs as root here (as with CAP_KILL): it could signal anything, so /allow must check whose pid it is.
  it.runIf(process.getuid?.() === 0)(
    "an app key gives no power over another user's processes: the pid must be one the app could signal itself",
    async () => {
      cp.onLease = () => {
        const now = Date.now();
        return {
          status: 201,
          body: leaseJson({
            id: "ls_other_user",
            status: "active",
            granted_at: new Date(now).toISOString(),
            // Starting python and both /allow calls must fit before the deadline, or its own
            // process is refused and never stopped: 3 s, with room for a stalled machine.
            deadline: new Date(now + 3_000).toISOString(),
          }),
        };
      };
      await start();
      await ready();
      // Someone else's process: `runuser -u nobody -- sleep 300`.
      const victim = spawn("sleep", ["300"], { uid: 65534, gid: 65534, stdio: "ignore" });
      children.push(victim);
      // The app runs as another user (daemon) and calls the agent with its own key, over 127.0.0.1.
      // The app: test/e2e/allow_other_pid.py (shared with the end-to-end test).
      const script = fileURLToPath(new URL("../../../test/e2e/allow_other_pid.py", import.meta.url));
      // Given as -c: the app's user (daemon) may not be able to read the checkout.
      const app = spawn("/usr/bin/python3", ["-c", readFileSync(script, "utf8"), base, String(victim.pid)], {
        uid: 1,
        gid: 1,
        cwd: "/",
        stdio: ["ignore", "pipe", "inherit"],
      });
      children.push(app);
      let out = "";
      app.stdout.on("data", (d: Buffer) => (out += d.toString()));
      // "close", not "exit": only then has all it printed been read.
      await new Promise((resolve) => app.once("close", resolve));
      const [first, second] = out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, any>);
      expect(first!["victim"][0]).toBe(403);
      expect(first!["victim"][1]).toMatchObject({ code: "forbidden", reason: "pid_not_yours" });
      expect(first!["victim"][1].detail).toMatch(
        new RegExp(`pid ${victim.pid} belongs to uid 65534, and this lease's requests come from uid 1`),
      );
      // Its own process is allowed, and stopped at the deadline …
      expect(first!["own"][0]).toBe(200);
      expect(second).toEqual({ own_exit: -15 });
      // … while the other user's process lives on.
      expect(victim.exitCode).toBeNull();
      expect(victim.signalCode).toBeNull();
    },
  );

  it("a token works only under the app key it was granted to", async () => {
    await start();
    await ready();
    const token = await grant();
    const other = await fetch(`${agent.url}/apps/gpu_a_someone-else/release?allowToken=${token}`, { method: "POST" });
    expect(other.status).toBe(404);
    expect((await post(`/release?allowToken=${token}`)).status).toBe(204);
  });

  it("bodies are ignored whatever their type; an oversized one is a 413 problem", async () => {
    await start();
    await ready();
    expect(
      (await post("/startup-report", { body: '{"a":1}', headers: { "content-type": "application/json" } })).status,
    ).toBe(200);
    expect(
      (await post("/startup-report", { body: "a=1", headers: { "content-type": "application/x-www-form-urlencoded" } }))
        .status,
    ).toBe(200);
    expect(
      (await post("/startup-report", { body: "not json", headers: { "content-type": "application/json" } })).status,
    ).toBe(200);
    const big = await post("/schedule", { body: "x".repeat(10_000), headers: { "content-type": "text/plain" } });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { code: string }).code).toBe("payload_too_large");
  });

  it("unknown routes are a 404 problem listing the device API", async () => {
    await start();
    const r = await fetch(`${agent.url}/nope`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as { detail: string }).detail).toMatch(/POST \/schedule/);
  });
});
