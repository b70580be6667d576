import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import type { PidReason, PidVerdict } from "./pid-ownership.js";
import { isAlive, probe, terminate } from "./processes.js";
import type { ProcessRef } from "./processes.js";

export interface GrantedDevice {
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
}

/** A lease the control plane granted on this node, as the device API knows it. */
export interface LocalLease {
  readonly leaseId: string;
  /** The app's id in the pool, for logs (the key itself is never logged). */
  readonly app: string | null;
  /**
   * Kept to release the lease on the app's behalf (early exit, /release). Null only for a lease
   * reloaded from a state file whose sealed key could not be opened, until its app calls again.
   */
  appKey: string | null;
  readonly appKeyHash: Buffer;
  readonly device: GrantedDevice;
  /** Local clock: grant received + the lease's duration (so host clock skew does not matter). */
  readonly deadlineAt: number;
  /**
   * Set for `spaces` clients (from cgroupPath + taskId): their worker process outlives a call
   * and is reused by the next call of the same function on the same GPU (`idle: true`).
   */
  readonly reuseKey: string | null;
  /** The cgroupPath /schedule carried (the `spaces` client's own cgroup): allowed pids must be in it. */
  readonly cgroupPath: string | null;
  /** The uid of the process that asked for the lease, when the agent could tell (see caller.ts). */
  readonly scheduleUid: number | null;
  readonly pids: Map<number, ProcessRef>;
  /** A pid was allowed (or a reused worker inherited); release answers 204 otherwise. */
  used: boolean;
}

export type AllowOutcome =
  | { readonly kind: "allowed"; readonly lease: LocalLease }
  | { readonly kind: "unknown" }
  | { readonly kind: "ended"; readonly why: string }
  | { readonly kind: "no_such_process" }
  | { readonly kind: "not_owned"; readonly reason: PidReason; readonly detail: string }
  | { readonly kind: "forbidden" };

export type ReleaseOutcome =
  | { readonly kind: "released"; readonly lease: LocalLease }
  | { readonly kind: "unknown" }
  | { readonly kind: "ended"; readonly why: string };

export interface LocalLeasesOptions {
  /** SIGTERM → SIGKILL delay at a deadline (and when evicting an idle worker). */
  readonly graceMs: number;
  /** How often allowed pids are probed for an early exit. */
  readonly watchIntervalMs?: number;
  /** Releases the lease on the control plane (retrying as needed). Must not throw. */
  readonly releaseOnControlPlane: (lease: LocalLease, failed: boolean) => Promise<void>;
  readonly log: Logger;
  readonly now?: () => number;
  /** Called (synchronously) after every change worth keeping across a restart: the agent saves its state. */
  readonly onChange?: () => void;
}

/** Workers of a finished `spaces` call that stay alive on a device, waiting to be reused. */
interface ParkedWorkers {
  readonly reuseKey: string;
  readonly app: string | null;
  readonly pids: ProcessRef[];
}

export interface ParkedSnapshot extends ParkedWorkers {
  readonly device: string;
}

/** Everything the agent must not forget across a restart (state-file.ts writes it). */
export interface LeasesSnapshot {
  readonly leases: readonly (LocalLease & { readonly tokenHash: string })[];
  readonly parked: readonly ParkedSnapshot[];
}

const MAX_TIMER_MS = 2_147_483_647;
/** SIGTERM → SIGKILL delay for idle workers stopped to hand their device over (at most --grace-s). */
const EVICTION_GRACE_MS = 1_000;
/** How long a grant waits for evicted idle workers to vanish after SIGKILL. */
const EVICTION_KILL_WAIT_MS = 500;
const MAX_TOMBSTONES = 10_000;

export function hashKey(secret: string): Buffer {
  return createHash("sha256").update(secret).digest();
}

/**
 * The allow tokens this agent handed out and what each may do. Tokens are looked up by their
 * SHA-256 (a lookup by hash leaks nothing useful through timing), and the app key of a request
 * is compared with the lease's in constant time.
 */
