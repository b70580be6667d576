import {
  createAgentClient,
  DurationTooLongError,
  InvalidIpTokenError,
  LeaseDeadlineError,
  NoGpuAvailableError,
  QueueTimeoutError,
  QuotaExceededError,
  ServerUnavailableError,
} from "@gpupool/sdk";
import type { AgentQueueUpdate } from "@gpupool/sdk";
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, onTestFinished } from "vitest";
import { startAgent } from "../src/index.js";
import type { RunningAgent } from "../src/index.js";
import { leaseJson, problemJson, startFakeControlPlane } from "./fake-control-plane.js";
import type { FakeControlPlane } from "./fake-control-plane.js";

// The SDK's agent client against a real agent (in this process) and a scripted control plane.
// The agent and the test share a process here, so the SDK allows a child's pid instead of its
// own: a deadline must never signal the test runner.

const APP_KEY = "gpu_a_sdk-agent-client-test";
const REPO = fileURLToPath(new URL("../../..", import.meta.url));
let cp: FakeControlPlane;
let agent: RunningAgent;
let url: string;
let standIn: ChildProcess;
let STAND_IN_PID = 0;

beforeEach(async () => {
  standIn = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  STAND_IN_PID = standIn.pid!;
  cp = await startFakeControlPlane();
  agent = await startAgent({
    server: cp.url,
    nodeKey: "gpu_n_sdk",
    devices: [
      { index: 0, uuid: "GPU-00000000-0000-0000-0000-000000000000", name: "Simulated GPU", memoryMb: 81920, slots: 2 },
    ],
    port: 0,
    pingIntervalMs: 100,
    log: pino({ level: "silent" }),
    stateFile: null,
  });
  for (let i = 0; i < 200 && !agent.ready(); i++) await new Promise((r) => setTimeout(r, 20));
  url = `${agent.url}/apps/${APP_KEY}`;
});
afterEach(async () => {
  await agent.close();
  await cp.close();
  standIn.kill("SIGKILL");
});

