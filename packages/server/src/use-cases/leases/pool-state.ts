import { Pool, PriorityScheduler, identityKey, schedulerOptionsFor, waitLimitMs } from "@gpupool/core";
import type {
  Concurrency,
  DeviceSpec,
  Grant,
  Placement,
  Policy,
  PriorityRequest,
  QueuePlace,
  WaitReason,
} from "@gpupool/core";
import type { LeaseRecord } from "../../storage/store.js";

/** A grant made by the scheduler, with the request it was for. */
export interface Placed {
  readonly grant: Grant;
  readonly request: PriorityRequest;
}

function sameDevices(a: readonly DeviceSpec[], b: readonly DeviceSpec[]): boolean {
  return (
    a.length === b.length &&
    a.every((d, i) => d.node === b[i]?.node && d.index === b[i].index && d.uuid === b[i].uuid && d.slots === b[i].slots)
  );
}

/**
 * What the leading replica keeps in memory beside the store: the pool's slots (the configured
 * devices and those of every live agent node), the queue (core's priority scheduler), the live
 * leases as last written, and per-app counts and limits. It is rebuilt from the store whenever
 * it may disagree with it (see EngineRunner); between rebuilds it changes only inside the
 * engine's operations, together with the transaction that records the change. No I/O here.
 */
export class PoolState {
  private pool: Pool;
  private scheduler: PriorityScheduler;
  /** Queued and active leases as last written: the hot path reads these instead of the store. */
  readonly live = new Map<string, LeaseRecord>();
  private readonly appActive = new Map<string, number>();
  private readonly appLimits = new Map<string, number | null>();
  /** Agent nodes that are registered and heartbeating, with their devices (configured devices are not here). */
  private readonly agentNodes = new Map<string, readonly DeviceSpec[]>();
  /** Per-app active counts and limits, as the scheduler asks for them. */
  private readonly concurrency: Concurrency = {
    active: (id) => this.appActive.get(id) ?? 0,
    limit: (id) => this.appLimits.get(id) ?? null,
  };

  constructor(
    private readonly policy: Policy,
    private readonly configured: readonly DeviceSpec[],
  ) {
    this.pool = new Pool(configured);
    this.scheduler = new PriorityScheduler(schedulerOptionsFor(policy));
  }

  /** Forgets everything (before a rebuild, or when this replica stops leading); app limits are kept. */
  clear(): void {
    this.agentNodes.clear();
    this.pool = new Pool(this.configured);
    // What calls hold of their reservations is kept across a rebuild (it is about the apps, not this state).
    this.scheduler = new PriorityScheduler(schedulerOptionsFor(this.policy), this.scheduler.held);
    this.appActive.clear();
    this.live.clear();
  }

  get queueDepth(): number {
    return this.scheduler.size;
  }
  get busySlots(): number {
    return this.pool.busySlots;
  }
  get totalSlots(): number {
    return this.pool.totalSlots;
  }
  get activeLeases(): number {
    let n = 0;
    for (const v of this.appActive.values()) n += v;
    return n;
  }

  isConfiguredNode(name: string): boolean {
    return this.configured.some((d) => d.node === name);
  }
  liveNodes(): string[] {
    return [...this.agentNodes.keys()];
  }
  hasNode(name: string): boolean {
    return this.pool.hasNode(name);
  }
  nodeDevices(name: string): readonly DeviceSpec[] | undefined {
    return this.agentNodes.get(name);
  }

  /** Whether `devices` differ from what the node registered last (undefined: it is not in the pool). */
  devicesChanged(name: string, devices: readonly DeviceSpec[]): boolean | undefined {
    const before = this.agentNodes.get(name);
    return before === undefined ? undefined : !sameDevices(before, devices);
  }

  /** A live agent node's devices join the pool. */
  addNode(name: string, devices: readonly DeviceSpec[]): void {
    this.agentNodes.set(name, devices);
    for (const d of devices) this.pool.addDevice(d);
  }

  /**
   * The node's devices leave the pool; the ids of the leases that held them (their slots are gone
   * with the devices and no longer count for their apps: end those leases next).
   */
  removeNode(name: string): Set<string> {
    this.agentNodes.delete(name);
    const evicted = new Set(this.pool.removeNode(name));
    for (const id of evicted) this.countActive(this.live.get(id)?.appId ?? null, -1);
    return evicted;
  }

  setAppLimit(appId: string, limit: number | null): void {
    this.appLimits.set(appId, limit);
    this.scheduler.appLimitChanged(appId);
  }

