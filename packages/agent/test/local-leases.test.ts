import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { LocalLeases } from "../src/index.js";
import type { LocalLease } from "../src/index.js";

const log = pino({ level: "silent" });
const APP_KEY = "gpu_a_test-app-key";
const DEVICE = { index: 0, uuid: "GPU-11111111-2222-3333-4444-555555555555", name: "Test GPU" };

interface Harness {
  leases: LocalLeases;
  releases: { leaseId: string; failed: boolean }[];
}

const open: LocalLeases[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const l of open.splice(0)) l.close();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

function harness(graceMs = 300): Harness {
  const releases: Harness["releases"] = [];
  const leases = new LocalLeases({
    graceMs,
    watchIntervalMs: 50,
    log,
    releaseOnControlPlane: async (lease: LocalLease, failed: boolean) => {
      releases.push({ leaseId: lease.leaseId, failed });
    },
  });
  open.push(leases);
  return { leases, releases };
}

/** A child that prints "ready", then lives until killed. `ignoreTerm`: it logs SIGTERM and carries on. */
function child(options: { ignoreTerm?: boolean; exitAfterMs?: number } = {}): Promise<{
  proc: ChildProcess;
  events: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}> {
  const script = [
    options.ignoreTerm ? "process.on('SIGTERM', () => console.log('got SIGTERM'));" : "",
    options.exitAfterMs !== undefined ? `setTimeout(() => process.exit(0), ${options.exitAfterMs});` : "",
    "setInterval(() => {}, 1000);",
    "console.log('ready');",
  ].join(" ");
  const proc = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(proc);
  const events: string[] = [];
  // "close", not "exit": only then has all it printed been read, so the events keep their order
  // ("exit" can come before the last output, e.g. "got SIGTERM", is read).
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("close", (code, signal) => {
      events.push(`exit ${signal ?? code}`);
      resolve({ code, signal });
    }),
  );
  return new Promise((resolve) => {
    proc.stdout.on("data", (d: Buffer) => {
      for (const line of d.toString().split("\n").filter(Boolean)) {
        events.push(line);
        if (line === "ready") resolve({ proc, events, exited });
      }
    });
  });
}

