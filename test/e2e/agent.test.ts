import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createAgentClient } from "@gpupool/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBinary, startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

/**
 * docs/agent.md end to end: the real `gpupool server` and `gpupool agent` binaries, driven by a Python
 * script that speaks the device API exactly as the `spaces` package's ZeroGPU client does.
 */

const ADMIN = "agent-e2e-admin-token-0123456789";
const SCRIPT = fileURLToPath(new URL("./spaces_client.py", import.meta.url));

/** A Python that can `import httpx` (Debian: apt-get install python3-httpx), or null. */
function findPython(): string | null {
  for (const candidate of [process.env["GPUPOOL_TEST_PYTHON"], "/usr/bin/python3", "python3"]) {
    if (candidate === undefined || candidate === "") continue;
    const r = spawnSync(candidate, ["-c", "import httpx"], { stdio: "ignore" });
    if (r.status === 0) return candidate;
  }
  return null;
}

const python = findPython();
if (python === null && process.env["CI"] !== "true") {
  process.stderr.write(
    "\ntest/e2e/agent.test.ts: the spaces-client test did NOT run: no python3 with httpx was found.\n" +
      "  Install it (Debian/Ubuntu: apt-get install -y python3-httpx), or point GPUPOOL_TEST_PYTHON at a python that has httpx,\n" +
      "  then run: npx vitest run test/e2e/agent.test.ts\n\n",
  );
}

let dir: string;
let server: ServerProcess;
let agent: ServerProcess;
let appKey: string;
let nodeKey: string;
let tokens: Record<string, string>;

async function admin(path: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = (await r.json()) as Record<string, unknown>;
  if (!r.ok) throw new Error(`${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "gpupool-agent-e2e-"));
  const config = join(dir, "gpupool.yaml");
  // No configured devices: the agent's node is the whole pool. A small free tier and a one-run
  // tier make every refusal of the device API reachable; a short queue timeout makes 'failed' quick.
  writeFileSync(
    config,
    [
      "pool: { simulated: [] }",
      "quota:",
      "  tiers:",
      "    anonymous: { quota: 10m, priority: 1, max_duration: 120s }",
      "    free: { quota: 100s, priority: 2, max_duration: 60s }",
      "    pro: { quota: 25m, priority: 3, max_duration: 300s }",
      "    team: { quota: 25m, priority: 3, max_duration: 300s, max_runs: 1 }",
      "    enterprise: { quota: 45m, priority: 3, max_duration: 300s }",
      "queue: { timeout: 3s }",
      "nodes: { heartbeat_interval: 1s, heartbeat_timeout: 5s }",
      "",
    ].join("\n"),
  );
  server = await startServerBinary(["--config", config, "--storage", testStorage(join(dir, "pool.db"))], {
    GPUPOOL_ADMIN_TOKEN: ADMIN,
  });
  const node = await admin("/v1/admin/nodes", { name: "gpu-host-1" });
  const users = { ada: "pro", bob: "free", carol: "team" };
  for (const [name, tier] of Object.entries(users)) await admin("/v1/admin/users", { name, tier });
  const app = await admin("/v1/admin/apps", { name: "spaces-demo", owner: "ada" });
  appKey = String(app["key"]);
  tokens = {};
  for (const name of Object.keys(users))
    tokens[name] = String((await admin("/v1/ip-tokens", { app: "spaces-demo", user: name }))["token"]);

  nodeKey = String(node["key"]);
  agent = await startAgentBinary("127.0.0.1:0");
}, 60_000);

/** The real `gpupool agent` with one simulated GPU, its state in the test's directory; resolves once registered. */
async function startAgentBinary(listen: string): Promise<ServerProcess> {
  const started = await startBinary(
    [
      "agent",
      "--server",
      server.url,
      "--listen",
      listen,
      "--devices",
      "simulated",
      "--simulated-gpus",
      "1",
      "--grace-s",
      "1",
      "--state-file",
      join(dir, "agent-state.json"),
    ],
    { GPUPOOL_NODE_KEY: nodeKey },
    /listening on (http:\/\/\S+)/,
  );
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${started.url}/healthz`).catch(() => null);
    if (r?.ok) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return started;
}