export class LocalLeases {
  private readonly byToken = new Map<string, LocalLease>();
  private readonly deadlines = new Map<LocalLease, NodeJS.Timeout>();
  /** Why a token no longer works (released, expired, process exited), for a 404 a person can act on. */
  private readonly tombstones = new Map<string, string>();
  private readonly parked = new Map<string, ParkedWorkers[]>();
  private readonly watcher: NodeJS.Timeout;
  private readonly now: () => number;

  constructor(private readonly options: LocalLeasesOptions) {
    this.now = options.now ?? Date.now;
    this.watcher = setInterval(() => this.watch(), options.watchIntervalMs ?? 500);
    this.watcher.unref();
  }

  get size(): number {
    return this.byToken.size;
  }

  /**
   * Records a grant and returns its allow token. Idle workers parked on the device by another
   * function or app are stopped first (they hold GPU memory); the same function's workers are
   * handed to the new lease, and the answer says `idle: true` so the client reuses them.
   */
  async grant(g: {
    leaseId: string;
    app: string | null;
    appKey: string;
    device: GrantedDevice;
    durationMs: number;
    reuseKey: string | null;
    cgroupPath?: string | null;
    scheduleUid?: number | null;
  }): Promise<{ token: string; lease: LocalLease; idle: boolean }> {
    // The lease's time runs on the pool from its grant: the deadline counts from when the grant
    // arrived here, not from when the idle workers below are gone.
    const receivedAt = this.now();
    const here = this.parked.get(g.device.uuid) ?? [];
    this.parked.delete(g.device.uuid);
    const mine = g.reuseKey === null ? [] : here.filter((p) => p.reuseKey === g.reuseKey);
    const others = here.filter((p) => !mine.includes(p));
    const evicted = others.flatMap((p) => p.pids).filter(isAlive);
    if (evicted.length > 0) {
      // The new lease is charged while they go, so they get a short grace: they are idle (parked
      // after a finished call), with no work to save.
      this.options.log.info(
        { device: g.device.uuid, pids: evicted.map((r) => r.pid), lease: g.leaseId },
        "stopping idle workers left on the device by an earlier call, before handing it over",
      );
      const r = await terminate(evicted, Math.min(this.options.graceMs, EVICTION_GRACE_MS), EVICTION_KILL_WAIT_MS);
      if (r.survivors.length > 0)
        this.options.log.error(
          { pids: r.survivors, device: g.device.uuid },
          "idle workers survived SIGKILL; the device may be short of memory",
        );
    }
    const inherited = mine.flatMap((p) => p.pids).filter(isAlive);
    const token = randomBytes(24).toString("base64url");
    const lease: LocalLease = {
      leaseId: g.leaseId,
      app: g.app,
      appKey: g.appKey,
      appKeyHash: hashKey(g.appKey),
      device: g.device,
      deadlineAt: receivedAt + g.durationMs,
      reuseKey: g.reuseKey,
      cgroupPath: g.cgroupPath ?? null,
      scheduleUid: g.scheduleUid ?? null,
      pids: new Map(inherited.map((r) => [r.pid, r])),
      used: inherited.length > 0,
    };
    this.byToken.set(hashKey(token).toString("hex"), lease);
    this.arm(lease);
    this.changed();
    return { token, lease, idle: inherited.length > 0 };
  }

  /**
   * Gives the lease's deadline power over `pid`, once `verify` (the device API's ownership check,
   * pid-ownership.ts) agrees that the process is the caller's.
   */
  allow(token: string, appKey: string, pid: number, verify?: (lease: LocalLease) => PidVerdict): AllowOutcome {
    const found = this.find(token, appKey);
    if (found.kind !== "found") return found;
    const p = probe(pid);
    if (p.kind === "missing") return { kind: "no_such_process" };
    const verdict = verify?.(found.lease) ?? { ok: true };
    // The check read /proc/<pid>/…: still the process probed above (not a reused pid)?
    if (!isAlive(p.kind === "alive" ? p.ref : { pid, startTime: null })) return { kind: "no_such_process" };
    if (!verdict.ok) return { kind: "not_owned", reason: verdict.reason, detail: verdict.detail };
    if (p.kind === "forbidden") return { kind: "forbidden" };
    found.lease.pids.set(pid, p.ref);
    found.lease.used = true;
    found.lease.appKey ??= appKey;
    // Saved before the answer: once the app hears 200, a restart does not lose this pid.
    this.changed();
    return { kind: "allowed", lease: found.lease };
  }

