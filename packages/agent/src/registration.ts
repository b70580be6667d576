import type { Logger } from "pino";
import { ControlPlaneDown, ControlPlaneRefusal } from "./control-plane.js";
import type { ControlPlane } from "./control-plane.js";
import type { NodeDevice } from "./devices.js";

const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;

export interface RegistrationOptions {
  readonly cp: ControlPlane;
  readonly devices: readonly NodeDevice[];
  readonly agentUrl: string;
  readonly log: Logger;
  /**
   * Called after each registration (`again`: not the first of this run, i.e. after the pool lost
   * the node), to reconcile leases the pool may have ended meanwhile.
   */
  readonly onRegistered?: (again: boolean) => Promise<void>;
  /** The registration this agent held before it restarted (its state file), if any. */
  readonly registration?: string | null;
  /** Called with each new registration, to keep it across a restart. */
  readonly onRegistration?: (registration: string | null) => void;
  readonly now?: () => number;
}

/**
 * Registers the node's devices, then heartbeats at the interval the control plane asks for.
 * Never gives up: an unreachable control plane is retried with backoff (1 s doubling to 30 s),
 * and a control plane that forgot the node (`node_not_registered`) gets the devices again.
 */
export class Registration {
  private registeredOnce = false;
  private registered = false;
  private lastOkAt = 0;
  private intervalMs = 5_000;
  private timeoutMs = 20_000;
  private node: { id: string; name: string } | null = null;
  private registration: string | null;
  private lastProblem = "the agent has not registered with the control plane yet";
  private stopped = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private readonly now: () => number;

  constructor(private readonly options: RegistrationOptions) {
    this.now = options.now ?? Date.now;
    this.registration = options.registration ?? null;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
  }

  /** Registered, and the last heartbeat is recent enough that the control plane still counts the node. */
  get ready(): boolean {
    return this.registered && this.now() - this.lastOkAt < this.timeoutMs;
  }

  get nodeName(): string | null {
    return this.node?.name ?? null;
  }

  /** Why the node cannot take work now, for a person (503 details, /healthz). */
  get whyNotReady(): string {
    if (this.registered && !this.ready)
      return `no heartbeat reached the control plane at ${this.options.cp.url} for ${Math.round((this.now() - this.lastOkAt) / 1000)}s (${this.lastProblem})`;
    return this.lastProblem;
  }

  private async run(): Promise<void> {
    let backoffMs = FIRST_BACKOFF_MS;
    let failures = 0;
    while (!this.stopped) {
      try {
        if (!this.registered) {
          const r = await this.options.cp.register(this.options.devices, this.options.agentUrl, this.registration);
          this.accept(r.node, r.heartbeatIntervalS, r.heartbeatTimeoutS);
          this.registered = true;
          this.registration = r.registration;
          this.options.onRegistration?.(r.registration);
          this.options.log.info(
            { node: r.node.name, devices: this.options.devices.length, heartbeat_interval_s: r.heartbeatIntervalS },
            failures > 0
              ? `registered with the control plane after ${failures} failed attempts`
              : "registered with the control plane",
          );
          failures = 0;
          backoffMs = FIRST_BACKOFF_MS;
          const again = this.registeredOnce;
          this.registeredOnce = true;
          await this.options
            .onRegistered?.(again)
            .catch((error: unknown) =>
              this.options.log.error({ err: error }, "reconciling leases with the control plane failed"),
            );
        } else {
          await this.sleep(this.intervalMs);
          if (this.stopped) return;
          const r = await this.options.cp.heartbeat(this.registration);
          this.accept(r.node, r.heartbeatIntervalS, r.heartbeatTimeoutS);
          if (failures > 0) this.options.log.info({ failures }, "heartbeats reach the control plane again");
          failures = 0;
          backoffMs = FIRST_BACKOFF_MS;
        }
      } catch (error) {
        failures++;
        if (error instanceof ControlPlaneRefusal && error.problem.code === "node_not_registered") {
          failures = 0;
          this.registered = false;
          if (error.problem["reason"] === "replaced") {
            // Another agent registered this node with the same key: its GPUs are not this host's
            // to hand out. Registering again is refused while that agent heartbeats.
            this.lastProblem = `another agent registered this node with the same node key: ${error.problem.detail}`;
            this.options.log.error(
              { detail: error.problem.detail },
              "ANOTHER AGENT TOOK OVER THIS NODE (same node key): this agent takes no work until it can register the node again; give each host a node key of its own",
            );
          } else {
            this.lastProblem = "the control plane lost this node (missed heartbeats); registering again";
            this.options.log.warn(
              { detail: error.problem.detail },
              "the control plane no longer counts this node as registered: registering its devices again",
            );
          }
          continue;
        }
        this.lastProblem = this.describe(error);
        // The first failure and every tenth are logged, so an outage is visible without flooding the log.
        if (failures === 1 || failures % 10 === 0) {
          const what = this.registered ? "heartbeat" : "registration";
          const level = error instanceof ControlPlaneRefusal ? "error" : "warn";
          this.options.log[level](
            { failures, retry_in_s: backoffMs / 1000 },
            `${what} failed: ${this.lastProblem}; retrying (the device API answers 503 until the node is registered)`,
          );
        }
        if (!this.registered) {
          await this.sleep(backoffMs);
          backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
        }
      }
    }
  }

  private accept(node: { id: string; name: string }, intervalS: number, timeoutS: number): void {
    this.node = node;
    this.lastOkAt = this.now();
    this.intervalMs = Math.max(200, intervalS * 1000);
    this.timeoutMs = Math.max(this.intervalMs, timeoutS * 1000);
    this.lastProblem = "registered";
  }

  private describe(error: unknown): string {
    if (error instanceof ControlPlaneRefusal) {
      const hint =
        error.problem.status === 401
          ? " (is --node-key / GPUPOOL_NODE_KEY a node key of this pool? Create one with POST /v1/admin/nodes)"
          : "";
      return `the control plane refused: [${error.problem.code}] ${error.problem.detail}${hint}`;
    }
    if (error instanceof ControlPlaneDown) return error.message;
    return error instanceof Error ? error.message : String(error);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
