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

  /**
   * Releases on the control plane. An unreachable control plane is retried in the background
   * until the lease's deadline (after which the pool has expired it anyway), so an app's
   * /release never fails because of the network between this host and the pool.
   */
  const releaseOnControlPlane = async (lease: LocalLease, failed: boolean): Promise<void> => {
    const attempt = () => cp.release(lease.appKey, lease.leaseId, failed);
    try {
      await attempt();
      return;
    } catch (error) {
      if (error instanceof ControlPlaneRefusal) {
        log.warn({ lease: lease.leaseId, code: error.problem.code }, `the control plane refused to release the lease: ${error.problem.detail}`);
        return;
      }
      log.warn({ lease: lease.leaseId, err: error instanceof Error ? error.message : String(error) }, "releasing the lease failed; retrying in the background until its deadline");
    }
    void (async () => {
      for (let wait = 1000; !stopping && Date.now() < lease.deadlineAt; wait = Math.min(wait * 2, RELEASE_RETRY_MAX_MS)) {
        await sleep(Math.min(wait, Math.max(0, lease.deadlineAt - Date.now())));
        try {
          await attempt();
          log.info({ lease: lease.leaseId }, "released the lease after retrying");
          return;
        } catch (error) {
          if (!(error instanceof ControlPlaneDown)) return;
        }
      }
      log.warn({ lease: lease.leaseId }, "gave up releasing the lease: the pool expires it at its deadline and charges its full reservation");
    })();
  };

  const graceMs = options.graceMs ?? 5_000;
  const leases = new LocalLeases({ graceMs, releaseOnControlPlane, log, ...(options.watchIntervalMs !== undefined ? { watchIntervalMs: options.watchIntervalMs } : {}) });
  let registration: Registration | null = null;
  const readiness = (): Readiness =>
    registration === null
      ? { ready: false, whyNotReady: "the agent is starting", nodeName: null }
      : { ready: registration.ready, whyNotReady: registration.whyNotReady, nodeName: registration.nodeName };
  const api = buildDeviceApi({
    cp,
    leases,
    readiness,
    log,
    defaultAppKey: options.defaultAppKey ?? null,
    pingIntervalMs: options.pingIntervalMs ?? 5_000,
    deviceCount: options.devices.length,
    pidCheck: options.pidCheck ?? "strict",
  });

  try {
    await api.app.listen({ host: options.host ?? "127.0.0.1", port: options.port ?? 7071 });
  } catch (error) {
    leases.close();
    throw error;
  }
  const addr = api.app.server.address() as AddressInfo;
  const url = `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`;

  /** After the node was lost and registered again: the pool failed its leases, so their processes must stop. */
  const reconcile = async (): Promise<void> => {
    for (const lease of leases.leases()) {
      try {
        const current = await cp.lease(lease.appKey, lease.leaseId);
        if (current.status !== "active") await leases.endedByControlPlane(lease.leaseId, `the control plane ended it (${current.status}) while this node was lost`);
      } catch (error) {
        if (error instanceof ControlPlaneRefusal && error.problem.status === 404) await leases.endedByControlPlane(lease.leaseId, "the control plane no longer knows it");
      }
    }
  };
  registration = new Registration({ cp, devices: options.devices, agentUrl: url, log, onReregistered: reconcile });
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
        leases.close();
        for (const lease of leases.leases()) {
          log.warn(
            { lease: lease.leaseId, app: lease.app, pids: [...lease.pids.keys()], deadline: new Date(lease.deadlineAt).toISOString() },
            "leaving an active lease as it is: its processes keep running and will NOT be stopped at the deadline by this agent; the pool expires the lease at its deadline (or fails it when the node is lost)",
          );
        }
        for (const p of leases.parkedWorkers()) {
          log.warn({ device: p.device, app: p.app, pids: p.pids }, "leaving idle workers of an earlier call running on the device");
        }
      })()),
  };
}
