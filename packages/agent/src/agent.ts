import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { ControlPlane, ControlPlaneDown, ControlPlaneRefusal } from "./control-plane.js";
import { buildDeviceApi } from "./device-api.js";
import type { Readiness } from "./device-api.js";
import type { NodeDevice } from "./devices.js";
import { LocalLeases } from "./local-leases.js";
import type { PidCheck } from "./pid-ownership.js";
import type { LocalLease } from "./local-leases.js";
import { Registration } from "./registration.js";
import { StateFile, defaultStateFile } from "./state-file.js";

export interface AgentOptions {
  /** The control plane's base URL. */
  readonly server: string;
  readonly nodeKey: string;
  readonly devices: readonly NodeDevice[];
  readonly host?: string;
  readonly port?: number;
  /** SIGTERM → SIGKILL delay at a lease deadline (default 5 s). */
  readonly graceMs?: number;
  /** App key for device API calls that carry none in their path. */
  readonly defaultAppKey?: string | null;
  readonly log: Logger;
  /** Interval of `event: ping` to waiting clients (default 5 s). */
  readonly pingIntervalMs?: number;
  /** Interval of the early-exit probe of allowed pids (default 500 ms). */
  readonly watchIntervalMs?: number;
  /** How /allow ties a pid to the app that asks (default `strict`; pid-ownership.ts, docs/agent.md). */
  readonly pidCheck?: PidCheck;
  /**
   * Where the agent keeps its leases across restarts (state-file.ts). Default: defaultStateFile()
   * of the node key; null keeps them in memory only (a restart then stops deadline enforcement).
   */
  readonly stateFile?: string | null;
}

export interface RunningAgent {
  /** Where the device API listens, e.g. http://127.0.0.1:7071. */
  readonly url: string;
  readonly ready: () => boolean;
  /** Stops serving; leaves running processes and active leases alone, and logs each one it leaves. */
  close(): Promise<void>;
}