  /**
   * Ends the lease here and on the control plane. The pids are then: parked for reuse (a
   * `spaces` worker after a successful call), stopped (a `spaces` worker after a failed call:
   * its client drops it, and it would hold GPU memory forever), or forgotten (any other caller,
   * such as the TypeScript SDK, whose allowed pid is the app itself).
   */
  async release(token: string, appKey: string, failed: boolean): Promise<ReleaseOutcome> {
    const found = this.find(token, appKey);
    if (found.kind !== "found") return found;
    const lease = found.lease;
    lease.appKey ??= appKey;
    if (this.now() >= lease.deadlineAt) {
      // The release and the deadline raced (an app that gives up at its deadline releases at that
      // very moment): the deadline wins, so allowed processes are stopped, never forgotten.
      void this.expire(lease);
      return this.find(token, appKey) as ReleaseOutcome;
    }
    this.forget(lease, failed ? "it was released (failed)" : "it was released");
    const live = [...lease.pids.values()].filter(isAlive);
    if (lease.reuseKey !== null && live.length > 0) {
      if (failed) {
        void terminate(live, this.options.graceMs).then((r) =>
          this.options.log.info(
            { lease: lease.leaseId, pids: [...r.terminated, ...r.killed] },
            "stopped the worker of a failed call (its client does not reuse it)",
          ),
        );
      } else {
        const list = this.parked.get(lease.device.uuid) ?? [];
        list.push({ reuseKey: lease.reuseKey, app: lease.app, pids: live });
        this.parked.set(lease.device.uuid, list);
      }
    }
    this.changed();
    await this.options.releaseOnControlPlane(lease, failed);
    return { kind: "released", lease };
  }

  /** The control plane ended a lease this agent still held (the node was lost): stop its processes. */
  async endedByControlPlane(leaseId: string, why: string): Promise<void> {
    const lease = [...this.byToken.values()].find((l) => l.leaseId === leaseId);
    if (lease === undefined) return;
    this.forget(lease, why);
    this.changed();
    const pids = [...lease.pids.values()];
    this.options.log.warn(
      { lease: leaseId, pids: pids.map((r) => r.pid) },
      `lease ended by the control plane (${why}); stopping its processes`,
    );
    await terminate(pids, this.options.graceMs);
  }

  leases(): LocalLease[] {
    return [...this.byToken.values()];
  }

  snapshot(): LeasesSnapshot {
    return {
      leases: [...this.byToken.entries()].map(([tokenHash, lease]) => ({ ...lease, tokenHash })),
      parked: [...this.parked.entries()].flatMap(([device, list]) => list.map((p) => ({ device, ...p }))),
    };
  }

  /**
   * Takes over the leases of an earlier run of the agent (state-file.ts): their deadlines are
   * armed again, and one already past is enforced at once. A lease whose processes all exited
   * meanwhile is released by the next early-exit probe.
   */
  restore(snapshot: LeasesSnapshot): void {
    for (const { tokenHash, ...lease } of snapshot.leases) {
      const l: LocalLease = { ...lease };
      this.byToken.set(tokenHash, l);
      this.arm(l);
    }
    for (const p of snapshot.parked) {
      const list = this.parked.get(p.device) ?? [];
      list.push({ reuseKey: p.reuseKey, app: p.app, pids: [...p.pids] });
      this.parked.set(p.device, list);
    }
    this.changed();
  }

  parkedWorkers(): { device: string; app: string | null; pids: number[] }[] {
    return [...this.parked.entries()].flatMap(([device, list]) =>
      list.map((p) => ({ device, app: p.app, pids: p.pids.map((r) => r.pid) })),
    );
  }