afterAll(async () => {
  await agent?.stop();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The lease on the pool once it is no longer active (the pool ends it at its deadline). */
async function leaseAfterDeadline(id: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100; i++) {
    const lease = (await (
      await fetch(`${server.url}/v1/leases/${id}`, { headers: { authorization: `Bearer ${appKey}` } })
    ).json()) as Record<string, unknown>;
    if (lease["status"] !== "active") return lease;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`lease ${id} is still active`);
}

/** The pid of the `sleep` that `runuser` started (itself once it has exec'd, or its child). */
async function sleepPidUnder(parent: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    try {
      if (readFileSync(`/proc/${parent}/comm`, "utf8").trim() === "sleep") return parent;
      const children = readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8").trim();
      if (children !== "") return Number(children.split(" ")[0]);
    } catch {
      // not there yet
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("runuser did not start sleep");
}

function runPython(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(python!, [SCRIPT], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    // "close", not "exit": only then has all of its output been read.
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("gpupool agent: the device API as the spaces ZeroGPU client uses it", () => {
  it("registers the simulated GPU with the control plane", async () => {
    const health = (await (await fetch(`${agent.url}/healthz`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ status: "ready", node: "gpu-host-1", devices: 1 });
    const pool = (await (
      await fetch(`${server.url}/v1/admin/pool`, { headers: { authorization: `Bearer ${ADMIN}` } })
    ).json()) as { devices: { node: string; slots: unknown[] }[] };
    expect(pool.devices).toEqual([expect.objectContaining({ node: "gpu-host-1", slots: [null, null] })]);
  });

  it.runIf(python !== null || process.env["CI"] === "true")(
    "grant, queue over SSE, idle-worker reuse, quota/duration/runs 429s, 401, 503, queue timeout, deadline kill, release 200/204/404",
    async () => {
      expect(python, "CI needs a python3 with httpx (apt-get install -y python3-httpx)").not.toBeNull();
      const r = await runPython({
        AGENT_URL: `${agent.url}/apps/${appKey}`,
        TOKEN_PRO: tokens["ada"]!,
        TOKEN_FREE: tokens["bob"]!,
        TOKEN_RUNS: tokens["carol"]!,
      });
      expect(r.stderr).toBe("");
      const out = JSON.parse(r.stdout) as Record<string, any>;
      if (process.env["AGENT_E2E_PRINT"]) console.log(JSON.stringify(out, null, 1));
      expect(out["error"], String(out["error"])).toBeUndefined();
      expect(out["ok"]).toBe(true);

      expect(out["startup_report"]).toBe(200);
      expect(out["queue_size_idle"]).toBe(0);
      // Granted now: the spaces grant, X-Authenticated from the pro user's tier.
      expect(out["grant"]).toMatchObject({
        status: 200,
        kind: "grant",
        auth: "pro",
        grant: { idle: false, nvidiaIndex: 0, nvidiaUUID: expect.stringMatching(/^GPU-/) },
      });
      expect(out["allow"]).toBe(200);
      // Queued: 200 text/event-stream, X-Queuing-Reason, pings, then succeeded once the GPU was released.
      expect(out["queue_size_waiting"]).toBe(1);
      expect(out["release_used"]).toBe(200);
      expect(out["queued"]).toMatchObject({
        status: 200,
        kind: "stream",
        queuing_reason: "node",
        auth: null,
        grant: { idle: false, nvidiaIndex: 0 },
      });
      expect(out["queued"].events[0]).toBe("ping");
      expect(out["queued"].events[out["queued"].events.length - 1]).toBe("succeeded");
      // The first call's idle worker was stopped before its GPU went to another task.
      expect(out["evicted_worker_exit"]).toBe(-15);
      expect(out["release_unused"]).toBe(204);
      expect(out["release_again"]).toBe(404);
      expect(out["release_unknown"]).toBe(404);
      // The same task's worker is reused (idle: true), kept after success, stopped after a failure.
      expect(out["reuse_release_1"]).toBe(200);
      expect(out["reuse_idle"]).toBe(true);
      expect(out["reuse_same_index"]).toBe(true);
      expect(out["reuse_release_2"]).toBe(200);
      expect(out["reuse_worker_alive"]).toBe(true);
      expect(out["reuse_fail_release"]).toBe(200);
      expect(out["failed_worker_exit"]).toBe(-15);
      // Refusals in the client's terms.
      expect(out["quota_first"]).toBe("grant");
      expect(out["quota_exceeded"]).toMatchObject({ status: 429, kind: "quota", auth: "regular", quota: { left: 40 } });
      expect(out["quota_exceeded"].quota.wait).toBeGreaterThan(0);
      expect(out["duration_too_long"]).toMatchObject({ status: 429, kind: "quota" });
      expect(out["duration_too_long"].quota.wait).toBeLessThan(0);
      expect(out["runs_exceeded"]).toMatchObject({ status: 429, kind: "quota", auth: "pro", quota: { wait: 0 } });
      expect(out["invalid_token"]).toMatchObject({ status: 401, kind: "status" });
      expect(out["no_gpu"]).toMatchObject({ status: 503, kind: "status" });
      expect(out["queue_timeout"]).toMatchObject({ status: 200, kind: "stream", grant: null });
      expect(out["queue_timeout"].events[out["queue_timeout"].events.length - 1]).toBe("failed");
      expect(out["queue_timeout"].raw[out["queue_timeout"].raw.length - 1]).toMatch(/queue_timeout/);
      // The deadline: SIGTERM (ignored), then SIGKILL after the grace; release afterwards is 404.
      expect(out["deadline_allow"]).toBe(200);
      expect(out["deadline_exit"]).toBe(-9);
      expect(out["deadline_output"]).toEqual(["TERM"]);
      expect(out["deadline_release"]).toBe(404);
      // … and on the pool the lease ended as expired at its deadline, charged its full reservation.
      const ended = await leaseAfterDeadline(String(out["deadline_lease"]));
      expect(ended).toMatchObject({ status: "expired", reserved: 2, charged: 2, refunded: 0 });
    },
    90_000,
  );

  it("the device API names its own query parameters in refusals: gpuSize (not the pool's size), durationSeconds from 1", async () => {
    const mega = await fetch(`${agent.url}/apps/${appKey}/schedule?gpuSize=mega`, { method: "POST" });
    expect(mega.status).toBe(400);
    expect(((await mega.json()) as { detail: string }).detail).toBe(
      "The /schedule query is invalid: gpuSize must be one of large, xlarge. Nothing was requested.",
    );
    const short = await fetch(`${agent.url}/apps/${appKey}/schedule?durationSeconds=0.4`, { method: "POST" });
    expect(short.status).toBe(400);
    expect(((await short.json()) as { detail: string }).detail).toMatch(
      /durationSeconds must be a number of seconds from 1 to 86400/,
    );
  });

  // The agent runs as root here, as it would with CAP_KILL: it can signal any process of the host.
  it.runIf(process.getuid?.() === 0 && existsSync("/usr/bin/python3"))(
    "an app key gives no power over another user's processes: /allow of someone else's pid is refused and that process outlives the deadline",
    async () => {
      // `runuser -u nobody -- sleep 300 &`: a process of another user.
      const victim = spawn("runuser", ["-u", "nobody", "--", "sleep", "300"], { stdio: "ignore" });
      const victimPid = await sleepPidUnder(victim.pid!);
      // An app running as user `daemon`, holding a valid app key: it asks for a 3 s lease and
      // allows the other user's pid, then its own child.
      const script = fileURLToPath(new URL("./allow_other_pid.py", import.meta.url));
      // Given as -c: the app's user (daemon) may not be able to read the checkout.
      const app = spawn(
        "/usr/bin/python3",
        ["-c", readFileSync(script, "utf8"), `${agent.url}/apps/${appKey}`, String(victimPid)],
        { uid: 1, gid: 1, cwd: "/", stdio: ["ignore", "pipe", "pipe"] },
      );
      let out = "";
      app.stdout.on("data", (d: Buffer) => (out += d.toString()));
      app.stderr.on("data", (d: Buffer) => (out += d.toString()));
      try {
        // "close", not "exit": only then has all it printed been read.
        await new Promise((resolve) => app.once("close", resolve));
        const [first, second] = out
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l) as Record<string, any>);
        expect(first!["victim"], out).toEqual([
          403,
          expect.objectContaining({ code: "forbidden", reason: "pid_not_yours" }),
        ]);
        expect(first!["own"][0]).toBe(200);
        // The app's own process was stopped at the deadline; the other user's is still there.
        expect(second).toEqual({ own_exit: -15 });
        expect(await leaseAfterDeadline(String(first!["lease"]))).toMatchObject({ status: "expired" });
        expect(() => process.kill(victimPid, 0)).not.toThrow();
      } finally {
        victim.kill("SIGKILL");
        try {
          process.kill(victimPid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    },
    30_000,
  );

  it("the TypeScript SDK through the agent: gpu() with CUDA_VISIBLE_DEVICES of the granted GPU, charged only the time held", async () => {
    const pool = createAgentClient({ url: `${agent.url}/apps/${appKey}` });
    const seen = await pool.gpu({ duration: 60, size: "large", ipToken: tokens["ada"] }, async ({ device, grant }) => ({
      env: device.env(),
      grant,
    }));
    expect(seen.env.CUDA_VISIBLE_DEVICES).toMatch(/^GPU-/);
    expect(seen.grant.node).toBe("gpu-host-1");
    const lease = (await (
      await fetch(`${server.url}/v1/leases/${seen.grant.leaseId}`, { headers: { authorization: `Bearer ${appKey}` } })
    ).json()) as Record<string, unknown>;
    expect(lease).toMatchObject({ status: "released", identity: { kind: "user" }, device: { node: "gpu-host-1" } });
    expect(lease["charged"]).toBeLessThanOrEqual(2);
  });

  it("a second agent started with the same node key is refused by the pool and says so; the first keeps its GPU", async () => {
    const second = await startBinary(
      [
        "agent",
        "--server",
        server.url,
        "--listen",
        "127.0.0.1:0",
        "--devices",
        "simulated",
        "--simulated-gpus",
        "2",
        "--state-file",
        join(dir, "second-agent-state.json"),
      ],
      { GPUPOOL_NODE_KEY: nodeKey },
      /listening on (http:\/\/\S+)/,
    );
    try {
      for (let i = 0; i < 100 && !/in use by another agent/.test(second.output()); i++)
        await new Promise((resolve) => setTimeout(resolve, 50));
      expect(second.output()).toMatch(
        /registration failed: the control plane refused: \[conflict\] Node gpu-host-1 is in use by another agent/,
      );
      const refused = await fetch(`${second.url}/apps/${appKey}/schedule`, { method: "POST" });
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { detail: string }).detail).toMatch(
        /Node gpu-host-1 is in use by another agent \(http:\/\/127\.0\.0\.1:\d+/,
      );
      // The pool still has the first agent's one GPU, and grants it through the first agent.
      const pool = (await (
        await fetch(`${server.url}/v1/admin/pool`, { headers: { authorization: `Bearer ${ADMIN}` } })
      ).json()) as { devices: unknown[] };
      expect(pool.devices).toHaveLength(1);
      const client = createAgentClient({ url: `${agent.url}/apps/${appKey}` });
      expect(await client.gpu({ duration: 5 }, ({ device }) => device.uuid)).toMatch(/^GPU-/);
    } finally {
      expect(await second.stop()).toBe(0);
    }
  });

  it("after the agent crashes, its successor (same state file) still stops an allowed process at the deadline, and /release still works", async () => {
    const port = new URL(agent.url).port;
    const pool = createAgentClient({ url: `${agent.url}/apps/${appKey}` });
    // Long enough that the agent is killed and restarted before the deadline even on a loaded
    // machine (with 3 s, CI once saw the first agent stop the process itself before its kill).
    const short = await pool.schedule({ duration: 8 });
    const worker = spawn(
      process.execPath,
      ["-e", "process.on('SIGTERM', () => console.log('TERM')); setInterval(() => {}, 1000); console.log('ready')"],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    let said = "";
    worker.stdout.on("data", (d: Buffer) => (said += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      worker.once("exit", (_code, signal) => resolve(signal)),
    );
    try {
      while (!said.includes("ready")) await new Promise((resolve) => setTimeout(resolve, 20));
      await pool.allow(short, worker.pid);
      const unused = await pool.schedule({ duration: 30 });
      // kill -9: nothing is written on the way out.
      expect(await agent.stop("SIGKILL")).toBeNull();
      agent = await startAgentBinary(`127.0.0.1:${port}`);
      expect(agent.output()).toMatch(
        new RegExp(`"lease":"${short.leaseId}".*resuming a lease of the agent's previous run`),
      );
      // It presented its registration from the state file, so the pool let it take its node back at once.
      expect((await fetch(`${agent.url}/healthz`)).status).toBe(200);
      expect(agent.output()).not.toMatch(/in use by another agent/);
      // SIGTERM at the deadline (ignored), SIGKILL after the 1 s grace.
      expect(await exited).toBe("SIGKILL");
      expect(said.trim().split("\n")).toEqual(["ready", "TERM"]);
      expect(await leaseAfterDeadline(String(short.leaseId))).toMatchObject({ status: "expired" });
      // The other lease's token still works after the restart: released, never used.
      expect(await pool.release(unused)).toBe("not_used");
      const other = (await (
        await fetch(`${server.url}/v1/leases/${unused.leaseId}`, { headers: { authorization: `Bearer ${appKey}` } })
      ).json()) as Record<string, unknown>;
      expect(other["status"]).toBe("released");
    } finally {
      worker.kill("SIGKILL");
    }
  }, 60_000);

  it("SIGTERM stops the agent cleanly (exit 0), logging the active lease it leaves", async () => {
    const pool = createAgentClient({ url: `${agent.url}/apps/${appKey}` });
    const grant = await pool.schedule({ duration: 30 });
    expect(await agent.stop("SIGTERM")).toBe(0);
    expect(agent.output()).toMatch(new RegExp(`"lease":"${grant.leaseId}".*leaving an active lease as it is`));
  });
});