  /**
   * The scheduler's request for a lease (its quota-left share: what the identity had left before
   * it; `giveUpAt`: when its queue timeout or `maxWaitMs` will time it out, for the forecast).
   */
  request(
    lease: Pick<
      LeaseRecord,
      "id" | "appId" | "identityKind" | "identityId" | "slots" | "tier" | "durationMs" | "seq" | "queuedAt" | "node"
    > & { readonly maxWaitMs?: number | null },
    quotaLeftShare: number,
  ): PriorityRequest {
    return {
      quotaLeftShare,
      leaseId: lease.id,
      appId: lease.appId,
      identity: identityKey({ kind: lease.identityKind, id: lease.identityId }),
      slots: lease.slots,
      priority: this.policy.tiers[lease.tier]?.priority ?? 0,
      durationMs: lease.durationMs,
      seq: lease.seq,
      queuedAt: lease.queuedAt,
      node: lease.node,
      giveUpAt: lease.queuedAt + waitLimitMs(this.policy, this.policy.tiers[lease.tier], lease.maxWaitMs),
    };
  }

  /**
   * Where a request arriving now would go, without changing anything (see core's
   * PriorityScheduler.trial): exact when nothing that waits could be placed, which `dispatch`
   * after every change guarantees.
   */
  placement(request: PriorityRequest, now: number): Placement {
    const node = request.node ?? null;
    if (node !== null && !this.pool.hasNode(node)) return { kind: "node_missing" };
    if (!this.pool.couldEverFit(request.slots, node ?? undefined)) {
      // Only agents' GPUs exist, and a direct request may not use them.
      return { kind: "never", onlyAgents: node === null && this.agentNodes.size > 0 && this.configured.length === 0 };
    }
    const queued = this.scheduler.size;
    const trial = this.scheduler.trial(request, this.pool, this.concurrency, now);
    return trial.kind === "now" ? { kind: "now" } : { kind: "wait", place: trial.place, queued };
  }

  /** A new request: granted at once when nothing waits and it fits (core's grantNow), else queued, then dispatched. */
  place(request: PriorityRequest, now: number): Placed[] {
    const atOnce = this.scheduler.grantNow(request, this.pool, this.concurrency, now);
    if (atOnce !== null) {
      this.countActive(request.appId, +1);
      return [{ grant: atOnce, request }];
    }
    this.scheduler.enqueue(request);
    return this.dispatch(now);
  }

  /** Queues a request that was admitted (by another replica, or before a restart), without dispatching. */
  enqueue(request: PriorityRequest): void {
    this.scheduler.enqueue(request);
  }

  /** Grants whatever can be granted now (after every change). */
  dispatch(now: number): Placed[] {
    const out: Placed[] = [];
    this.scheduler.dispatch(
      this.pool,
      this.concurrency,
      (grant, request) => {
        this.countActive(request.appId, +1);
        out.push({ grant, request });
      },
      now,
    );
    return out;
  }

  /** An active lease recovered from the store keeps its slots; false if its device is gone. */
  restoreActive(lease: LeaseRecord, now: number): boolean {
    if (lease.node === null || lease.deviceIndex === null || lease.slotIndexes === null) return false;
    const occupied = this.pool.occupy(lease.id, lease.node, lease.deviceIndex, lease.slotIndexes);
    if (occupied === null) return false;
    this.live.set(lease.id, lease);
    this.countActive(lease.appId, +1);
    this.scheduler.onGranted(
      lease.id,
      lease.appId,
      occupied,
      lease.deadline ?? now,
      ...(lease.grantedAt === null ? [] : [lease.grantedAt]),
    );
    return true;
  }

  /**
   * A lease's slots are free again (release, expiry, failure); idempotent. `endedAt`: when a
   * release or an expiry ended it — the scheduler learns what share of its reservation its app's
   * calls hold (expected ETAs); left out for a failure (a node lost says nothing of the call).
   */
  freeSlots(lease: Pick<LeaseRecord, "id" | "appId">, endedAt?: number): void {
    if (this.pool.release(lease.id)) this.countActive(lease.appId, -1);
    this.scheduler.onReleased(lease.id, ...(endedAt === undefined ? [] : [endedAt]));
  }

  /** A queued lease leaves the queue without a grant. */
  dequeue(leaseId: string): void {
    this.scheduler.remove(leaseId);
  }

  /** A lease the scheduler placed, forgotten again (another replica ended it first). */
  undoPlacement(lease: Pick<LeaseRecord, "id" | "appId">): void {
    this.freeSlots(lease);
    this.live.delete(lease.id);
  }

  /** A queued lease's place in line, why it waits, and the estimated wait (null if not queued here). */
  position(leaseId: string, now: number): QueuePlace | null {
    return this.scheduler.place(leaseId, now);
  }

  poolSnapshot(): ReturnType<Pool["snapshot"]> {
    return this.pool.snapshot();
  }

  queueSnapshot(): {
    lease: string;
    position: number;
    reason: WaitReason;
    identity: string;
    app: string | null;
    slots: number;
  }[] {
    return [...this.scheduler.waiting()].map((w) => ({
      lease: w.request.leaseId,
      position: w.position,
      reason: w.reason,
      identity: w.request.identity,
      app: w.request.appId,
      slots: w.request.slots,
    }));
  }

  private countActive(appId: string | null, delta: number): void {
    if (appId === null) return;
    this.appActive.set(appId, Math.max(0, (this.appActive.get(appId) ?? 0) + delta));
  }
}