  /** Stops timers; processes are left as they are (the caller logs what it leaves). */
  close(): void {
    clearInterval(this.watcher);
    for (const timer of this.deadlines.values()) clearTimeout(timer);
    this.deadlines.clear();
  }

  private find(
    token: string,
    appKey: string,
  ): { kind: "found"; lease: LocalLease } | { kind: "unknown" } | { kind: "ended"; why: string } {
    const key = hashKey(token).toString("hex");
    const lease = this.byToken.get(key);
    if (lease === undefined) {
      const why = this.tombstones.get(key);
      return why === undefined ? { kind: "unknown" } : { kind: "ended", why };
    }
    // A token only works with the app key it was granted to (both are hashes: equal length).
    if (!timingSafeEqual(lease.appKeyHash, hashKey(appKey))) return { kind: "unknown" };
    return { kind: "found", lease };
  }

  private forget(lease: LocalLease, why: string): void {
    for (const [key, l] of this.byToken) {
      if (l !== lease) continue;
      this.byToken.delete(key);
      this.tombstones.set(key, `lease ${lease.leaseId} has ended: ${why}`);
      if (this.tombstones.size > MAX_TOMBSTONES) {
        const oldest = this.tombstones.keys().next().value;
        if (oldest !== undefined) this.tombstones.delete(oldest);
      }
    }
    clearTimeout(this.deadlines.get(lease));
    this.deadlines.delete(lease);
  }

  private arm(lease: LocalLease): void {
    const timer = setTimeout(
      () => void this.expire(lease),
      Math.min(Math.max(0, lease.deadlineAt - this.now()), MAX_TIMER_MS),
    );
    this.deadlines.set(lease, timer);
  }

  private changed(): void {
    this.options.onChange?.();
  }

  /** The deadline: SIGTERM, then SIGKILL after the grace. The control plane expires the lease itself. */
  private async expire(lease: LocalLease): Promise<void> {
    this.forget(
      lease,
      `it reached its deadline (${new Date(lease.deadlineAt).toISOString()}) and its processes were stopped`,
    );
    this.changed();
    const pids = [...lease.pids.values()];
    if (pids.length === 0) {
      this.options.log.info({ lease: lease.leaseId }, "lease reached its deadline with no process allowed on it");
      return;
    }
    this.options.log.warn(
      { lease: lease.leaseId, app: lease.app, pids: pids.map((r) => r.pid), grace_ms: this.options.graceMs },
      "lease reached its deadline: SIGTERM to its processes, SIGKILL after the grace",
    );
    const r = await terminate(pids, this.options.graceMs);
    this.options.log.warn(
      { lease: lease.leaseId, terminated: r.terminated, killed: r.killed, survivors: r.survivors },
      r.survivors.length > 0 ? "processes survived SIGKILL at the deadline" : "processes stopped at the deadline",
    );
  }

  /** Early exit: a lease whose allowed processes are all gone is released, so only held time is charged. */
  private watch(): void {
    let changed = false;
    for (const lease of [...this.byToken.values()]) {
      if (lease.pids.size === 0) continue;
      for (const [pid, ref] of lease.pids) {
        if (isAlive(ref)) continue;
        lease.pids.delete(pid);
        changed = true;
      }
      if (lease.pids.size > 0) continue;
      this.forget(
        lease,
        "every process allowed on it exited before it was released, so the agent released it (failed)",
      );
      this.options.log.warn(
        { lease: lease.leaseId, app: lease.app },
        "every process allowed on the lease exited before releasing it: releasing it (failed) so only the time held is charged",
      );
      void this.options.releaseOnControlPlane(lease, true);
    }
    for (const [device, list] of this.parked) {
      const kept = list.map((p) => ({ ...p, pids: p.pids.filter(isAlive) })).filter((p) => p.pids.length > 0);
      if (kept.reduce((n, p) => n + p.pids.length, 0) !== list.reduce((n, p) => n + p.pids.length, 0)) changed = true;
      if (kept.length === 0) this.parked.delete(device);
      else this.parked.set(device, kept);
    }
    if (changed) this.changed();
  }
}
