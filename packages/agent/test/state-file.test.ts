import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { LocalLeases, StateFile, StateFileError, defaultStateFile } from "../src/index.js";
import type { LocalLease } from "../src/index.js";

// What survives an agent restart (or crash): each "run" below is a StateFile + LocalLeases pair,
// as startAgent builds them; a crash is a run that is simply dropped, without closing.

const log = pino({ level: "silent" });
const NODE_KEY = "gpu_n_state-file-test";
const APP_KEY = "gpu_a_state-file-test";
const DEVICE = { index: 0, uuid: "GPU-11111111-2222-3333-4444-555555555555", name: "Test GPU" };

const dir = mkdtempSync(join(tmpdir(), "gpupool-agent-state-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const open: LocalLeases[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  for (const l of open.splice(0)) l.close();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

interface Run {
  file: StateFile;
  leases: LocalLeases;
  releases: { leaseId: string; failed: boolean; appKey: string | null }[];
}

/** One run of the agent on `path`: takes the state file over and resumes what it holds. */
function run(path: string, nodeKey = NODE_KEY): Run {
  const file = new StateFile(path, nodeKey, log);
  const saved = file.open();
  const releases: Run["releases"] = [];
  let leases: LocalLeases | null = null;
  leases = new LocalLeases({
    graceMs: 300,
    watchIntervalMs: 50,
    log,
    onChange: () => leases && file.save(null, leases.snapshot()),
    releaseOnControlPlane: async (lease: LocalLease, failed: boolean) => {
      releases.push({ leaseId: lease.leaseId, failed, appKey: lease.appKey });
    },
  });
  leases.restore(saved.leases);
  open.push(leases);
  return { file, leases, releases };
}

/** Stops its timers, as a crashed agent's would be gone; the state file and its lock stay. */
function crash(r: Run): void {
  r.leases.close();
}

/**
 * An agent on `path` granted a lease to a running child and allowed its pid, then crashed
 * (kill -9: nothing but the state file survives).
 */
async function grantedThenCrashed(
  path: string,
  lease: { leaseId: string; app?: string; durationMs: number; ignoreTerm?: boolean },
) {
  const first = run(path);
  const c = await child(lease.ignoreTerm ?? false);
  const { token } = await first.leases.grant({
    leaseId: lease.leaseId,
    app: lease.app ?? null,
    appKey: APP_KEY,
    device: DEVICE,
    durationMs: lease.durationMs,
    reuseKey: null,
  });
  const allowed = first.leases.allow(token, APP_KEY, c.proc.pid!);
  crash(first);
  return { c, token, allowed };
}

function child(
  ignoreTerm: boolean,
): Promise<{ proc: ChildProcess; events: string[]; exited: Promise<NodeJS.Signals | null> }> {
  const script = `${ignoreTerm ? "process.on('SIGTERM', () => console.log('got SIGTERM'));" : ""} setInterval(() => {}, 1000); console.log('ready');`;
  const proc = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(proc);
  const events: string[] = [];
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    proc.once("exit", (_code, signal) => {
      events.push(`exit ${signal}`);
      resolve(signal);
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

describe("the agent's state file", () => {
  it("after a crash, the next run stops an allowed process at its deadline (SIGTERM, then SIGKILL)", async () => {
    const path = join(dir, "crash.json");
    const { c, token, allowed } = await grantedThenCrashed(path, {
      leaseId: "ls_crash",
      app: "a_1",
      durationMs: 1_000,
      ignoreTerm: true,
    });
    expect(allowed).toMatchObject({ kind: "allowed" });

    const second = run(path);
    expect(second.leases.leases().map((l) => l.leaseId)).toEqual(["ls_crash"]);
    expect(await c.exited).toBe("SIGKILL");
    expect(c.events).toEqual(["ready", "got SIGTERM", "exit SIGKILL"]);
    // The token says why it ended, as before the restart.
    expect(await second.leases.release(token, APP_KEY, false)).toMatchObject({
      kind: "ended",
      why: expect.stringMatching(/reached its deadline/),
    });
  });

  it("a deadline that passed while the agent was down is enforced as soon as it starts", async () => {
    const path = join(dir, "late.json");
    const { c } = await grantedThenCrashed(path, { leaseId: "ls_late", durationMs: 60_000 });
    // The agent was down past the deadline.
    const saved = JSON.parse(readFileSync(path, "utf8")) as { leases: { deadline_ms: number }[] };
    saved.leases[0]!.deadline_ms = Date.now() - 1_000;
    writeFileSync(path, JSON.stringify(saved));
    run(path);
    expect(await c.exited).toBe("SIGTERM");
  });

  it("/release works after a restart; the app key is back (sealed with the node key) to release on the pool", async () => {
    const path = join(dir, "release.json");
    const { c, token } = await grantedThenCrashed(path, { leaseId: "ls_rel", durationMs: 60_000 });
    const second = run(path);
    expect(await second.leases.release(token, "gpu_a_someone-else", false)).toEqual({ kind: "unknown" });
    expect(await second.leases.release(token, APP_KEY, false)).toMatchObject({
      kind: "released",
      lease: { leaseId: "ls_rel", used: true },
    });
    expect(second.releases).toEqual([{ leaseId: "ls_rel", failed: false, appKey: APP_KEY }]);
    expect(c.proc.exitCode).toBeNull();
  });

  it("keeps token hashes, never tokens; app keys only sealed; the file is private", async () => {
    const path = join(dir, "secrets.json");
    const r = run(path);
    const c = await child(false);
    const { token } = await r.leases.grant({
      leaseId: "ls_s",
      app: null,
      appKey: APP_KEY,
      device: DEVICE,
      durationMs: 60_000,
      reuseKey: null,
    });
    r.leases.allow(token, APP_KEY, c.proc.pid!);
    const text = readFileSync(path, "utf8");
    expect(text).not.toContain(token);
    expect(text).not.toContain(APP_KEY);
    expect(text).toContain(`"pid":${c.proc.pid}`);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    crash(r);
    // Another node key cannot open the sealed app key: the lease is still enforced, and released
    // on the pool once its app calls /release with its key.
    const other = run(path, "gpu_n_another-node");
    expect(other.leases.leases()[0]).toMatchObject({ leaseId: "ls_s", appKey: null });
    await other.leases.release(token, APP_KEY, false);
    expect(other.releases).toEqual([{ leaseId: "ls_s", failed: false, appKey: APP_KEY }]);
  });

  it("a reused pid is never signalled: a saved pid whose process is gone (its number maybe taken) is dropped", async () => {
    const path = join(dir, "reused.json");
    // A deadline far away: the probe, not the deadline, must end it (with 800 ms, a loaded CI
    // machine took longer than that to start the stranger, and the deadline ended the lease first).
    await grantedThenCrashed(path, { leaseId: "ls_reuse", durationMs: 60_000 });
    // Another process now has that pid: same number, another start time.
    const stranger = await child(false);
    const saved = JSON.parse(readFileSync(path, "utf8")) as {
      leases: { pids: { pid: number; start_time: string }[] }[];
    };
    saved.leases[0]!.pids = [{ pid: stranger.proc.pid!, start_time: "1" }];
    writeFileSync(path, JSON.stringify(saved));
    const second = run(path);
    // Its only process is "gone": the early-exit probe releases the lease, and nobody is signalled.
    // (Polled, not a fixed sleep: CI saw the probe come after 1.2 s on a loaded machine.)
    await vi.waitFor(() => expect(second.releases).toEqual([{ leaseId: "ls_reuse", failed: true, appKey: APP_KEY }]), {
      timeout: 20_000,
      interval: 50,
    });
    expect(stranger.proc.exitCode).toBeNull();
    expect(stranger.proc.signalCode).toBeNull();
  });

  it("an unreadable file is moved aside, not trusted; an unwritable place is an error naming --state-file", () => {
    const path = join(dir, "garbage.json");
    writeFileSync(path, "{ not json");
    const r = run(path);
    expect(r.leases.size).toBe(0);
    expect(readdirSync(dir).filter((f) => f.startsWith("garbage.json.unreadable-"))).toHaveLength(1);
    r.file.close();
    const notADirectory = join(dir, "a-file");
    writeFileSync(notADirectory, "");
    expect(() => new StateFile(join(notADirectory, "state.json"), NODE_KEY, log).open()).toThrow(StateFileError);
    expect(() => new StateFile(join(notADirectory, "state.json"), NODE_KEY, log).open()).toThrow(/--state-file/);
  });

  it("the default path follows systemd's StateDirectory, else XDG_STATE_HOME, and names the node by a hash", () => {
    expect(defaultStateFile(NODE_KEY, { STATE_DIRECTORY: "/var/lib/gpupool-agent" })).toMatch(
      /^\/var\/lib\/gpupool-agent\/agent-[0-9a-f]{12}\.json$/,
    );
    expect(defaultStateFile(NODE_KEY, { XDG_STATE_HOME: "/home/u/.state" })).toMatch(
      /^\/home\/u\/\.state\/gpupool\/agent-[0-9a-f]{12}\.json$/,
    );
    expect(defaultStateFile(NODE_KEY, {})).not.toContain(NODE_KEY);
  });
});