const RELEASE_RETRY_MAX_MS = 30_000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Starts the node agent: device API first (answering 503 until registered), then registration. */
export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  const log = options.log;
  const cp = new ControlPlane(options.server, options.nodeKey);
  let stopping = false;
  const stateFile =
    options.stateFile === null
      ? null
      : new StateFile(options.stateFile ?? defaultStateFile(options.nodeKey), options.nodeKey, log);
  // Throws StateFileError (the caller reports it) before anything listens.
  const saved = stateFile?.open() ?? { registration: null, leases: { leases: [], parked: [] } };
  let registrationId = saved.registration;
  if (stateFile !== null)
    log.info({ state_file: stateFile.path }, "the agent keeps its leases in this state file across restarts");

  /**
   * Releases on the control plane. An unreachable control plane is retried in the background
   * until the lease's deadline (after which the pool has expired it anyway), so an app's
   * /release never fails because of the network between this host and the pool.
   */
  const releaseOnControlPlane = async (lease: LocalLease, failed: boolean): Promise<void> => {
    const appKey = lease.appKey;
    if (appKey === null) {
      log.warn(
        { lease: lease.leaseId },
        "cannot release the lease on the pool: its app key did not survive the agent's restart; the pool expires it at its deadline",
      );
      return;
    }
    const attempt = () => cp.release(appKey, lease.leaseId, failed);
    try {
      await attempt();
      return;
    } catch (error) {
      if (error instanceof ControlPlaneRefusal) {
        log.warn(
          { lease: lease.leaseId, code: error.problem.code },
          `the control plane refused to release the lease: ${error.problem.detail}`,
        );
        return;
      }
      log.warn(
        { lease: lease.leaseId, err: error instanceof Error ? error.message : String(error) },
        "releasing the lease failed; retrying in the background until its deadline",
      );
    }
    void (async () => {
      for (
        let wait = 1000;
        !stopping && Date.now() < lease.deadlineAt;
        wait = Math.min(wait * 2, RELEASE_RETRY_MAX_MS)
      ) {
        await sleep(Math.min(wait, Math.max(0, lease.deadlineAt - Date.now())));
        try {
          await attempt();
          log.info({ lease: lease.leaseId }, "released the lease after retrying");
          return;
        } catch (error) {
          if (!(error instanceof ControlPlaneDown)) return;
        }
      }
      log.warn(
        { lease: lease.leaseId },
        "gave up releasing the lease: the pool expires it at its deadline and charges its full reservation",
      );
    })();
  };

  const graceMs = options.graceMs ?? 5_000;
  let leases: LocalLeases | null = null;
  // Every change is on disk before the device API answers, so a crash right after loses nothing.
  const persist = () => {
    if (stateFile !== null && leases !== null) stateFile.save(registrationId, leases.snapshot());
  };
  leases = new LocalLeases({
    graceMs,
    releaseOnControlPlane,
    log,
    onChange: persist,
    ...(options.watchIntervalMs !== undefined ? { watchIntervalMs: options.watchIntervalMs } : {}),
  });
  const local = leases;
  if (saved.leases.leases.length > 0 || saved.leases.parked.length > 0) {
    for (const l of saved.leases.leases) {
      const late = l.deadlineAt <= Date.now();
      log.warn(
        {
          lease: l.leaseId,
          app: l.app,
          pids: [...l.pids.keys()],
          deadline: new Date(l.deadlineAt).toISOString(),
          state_file: stateFile?.path,
        },
        late
          ? "resuming a lease of the agent's previous run: its deadline passed while the agent was down, so its processes are stopped now"
          : "resuming a lease of the agent's previous run: its processes are stopped at its deadline",
      );
    }
    for (const p of saved.leases.parked)
      log.info(
        { device: p.device, app: p.app, pids: p.pids.map((r) => r.pid) },
        "resuming idle workers of the agent's previous run",
      );
  }
  local.restore(saved.leases);
  const restored = saved.leases.leases.length > 0;
  let registration: Registration | null = null;
  const readiness = (): Readiness =>
    registration === null
      ? { ready: false, whyNotReady: "the agent is starting", nodeName: null }
      : { ready: registration.ready, whyNotReady: registration.whyNotReady, nodeName: registration.nodeName };
  const api = buildDeviceApi({
    cp,
    leases: local,
    readiness,
    log,
    defaultAppKey: options.defaultAppKey ?? null,
    pingIntervalMs: options.pingIntervalMs ?? 5_000,
    devices: options.devices,
    pidCheck: options.pidCheck ?? "strict",
  });

  try {
    await api.app.listen({ host: options.host ?? "127.0.0.1", port: options.port ?? 7071 });
  } catch (error) {
    local.close();
    stateFile?.close();
    throw error;
  }
  const addr = api.app.server.address() as AddressInfo;
  const url = `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`;

  /**
   * After the node was lost and registered again, or after a restart that resumed leases: the
   * pool may have ended some of them meanwhile (their GPU may be someone else's), so their
   * processes must stop.
   */
  const reconcile = async (again: boolean): Promise<void> => {
    if (!again && !restored) return;
    for (const lease of local.leases()) {
      if (lease.appKey === null) continue;
      try {
        const current = await cp.lease(lease.appKey, lease.leaseId);
        if (current.status !== "active")
          await local.endedByControlPlane(
            lease.leaseId,
            `the control plane ended it (${current.status}) while ${again ? "this node was lost" : "the agent was down"}`,
          );
      } catch (error) {
        if (error instanceof ControlPlaneRefusal && error.problem.status === 404)
          await local.endedByControlPlane(lease.leaseId, "the control plane no longer knows it");
      }
    }
  };
  registration = new Registration({
    cp,
    devices: options.devices,
    agentUrl: url,
    log,
    onRegistered: reconcile,
    registration: registrationId,
    onRegistration: (id) => {
      registrationId = id;
      persist();
    },
  });
  registration.start();

  let closed: Promise<void> | null = null;
  return {
    url,
    ready: () => registration?.ready ?? false,
    close: () =>
      (closed ??= (async () => {
        stopping = true;
        await api.queues.closeAll("the agent is shutting down");
        await registration?.stop();
        await api.app.close();
        local.close();
        persist();
        stateFile?.close();
        const until =
          stateFile !== null
            ? `the next start of this agent (state file ${stateFile.path}) stops them at the deadline, or at once if it has passed`
            : "they will NOT be stopped at the deadline (no state file); the pool expires the lease at its deadline (or fails it when the node is lost)";
        for (const lease of local.leases()) {
          log.warn(
            {
              lease: lease.leaseId,
              app: lease.app,
              pids: [...lease.pids.keys()],
              deadline: new Date(lease.deadlineAt).toISOString(),
            },
            `leaving an active lease as it is: its processes keep running; ${until}`,
          );
        }
        for (const p of local.parkedWorkers()) {
          log.warn(
            { device: p.device, app: p.app, pids: p.pids },
            "leaving idle workers of an earlier call running on the device",
          );
        }
      })()),
  };
}