async function until(predicate: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("deadline enforcement", () => {
  it("at the deadline a process that ignores SIGTERM gets SIGTERM, then SIGKILL after the grace", async () => {
    // The child must print "got SIGTERM" within the grace: 2 s, as a stalled machine could take
    // longer than 300 ms to run it.
    const h = harness(2_000);
    const c = await child({ ignoreTerm: true });
    const { token } = await h.leases.grant({
      leaseId: "ls_deadline",
      app: "a_1",
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 300,
      reuseKey: null,
    });
    expect(h.leases.allow(token, APP_KEY, c.proc.pid!)).toMatchObject({ kind: "allowed" });

    const { signal } = await c.exited;
    expect(signal).toBe("SIGKILL");
    // Order, not timing: TERM was delivered (and ignored) before the KILL ended it.
    expect(c.events).toEqual(["ready", "got SIGTERM", "exit SIGKILL"]);
    // The token is dead, and says why.
    expect(await h.leases.release(token, APP_KEY, false)).toMatchObject({
      kind: "ended",
      why: expect.stringMatching(/reached its deadline/),
    });
    // The control plane expires the lease itself: the agent does not release it.
    expect(h.releases).toEqual([]);
  });

  it("a process that honours SIGTERM exits on it, without SIGKILL", async () => {
    const h = harness(5_000);
    const c = await child();
    const { token } = await h.leases.grant({
      leaseId: "ls_term",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 200,
      reuseKey: null,
    });
    h.leases.allow(token, APP_KEY, c.proc.pid!);
    expect((await c.exited).signal).toBe("SIGTERM");
  });
});

describe("a release at the deadline", () => {
  it("counts as the deadline: the allowed process is stopped, not forgotten, and the token says it ended", async () => {
    let now = 1_000_000;
    const releases: { leaseId: string; failed: boolean }[] = [];
    const leases = new LocalLeases({
      graceMs: 300,
      watchIntervalMs: 50,
      log,
      now: () => now,
      releaseOnControlPlane: async (lease, failed) => void releases.push({ leaseId: lease.leaseId, failed }),
    });
    open.push(leases);
    const c = await child();
    const { token } = await leases.grant({
      leaseId: "ls_race",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 10_000,
      reuseKey: null,
    });
    leases.allow(token, APP_KEY, c.proc.pid!);
    // The app's own deadline timer fired and it released, a moment before the agent's timer.
    now += 10_000;
    expect(await leases.release(token, APP_KEY, false)).toMatchObject({
      kind: "ended",
      why: expect.stringMatching(/reached its deadline/),
    });
    expect((await c.exited).signal).toBe("SIGTERM");
    // The pool expires the lease itself: nothing is released there.
    expect(releases).toEqual([]);
  });
});

describe("early exit", () => {
  it("when every allowed process has exited, the lease is released (failed) so only held time is charged", async () => {
    const h = harness();
    const c = await child({ exitAfterMs: 100 });
    const { token } = await h.leases.grant({
      leaseId: "ls_early",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: null,
    });
    h.leases.allow(token, APP_KEY, c.proc.pid!);
    await c.exited;
    await until(() => h.releases.length > 0);
    expect(h.releases).toEqual([{ leaseId: "ls_early", failed: true }]);
    expect(await h.leases.release(token, APP_KEY, false)).toMatchObject({
      kind: "ended",
      why: expect.stringMatching(/exited before it was released/),
    });
    expect(h.leases.size).toBe(0);
  });

  it("a lease with no process allowed is left alone until released", async () => {
    const h = harness();
    const { token } = await h.leases.grant({
      leaseId: "ls_idle",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: null,
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(h.releases).toEqual([]);
    expect(await h.leases.release(token, APP_KEY, false)).toMatchObject({ kind: "released", lease: { used: false } });
    expect(h.releases).toEqual([{ leaseId: "ls_idle", failed: false }]);
  });
});

describe("allow and release", () => {
  it("allow refuses a pid that does not exist; a token only works with its own app key", async () => {
    const h = harness();
    const { token } = await h.leases.grant({
      leaseId: "ls_a",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: null,
    });
    expect(h.leases.allow(token, APP_KEY, 4_194_000)).toEqual({ kind: "no_such_process" });
    expect(h.leases.allow(token, "gpu_a_another-app", process.pid)).toEqual({ kind: "unknown" });
    expect(h.leases.allow("not-a-token", APP_KEY, process.pid)).toEqual({ kind: "unknown" });
    expect(await h.leases.release(token, "gpu_a_another-app", false)).toEqual({ kind: "unknown" });
    expect(await h.leases.release(token, APP_KEY, false)).toMatchObject({ kind: "released" });
  });

  it("a spaces worker (reuse key) is parked after a successful call and handed to the same function's next grant (idle: true)", async () => {
    const h = harness();
    const worker = await child();
    const reuseKey = "app\n/cgroup\n42";
    const first = await h.leases.grant({
      leaseId: "ls_1",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey,
    });
    expect(first.idle).toBe(false);
    h.leases.allow(first.token, APP_KEY, worker.proc.pid!);
    await h.leases.release(first.token, APP_KEY, false);
    expect(h.leases.parkedWorkers()).toEqual([{ device: DEVICE.uuid, app: null, pids: [worker.proc.pid] }]);

    const second = await h.leases.grant({
      leaseId: "ls_2",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey,
    });
    expect(second.idle).toBe(true);
    // The reused worker never calls /allow again, yet the lease counts as used and its deadline covers the worker.
    expect(second.lease.used).toBe(true);
    expect([...second.lease.pids.keys()]).toEqual([worker.proc.pid]);
    expect(await h.leases.release(second.token, APP_KEY, false)).toMatchObject({
      kind: "released",
      lease: { used: true },
    });
  });

  it("an idle worker is stopped before its device goes to another function", async () => {
    const h = harness(300);
    const worker = await child();
    const first = await h.leases.grant({
      leaseId: "ls_1",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: "app\n/cg\n1",
    });
    h.leases.allow(first.token, APP_KEY, worker.proc.pid!);
    await h.leases.release(first.token, APP_KEY, false);
    const other = await h.leases.grant({
      leaseId: "ls_2",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: "app\n/cg\n2",
    });
    expect(other.idle).toBe(false);
    expect((await worker.exited).signal).toBe("SIGTERM");
    expect(h.leases.parkedWorkers()).toEqual([]);
  });

  it("handing a device over, an idle worker that ignores SIGTERM is killed within a second, and the new lease's deadline counts from its grant", async () => {
    // A 5 s grace for processes at a deadline; an idle worker has no work to save, and the new
    // lease is charged from its grant on the pool while the worker goes.
    const h = harness(5_000);
    const stubborn = await child({ ignoreTerm: true });
    const first = await h.leases.grant({
      leaseId: "ls_1",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: "app\n/cg\n1",
    });
    h.leases.allow(first.token, APP_KEY, stubborn.proc.pid!);
    await h.leases.release(first.token, APP_KEY, false);
    const askedAt = Date.now();
    const other = await h.leases.grant({
      leaseId: "ls_2",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 10_000,
      reuseKey: "app\n/cg\n2",
    });
    const answeredAt = Date.now();
    expect(stubborn.events).toEqual(["ready", "got SIGTERM", "exit SIGKILL"]);
    expect(answeredAt - askedAt).toBeLessThan(5_000);
    expect(other.lease.deadlineAt).toBeLessThanOrEqual(askedAt + 10_000 + 50);
  });

  it("a spaces worker released with fail=true is stopped (its client drops it); an SDK caller's process is never signalled at release", async () => {
    const h = harness(300);
    const worker = await child();
    const g = await h.leases.grant({
      leaseId: "ls_f",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: "app\n/cg\n1",
    });
    h.leases.allow(g.token, APP_KEY, worker.proc.pid!);
    await h.leases.release(g.token, APP_KEY, true);
    expect((await worker.exited).signal).toBe("SIGTERM");

    const app = await child();
    const s = await h.leases.grant({
      leaseId: "ls_sdk",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: null,
    });
    h.leases.allow(s.token, APP_KEY, app.proc.pid!);
    await h.leases.release(s.token, APP_KEY, true);
    await new Promise((r) => setTimeout(r, 200));
    expect(app.proc.exitCode).toBeNull();
    expect(app.proc.signalCode).toBeNull();
  });
});