describe("createAgentClient", () => {
  it("gpu(): schedules, allows the pid, runs with CUDA_VISIBLE_DEVICES of the granted device, releases", async () => {
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    const seen = await pool.gpu({ duration: 30, size: "large" }, async ({ device, grant, signal }) => ({
      env: device.env(),
      leaseId: grant.leaseId,
      aborted: signal.aborted,
    }));
    expect(seen).toEqual({
      env: { CUDA_VISIBLE_DEVICES: "GPU-00000000-0000-0000-0000-000000000000" },
      leaseId: expect.stringMatching(/^ls_/),
      aborted: false,
    });
    const lease = await cp.waitFor((r) => r.path === "/v1/leases");
    expect(lease.body).toEqual({ duration: 30, size: "large", queue: true });
    expect((await cp.waitFor((r) => r.path.endsWith("/release"))).body).toEqual({ failed: false });
  });

  it("gpu(): a function that throws releases with failed: true and rethrows", async () => {
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    await expect(pool.gpu(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect((await cp.waitFor((r) => r.path.endsWith("/release"))).body).toEqual({ failed: true });
  });

  it("follows the queue: onQueue with the position, then the grant", async () => {
    cp.onLease = () => ({ status: 202, body: leaseJson({ id: "ls_wait", status: "queued", position: 4 }) });
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    const updates: AgentQueueUpdate[] = [];
    const granted = pool.schedule({ onQueue: (u) => updates.push(u) });
    await cp.streamOpen("ls_wait");
    cp.push("ls_wait", "granted", { lease: leaseJson({ id: "ls_wait", status: "active" }) });
    const grant = await granted;
    expect(grant).toMatchObject({ leaseId: "ls_wait", index: 0, idle: false });
    expect(updates[0]).toEqual({ position: 4, reason: "node", etaS: null });
    expect(await pool.release(grant)).toBe("not_used");
  });

  it("refusals are the SDK's typed errors, with the pool's detail as the message", async () => {
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    cp.onLease = () => ({
      status: 429,
      body: problemJson("quota_exceeded", 429, "user:u_bob has 10s left of its free quota.", {
        left: 10,
        requested: 60,
        tier: "free",
        identity: "user:u_bob",
        retry_at: new Date(Date.now() + 60_000).toISOString(),
      }),
    });
    const quota = await pool.schedule().catch((e: unknown) => e);
    expect(quota).toBeInstanceOf(QuotaExceededError);
    expect((quota as QuotaExceededError).message).toBe("user:u_bob has 10s left of its free quota.");
    expect((quota as QuotaExceededError).left).toBe(10);

    cp.onLease = () => ({
      status: 422,
      body: problemJson("duration_too_long", 422, "Too long.", { max_duration: 120 }),
    });
    await expect(pool.schedule({ duration: 500 })).rejects.toBeInstanceOf(DurationTooLongError);
    cp.onLease = () => ({
      status: 401,
      body: problemJson("invalid_ip_token", 401, "The X-IP-Token expired.", { reason: "expired" }),
    });
    await expect(pool.schedule({ ipToken: "x.y.z" })).rejects.toBeInstanceOf(InvalidIpTokenError);
    cp.onLease = () => ({
      status: 503,
      body: problemJson("no_gpu_available", 503, "No GPU free.", { reason: "queue_disabled" }),
    });
    await expect(pool.schedule({ queue: false })).rejects.toBeInstanceOf(NoGpuAvailableError);
  });

  it("a queue timeout arrives as QueueTimeoutError", async () => {
    cp.onLease = () => ({ status: 202, body: leaseJson({ id: "ls_to", status: "queued" }) });
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    const waiting = pool.schedule().catch((e: unknown) => e);
    await cp.streamOpen("ls_to");
    cp.push("ls_to", "failed", { problem: problemJson("queue_timeout", 408, "No GPU became free within 60s.") });
    const error = await waiting;
    expect(error).toBeInstanceOf(QueueTimeoutError);
    expect((error as Error).message).toBe("No GPU became free within 60s.");
  });

  it("the function's signal aborts at the deadline with LeaseDeadlineError", async () => {
    cp.onLease = () => {
      const now = Date.now();
      return {
        status: 201,
        body: leaseJson({
          id: "ls_short",
          status: "active",
          granted_at: new Date(now).toISOString(),
          deadline: new Date(now + 300).toISOString(),
        }),
      };
    };
    const pool = createAgentClient({ url, pid: STAND_IN_PID });
    const reason = await pool
      .gpu(
        ({ signal }) =>
          new Promise((resolve) => signal.addEventListener("abort", () => resolve(signal.reason as unknown))),
      )
      .catch((e: unknown) => e);
    expect(reason).toBeInstanceOf(LeaseDeadlineError);
  });

  it("gpu() allows no process unless told: an app whose call outlives its deadline is not stopped, its signal aborts", async () => {
    cp.onLease = () => {
      const now = Date.now();
      return {
        status: 201,
        body: leaseJson({
          id: "ls_overrun",
          status: "active",
          granted_at: new Date(now).toISOString(),
          deadline: new Date(now + 300).toISOString(),
        }),
      };
    };
    // The app is a process of its own, as in production: it overruns its lease by 1.5 s.
    const script = [
      'import { createAgentClient } from "@gpupool/sdk";',
      "const pool = createAgentClient({ url: process.argv[1] });",
      "const why = await pool.gpu({ duration: 1 }, ({ signal }) => new Promise((resolve) => signal.addEventListener('abort', () => setTimeout(() => resolve(signal.reason.name), 1500))));",
      "console.log('still running after ' + why);",
    ].join("\n");
    const app = spawn(process.execPath, ["--input-type=module", "-e", script, url], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    app.stdout.on("data", (d: Buffer) => (out += d.toString()));
    app.stderr.on("data", (d: Buffer) => (out += d.toString()));
    // "close", not "exit": only then has all of its output been read ("exit" can come first, and
    // the output then looked empty on a busy machine).
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      app.once("close", (code, signal) => resolve({ code, signal })),
    );
    expect(exit, out).toEqual({ code: 0, signal: null });
    expect(out.trim()).toBe("still running after LeaseDeadlineError");
  });

  it("gpu(): the function allows the child it started; at the deadline the agent stops the child, and the app goes on", async () => {
    cp.onLease = () => {
      const now = Date.now();
      return {
        status: 201,
        body: leaseJson({
          id: "ls_child",
          status: "active",
          granted_at: new Date(now).toISOString(),
          // Starting the worker and allowing it must fit before the deadline, or the allow is
          // refused: 3 s, as a stall of 1 s on a busy machine could use up 1 s.
          deadline: new Date(now + 3_000).toISOString(),
        }),
      };
    };
    const pool = createAgentClient({ url });
    let worker: ChildProcess | null = null;
    onTestFinished(() => void worker?.kill("SIGKILL"));
    const reason = await pool.gpu(async ({ device, signal, allow }) => {
      worker = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
        env: { ...process.env, ...device.env() },
        stdio: "ignore",
      });
      await allow(worker.pid!);
      return signal.aborted
        ? signal.reason
        : new Promise((resolve) => signal.addEventListener("abort", () => resolve(signal.reason as unknown)));
    });
    expect(reason).toBeInstanceOf(LeaseDeadlineError);
    const w = worker as ChildProcess | null;
    const signal =
      w!.exitCode === null && w!.signalCode === null
        ? await new Promise((resolve) => w!.once("exit", (_c, s) => resolve(s)))
        : w!.signalCode;
    expect(signal).toBe("SIGTERM");
  });

  it("an agent that is not there is a ServerUnavailableError naming the URL", async () => {
    const pool = createAgentClient({ url: "http://127.0.0.1:9/apps/x", pid: STAND_IN_PID });
    const error = await pool.schedule().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServerUnavailableError);
    expect((error as Error).message).toMatch(
      /Could not reach the gpupool agent at http:\/\/127\.0\.0\.1:9\/apps\/x\/schedule/,
    );
  });
});
