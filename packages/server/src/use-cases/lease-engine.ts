import {
  DomainError,
  EMPTY_LEDGER,
  PriorityScheduler,
  Pool,
  fail,
  identityKey,
  problem,
  quotaView,
  rollWindow,
  schedulerOptionsFor,
  tierOf,
} from "@gpupool/core";
import type { DeviceSpec, Grant, Identity, LedgerState, Policy, PriorityRequest, Problem, QueuePlace, SizePolicy, Via, WaitReason } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { LeaseEvents } from "../events.js";
import type { Metrics } from "../metrics.js";
import { newOrderedId } from "../secrets.js";
import { Serial } from "../serial.js";
import { LeadershipLostError } from "../storage/store.js";
import type { Coordination, LeaseRecord, NewLease, NodeRecord, Store, Tx } from "../storage/store.js";
import { LeaseFollower } from "./lease-follower.js";
import { EVENTS_CHANNEL, LEADER_CHANNEL, parseMessage } from "./replica-messages.js";
import type { LeaderMessage, LeaseBroadcast } from "./replica-messages.js";
import { chargedIdentity } from "./charged-identity.js";
import type { IdentityQuota } from "./quota.js";
import { heldUntil, noCapacityProblem, nodeLostProblem, queueTimeoutProblem, queueTimeoutProblemFrom } from "./lease-problems.js";
import { LeaseTimers } from "./lease-timers.js";
import { nodeInUse } from "./node-registration.js";
import { admitted, endActive, endQueued, grant } from "./lease-transitions.js";
import type { Transition } from "./lease-transitions.js";
import { readQuota, reserveWithRetryTime } from "./quota.js";

export interface AdmitInput {
  readonly appId: string | null;
  readonly charged: { kind: "user" | "ip" | "app"; id: string };
  readonly via: Via;
  readonly durationMs: number;
  readonly size: SizePolicy;
  readonly queue: boolean;
  /** Only devices of this node may be granted (a request through the node's agent); null: any. */
  readonly node: string | null;
}

export type AdmitResult =
  | { readonly kind: "granted"; readonly lease: LeaseRecord; readonly quota: IdentityQuota }
  | { readonly kind: "queued"; readonly lease: LeaseRecord; readonly position: number; readonly reason: WaitReason; readonly etaMs: number | null; readonly quota: IdentityQuota }
  | { readonly kind: "denied"; readonly problem: Problem; readonly retryAfterS: number | null };

const LIVE = new Set(["queued", "active"]);
/** Node heartbeat timers share the lease timers, under keys lease ids can never take. */
const NODE_TIMER = "node:";

function sameDevices(a: readonly DeviceSpec[], b: readonly DeviceSpec[]): boolean {
  return a.length === b.length && a.every((d, i) => d.node === b[i]?.node && d.index === b[i].index && d.uuid === b[i].uuid && d.slots === b[i].slots);
}

/** The value a staging function resolves to. */
type Staged<F extends (...args: never[]) => Promise<{ value: unknown }>> = Awaited<ReturnType<F>>["value"];

/** A node's registration: when it took effect (its mark), or why another agent keeps the node. */
export type NodeRegistration = { readonly kind: "registered"; readonly at: number } | { readonly kind: "refused"; readonly problem: Problem };

/**
 * The lease use cases: admit, grant, release, cancel, expire, queue timeout, and recovery.
 *
 * The ledger lives in the store and is read and written inside each use case's transaction.
 * Slot occupancy and the queue live in memory (core Pool and scheduler), rebuilt from the
 * store's live leases at start. Every use case runs under one Serial so the in-memory state and
 * the transaction that records it change together; if a transaction fails, the in-memory state
 * is rebuilt from the store rather than patched.
 */
export class LeaseEngine {
  private pool: Pool;
  private scheduler: PriorityScheduler;
  private readonly appActive = new Map<string, number>();
  private readonly appLimits = new Map<string, number | null>();
  private readonly timers: LeaseTimers;
  /** Queued and active leases as last written: the hot path reads these instead of the store. */
  private readonly live = new Map<string, LeaseRecord>();
  /** Last queue place sent to each watched lease, so a change is announced once. */
  private readonly announced = new Map<string, string>();
  private readonly serial = new Serial();
  /** Agent nodes that are registered and heartbeating, with their devices (config devices are not here). */
  private readonly nodes = new Map<string, readonly DeviceSpec[]>();
  /**
   * Whether this replica runs the scheduler. Always, on a store no other replica shares (SQLite);
   * on a shared one (PostgreSQL) only while it holds the leadership, otherwise `follower` serves.
   */
  private leading: boolean;
  private readonly follower: LeaseFollower;
  /** Queued leases watched from other replicas: their places are broadcast. */
  private readonly remoteWatched = new Set<string>();
  private readonly replica = newOrderedId("r", Date.now());
  private readonly unsubscribe: (() => Promise<void>)[] = [];
  /** Per-app active counts and limits, as the scheduler asks for them. */
  private readonly concurrency = { active: (id: string) => this.appActive.get(id) ?? 0, limit: (id: string) => this.appLimits.get(id) ?? null };
  private stopped = false;

  constructor(
    private readonly store: Store,
    /** Leader election, the fenced stager the leader writes through, and wake-ups between replicas. */
    private readonly coordination: Coordination,
    private readonly policy: Policy,
    private readonly devices: readonly DeviceSpec[],
    private readonly clock: Clock,
    private readonly events: LeaseEvents,
    private readonly metrics: Metrics | null,
    private readonly log: Logger,
    private readonly heartbeatTimeoutMs = 20_000,
  ) {
    this.pool = new Pool(devices);
    this.scheduler = new PriorityScheduler(schedulerOptionsFor(policy));
    this.timers = new LeaseTimers(clock, (key, kind) => (kind === "heartbeat" ? this.onNodeSilent(key.slice(NODE_TIMER.length)) : this.onTimer(key, kind)));
    this.leading = !coordination.shared;
    this.follower = new LeaseFollower(store, policy, clock, events, (m) => this.tellLeader(m), log);
  }

  /** True when this replica runs the scheduler (see `leading`). */
  get isLeader(): boolean {
    return this.leading;
  }

  /** The leader's transactions: fenced on a shared store, so a replica that lost the lead commits nothing. */
  private stage<T>(fn: (tx: Tx) => Promise<T>): Promise<{ value: T; committed: Promise<void> }> {
    return this.coordination.leaderStager.stage(fn);
  }

  /** Config devices plus every live agent node's devices. */
  private freshPool(): Pool {
    const pool = new Pool(this.devices);
    for (const devices of this.nodes.values()) for (const d of devices) pool.addDevice(d);
    return pool;
  }

  /** Whether `name` is a node of the pool's own configuration (not an agent's). */
  isConfiguredNode(name: string): boolean {
    return this.devices.some((d) => d.node === name);
  }

  /** Live agent nodes and when each was last heard from (for the pool view). */
  liveNodes(): string[] {
    return [...this.nodes.keys()];
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

  /** Per-app concurrency limits are kept in memory; the admin use cases call this on change. */
  setAppLimit(appId: string, limit: number | null): void {
    if (!this.leading) return void this.tellLeader({ op: "limit", app: appId, limit }).catch((err: unknown) => this.log.warn({ err }, "could not tell the leader about a limit"));
    this.appLimits.set(appId, limit);
    this.scheduler.appLimitChanged(appId);
  }

  /** A queued lease's place in line, why it waits, and the estimated wait (null if not queued). */
  position(leaseId: string): QueuePlace | null {
    return this.leading ? this.scheduler.place(leaseId, this.clock.now()) : this.follower.position(leaseId);
  }

  /** Someone here follows a queued lease's events (on a follower, its place comes from the leader). */
  watch(leaseId: string): void {
    if (!this.leading) this.follower.watch(leaseId);
  }

  /**
   * What a request would get now, without changing anything: granted if a slot fits it, its app
   * is under its limit and no hold for an aged head is in force (then backfill might still place
   * it, so this errs towards "queued"); otherwise its place in line and the estimated wait.
   */
  placement(request: { slots: number; appId: string | null; identity: string; priority: number; durationMs: number; quotaLeftShare: number }): { outcome: "granted" } | ({ outcome: "queued" } & QueuePlace) {
    const now = this.clock.now();
    const limit = request.appId === null ? null : (this.appLimits.get(request.appId) ?? null);
    const atLimit = request.appId !== null && limit !== null && (this.appActive.get(request.appId) ?? 0) >= limit;
    if (!atLimit && this.pool.fits(request.slots) && this.scheduler.hold() === null) return { outcome: "granted" };
    const preview = this.scheduler.preview({ ...request, leaseId: "(preview)", seq: Number.MAX_SAFE_INTEGER, queuedAt: now }, now);
    return { outcome: "queued", ...preview };
  }

  couldEverFit(slots: number): boolean {
    return this.pool.couldEverFit(slots);
  }

  poolSnapshot(): ReturnType<Pool["snapshot"]> {
    return this.pool.snapshot();
  }

  queueSnapshot(): { lease: string; position: number; reason: WaitReason; identity: string; app: string | null; slots: number }[] {
    return [...this.scheduler.waiting()].map((w) => ({
      lease: w.request.leaseId,
      position: w.position,
      reason: w.reason,
      identity: w.request.identity,
      app: w.request.appId,
      slots: w.request.slots,
    }));
  }

  /** Rebuilds memory from the store and settles whatever came due while the server was down. */
  async start(): Promise<void> {
    if (!this.coordination.shared) return this.serial.run(() => this.recover());
    const coordination = this.coordination;
    this.unsubscribe.push(
      await coordination.subscribe(EVENTS_CHANNEL, (payload) => {
        const b = parseMessage<LeaseBroadcast & { from?: string }>(payload, "type");
        if (b === null || b.from === this.replica) return;
        this.follower.onBroadcast(b).catch((err: unknown) => this.log.warn({ err }, "relaying a lease event failed"));
      }),
      await coordination.subscribe(
        LEADER_CHANNEL,
        (payload) => {
          const m = parseMessage<LeaderMessage>(payload, "op");
          if (m !== null && this.leading) this.onLeaderMessage(m);
        },
        // Work announced while the listening connection was down was missed: rebuild from the database.
        () => {
          if (!this.leading) return;
          this.log.warn("notifications resumed after a lost connection; re-reading the pool state");
          this.serial.run(() => this.recover()).catch((err: unknown) => this.log.error({ err }, "re-reading the pool state failed"));
        },
      ),
    );
    // The first replica to start leads at once; a later one serves as a follower while it waits.
    let leads!: () => void;
    const leading = new Promise<void>((resolve) => (leads = resolve));
    void this.campaign(leads);
    await Promise.race([leading, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  }

  /** Waits for the leadership, then takes over: rebuilds the scheduler from the database. `leads` is called each time it does. */
  private async campaign(leads: () => void): Promise<void> {
    const coordination = this.coordination;
    while (!this.stopped) {
      let lost!: (err: Error) => void;
      const lostOnce = new Promise<Error>((resolve) => (lost = resolve));
      try {
        await coordination.lead((err) => lost(err));
        if (this.stopped) return;
        await this.serial.run(() => this.recover());
        this.leading = true;
        leads();
        this.log.info({ replica: this.replica }, "this replica now leads the pool");
      } catch (err) {
        if (this.stopped) return;
        this.log.error({ err }, "taking the lead failed; trying again");
        await new Promise((resolve) => setTimeout(resolve, 1_000).unref());
        continue;
      }
      const why = await lostOnce;
      this.stepDown(why);
    }
  }

  private stepDown(why: Error): void {
    if (!this.leading) return;
    this.leading = false;
    this.timers.clearAll();
    this.pool = new Pool();
    this.scheduler = new PriorityScheduler(schedulerOptionsFor(this.policy));
    this.appActive.clear();
    this.live.clear();
    this.nodes.clear();
    this.remoteWatched.clear();
    if (!this.stopped) this.log.warn({ err: why, replica: this.replica }, "this replica lost the lead; another takes over");
  }

  stop(): void {
    this.stopped = true;
    this.timers.stop();
    for (const off of this.unsubscribe.splice(0)) off().catch(() => undefined);
  }

  private tellLeader(m: LeaderMessage): Promise<void> {
    return this.coordination.publish(LEADER_CHANNEL, JSON.stringify(m));
  }

  private broadcast(b: LeaseBroadcast): void {
    if (!this.coordination.shared) return;
    this.coordination.publish(EVENTS_CHANNEL, JSON.stringify({ ...b, from: this.replica })).catch((err: unknown) => this.log.warn({ err }, "broadcasting a lease event failed"));
  }

  /** Work another replica handed to the leader. */
  private onLeaderMessage(m: LeaderMessage): void {
    switch (m.op) {
      case "admitted":
        return void this.adopt(m.id, m.queue).catch((err: unknown) => this.log.error({ err, leaseId: m.id }, "placing a lease admitted by another replica failed"));
      case "ended":
        return void this.forget(m.id).catch((err: unknown) => this.log.error({ err, leaseId: m.id }, "freeing a lease ended by another replica failed"));
      case "watch":
        this.remoteWatched.add(m.id);
        this.announced.delete(m.id);
        return this.announcePositions();
      case "node":
        return void this.adoptNode(m.name).catch((err: unknown) => this.log.error({ err, node: m.name }, "adding a node registered through another replica failed"));
      case "heartbeat":
        return this.nodeHeartbeat(m.name, m.at);
      case "limit":
        return this.setAppLimit(m.app, m.limit);
    }
  }

  private async recover(): Promise<void> {
    const ended: LeaseRecord[] = [];
    // One transaction: memory is rebuilt from a single consistent view, and no other use case's
    // transaction can run in between.
    const staged = await this.stage(async (tx) => {
      const now = this.clock.now();
      this.scheduler = new PriorityScheduler(schedulerOptionsFor(this.policy));
      this.appActive.clear();
      this.live.clear();
      this.announced.clear();
      this.timers.clearAll();
      // Agent nodes: those still heartbeating keep their devices; the others were lost while the
      // server was down (their leases fail below, charging only the time held).
      this.nodes.clear();
      /** Nodes lost while the server was down, with when each was last heard from. */
      const lost = new Map<string, number | null>();
      for (const node of await tx.nodes.list()) {
        if (node.devices === null) continue;
        if (node.heartbeatAt !== null && node.heartbeatAt + this.heartbeatTimeoutMs > now) {
          this.nodes.set(node.name, node.devices);
          this.timers.arm(NODE_TIMER + node.name, "heartbeat", node.heartbeatAt + this.heartbeatTimeoutMs);
        } else {
          lost.set(node.name, node.heartbeatAt);
          await this.forgetNode(tx, node);
        }
      }
      this.pool = this.freshPool();
      for (const app of await tx.apps.list()) this.appLimits.set(app.id, app.maxConcurrency);
      for (const lease of await tx.leases.live()) {
        if (lease.status === "active") {
          const occupied =
            lease.node !== null && lease.deviceIndex !== null && lease.slotIndexes !== null
              ? this.pool.occupy(lease.id, lease.node, lease.deviceIndex, lease.slotIndexes)
              : null;
          if (lease.deadline !== null && lease.deadline <= now) {
            if (occupied) this.pool.release(lease.id);
            ended.push(await this.finishActive(tx, lease, "expired", now));
          } else if (!occupied) {
            // Its device is no longer in the pool: the lease cannot continue. Charge only what it
            // held: on a lost node, until the node was last heard from.
            const onLost = lease.node !== null && lost.has(lease.node);
            const endAt = onLost ? heldUntil(lease, lost.get(lease.node ?? "") ?? null, now) : now;
            const why = onLost
              ? nodeLostProblem(this.heartbeatTimeoutMs, lease.node ?? "", lease, endAt)
              : problem("no_gpu_available", "The GPU this lease held left the pool while the server was down.", { reason: "device_removed" });
            ended.push(await this.finishActive(tx, lease, "failed", now, why, false, endAt));
          } else {
            this.live.set(lease.id, lease);
            this.countActive(lease.appId, +1);
            this.scheduler.onGranted(lease.id, lease.appId, occupied, lease.deadline ?? now);
            this.armDeadline(lease);
          }
        } else if (lease.queuedAt + this.policy.queueTimeoutMs <= now) {
          ended.push(await this.finishQueued(tx, lease, "failed", now, queueTimeoutProblem(lease, now, this.policy.queueTimeoutMs)));
        } else if (lease.node !== null && !this.pool.hasNode(lease.node)) {
          ended.push(await this.finishQueued(tx, lease, "failed", now, nodeLostProblem(this.heartbeatTimeoutMs, lease.node, lease, now)));
        } else {
          this.live.set(lease.id, lease);
          const quota = await readQuota(tx, this.policy, { kind: lease.identityKind, id: lease.identityId }, now);
          // Its own reservation is still counted in the ledger; add it back for "left before it".
          const share = quota.view.quotaMs > 0 ? Math.min(1, (quota.view.leftMs + lease.reservedMs) / quota.view.quotaMs) : 0;
          this.scheduler.enqueue(this.queuedRequest(lease, share));
          this.armQueueTimeout(lease);
        }
      }
      return this.dispatchAndPersist(tx, now);
    });
    await staged.committed;
    const grants = staged.value;
    for (const lease of ended) this.announceEnd(lease);
    this.announceGrants(grants);
    this.log.info({ active: this.activeLeases, queued: this.scheduler.size, settled: ended.length }, "lease state recovered");
  }

  admit(input: AdmitInput): Promise<AdmitResult> {
    if (!this.leading) return this.follower.admit(input);
    const started = performance.now();
    return this.op(
      () => this.admitStaged(input),
      (result) => {
        this.metrics?.ledgerTransaction("admit", (performance.now() - started) / 1000);
        return this.announceAdmit(result);
      },
    );
  }

  /**
   * Runs one use case: `stage` changes memory and stages its transaction under the serial
   * section; the section is released before the commit so concurrent operations can share it;
   * `after` (timers, events, the answer) runs only once the commit is durable. If the commit
   * fails, memory is rebuilt from the store and the error goes to the caller.
   */
  private async op<T, R>(stage: () => Promise<{ value: T; committed: Promise<void> }>, after: (value: T) => R): Promise<R> {
    // The memory changes happen inside the staged transaction; an adapter that runs those one at
    // a time already orders them, so the engine's own section is needed only for one that doesn't.
    let staged: { value: T; committed: Promise<void> };
    try {
      staged = this.coordination.leaderStager.ordered ? await this.guard(stage) : await this.serial.run(() => this.guard(stage));
      await staged.committed;
    } catch (err) {
      if (err instanceof LeadershipLostError) this.stepDown(err);
      else await this.serial.run(() => this.recover());
      throw err;
    }
    return after(staged.value);
  }

  private announceAdmit(result: Staged<typeof this.admitStaged>): AdmitResult {
    if (result.kind === "denied") {
      this.metrics?.denial(result.problem.code);
      this.announceGrants(result.others);
      return { kind: "denied", problem: result.problem, retryAfterS: result.retryAfterS };
    }
    this.announceGrants(result.others);
    if (result.kind === "granted") {
      this.armDeadline(result.lease);
      this.metrics?.grant(result.lease.size, 0);
      return { kind: "granted", lease: result.lease, quota: result.quota };
    }
    this.armQueueTimeout(result.lease);
    const place = this.position(result.lease.id) ?? { position: this.scheduler.size, reason: "node" as const, etaMs: null };
    return { kind: "queued", lease: result.lease, position: place.position, reason: place.reason, etaMs: place.etaMs, quota: result.quota };
  }

  private admitStaged(input: AdmitInput) {
    const now = this.clock.now();
    const leaseId = newOrderedId("ls", now);
    return this.stage(async (tx) => {
      const { identity, overrideMs } = await chargedIdentity(tx, this.policy, input.charged);
      const key = identityKey(identity);
      const tier = tierOf(this.policy, identity.tier);
      const ledger = rollWindow((await tx.ledgers.get(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs);
      const outcome = await reserveWithRetryTime(tx, { policy: this.policy, identity, tier, overrideMs, ledger, durationMs: input.durationMs, size: input.size, now, via: input.via });
      if (!outcome.ok) return { kind: "denied" as const, problem: outcome.problem, retryAfterS: outcome.retryAfterS, others: [] as LeaseRecord[] };
      if (input.node !== null && !this.pool.hasNode(input.node)) {
        return { kind: "denied" as const, retryAfterS: 5, others: [] as LeaseRecord[], problem: problem("no_gpu_available", `Node ${input.node} has no GPUs in the pool right now: its agent has not registered, or stopped heartbeating. Nothing was reserved; check the agent on that host (gpupool pool shows the nodes).`, { reason: "node_not_registered" }) };
      }
      if (!this.pool.couldEverFit(input.size.slots, input.node ?? undefined)) {
        return { kind: "denied" as const, retryAfterS: null, others: [] as LeaseRecord[], problem: this.noCapacity(input.size, input.node) };
      }
      const before = quotaView(ledger, tier, overrideMs, this.policy.windowMs);
      const request: PriorityRequest = {
        leaseId,
        appId: input.appId,
        identity: key,
        slots: input.size.slots,
        priority: tier.priority,
        durationMs: input.durationMs,
        seq: 0,
        queuedAt: now,
        quotaLeftShare: before.quotaMs > 0 ? before.leftMs / before.quotaMs : 0,
        node: input.node,
      };
      const granted = this.placeNew(request, now);
      const mine = granted.find((g) => g.grant.leaseId === leaseId);
      if (!mine) {
        const full = this.scheduler.size > this.policy.queueMaxLength;
        if (!input.queue || full) {
          this.scheduler.remove(leaseId);
          // Dispatch grants nothing else here in practice (it runs after every change), but if it
          // did, those grants are real and must be recorded.
          const others = await this.persistGrants(tx, granted, now);
          const reason = full ? "queue_full" : "queue_disabled";
          const detail = full
            ? `Every GPU is busy and the queue is full (${this.policy.queueMaxLength} waiting). Nothing was reserved or charged; try again in a minute.`
            : "Every GPU slot that fits this call is busy and the request asked not to queue (queue: false). Nothing was reserved or charged; retry, or allow queueing.";
          return { kind: "denied" as const, retryAfterS: full ? 60 : 5, problem: problem("no_gpu_available", detail, { reason }), others };
        }
      }
      const queued = admitted({ id: leaseId, appId: input.appId, identity, size: input.size, durationMs: input.durationMs, reservedMs: outcome.reservedMs, now, windowStartedAt: outcome.ledger.windowStartedAt, node: input.node });
      const next: Transition<NewLease> = mine ? grant(queued, mine.grant.assignment, outcome.ledger, now) : { lease: queued, ledger: outcome.ledger };
      const ledgerAfter = next.ledger;
      const lease = await tx.leases.insert(next.lease);
      await tx.ledgers.put(key, ledgerAfter);
      this.live.set(lease.id, lease);
      // Anything else the dispatch granted (normally nothing: dispatch runs after every change).
      const others = await this.persistGrants(tx, granted.filter((g) => g !== mine), now);
      const quota: IdentityQuota = { identity, view: quotaView(ledgerAfter, tier, overrideMs, this.policy.windowMs) };
      return { kind: mine ? ("granted" as const) : ("queued" as const), lease, others, quota };
    });
  }

  /**
   * Release (or cancel, if still queued). Idempotent: a lease that already ended is returned as
   * it is. `failed` records that the caller's function failed; it does not change the charge.
   */
  release(leaseId: string, failed: boolean): Promise<{ lease: LeaseRecord; quota: IdentityQuota }> {
    if (!this.leading) return this.follower.release(leaseId, failed);
    const started = performance.now();
    return this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const lease = await this.leaseFor(tx, leaseId);
          if (!lease) fail("not_found", `No lease ${leaseId}.`);
          const changed = LIVE.has(lease.status);
          const ended = !changed
            ? lease
            : lease.status === "queued"
              ? await this.finishQueued(tx, lease, "cancelled", now, null)
              : await this.finishActive(tx, lease, "released", now, null, failed);
          const grants = changed ? await this.dispatchAndPersist(tx, now) : [];
          const quota = await readQuota(tx, this.policy, { kind: lease.identityKind, id: lease.identityId }, now);
          return { lease: ended, grants, changed, quota };
        });
      },
      (out) => {
        this.metrics?.ledgerTransaction("release", (performance.now() - started) / 1000);
        if (out.changed) {
          this.announceEnd(out.lease);
          this.announceGrants(out.grants);
        }
        return { lease: out.lease, quota: out.quota };
      },
    );
  }

  /**
   * An agent (re-)registered its node's devices. Unchanged devices keep their leases; changed ones
   * fail the leases they held (charging only the time held) and the node's slots are replaced.
   * Refused while another agent holds the node (`presented` is the registration the calling agent
   * held before it restarted, if any): checked and written in one transaction.
   */
  async registerNode(node: NodeRecord, devices: readonly DeviceSpec[], agentUrl: string | null, presented: string | null): Promise<NodeRegistration> {
    const claim = async (tx: Tx, now: number): Promise<Problem | null> => {
      const refused = nodeInUse((await tx.nodes.getByName(node.name)) ?? node, presented, now, this.heartbeatTimeoutMs);
      if (refused === null) await tx.nodes.setState(node.id, { devices, registeredAt: now, heartbeatAt: now, agentUrl });
      return refused;
    };
    if (!this.leading) {
      const now = this.clock.now();
      const refused = await this.store.transaction((tx) => claim(tx, now));
      if (refused !== null) return { kind: "refused", problem: refused };
      await this.tellLeader({ op: "node", name: node.name });
      return { kind: "registered", at: now };
    }
    return this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const refused = await claim(tx, now);
          return refused !== null ? { refused } : { placed: await this.placeNode(tx, node.name, devices, now) };
        });
      },
      (out): NodeRegistration => {
        if ("refused" in out) return { kind: "refused", problem: out.refused };
        this.nodePlaced(node.name, out.placed);
        return { kind: "registered", at: out.placed.at };
      },
    );
  }

  /** A node registered through another replica: its state is in the store. */
  private adoptNode(name: string): Promise<void> {
    return this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const node = await tx.nodes.getByName(name);
          return node?.devices ? this.placeNode(tx, name, node.devices, node.heartbeatAt ?? now) : null;
        });
      },
      (out) => {
        if (out !== null) this.nodePlaced(name, out);
      },
    );
  }

  private async placeNode(tx: Tx, name: string, devices: readonly DeviceSpec[], now: number) {
    const before = this.nodes.get(name);
    const replaced = before !== undefined && !sameDevices(before, devices);
    let ended: LeaseRecord[] = [];
    if (before === undefined || replaced) {
      if (replaced) {
        const why = (lease: LeaseRecord) => problem("no_gpu_available", `Node ${name} re-registered with different GPUs; this call's GPU is gone. It was charged only the ${Math.ceil((now - (lease.grantedAt ?? now)) / 1000)}s it held.`, { reason: "device_removed" });
        ended = await this.evictNode(tx, name, now, why, false);
      }
      this.nodes.set(name, devices);
      for (const d of devices) this.pool.addDevice(d);
    }
    return { replaced, ended, grants: await this.dispatchAndPersist(tx, now), at: now, devices: devices.length };
  }

  private nodePlaced(name: string, out: { replaced: boolean; ended: LeaseRecord[]; grants: LeaseRecord[]; at: number; devices: number }): void {
    this.timers.arm(NODE_TIMER + name, "heartbeat", out.at + this.heartbeatTimeoutMs);
    for (const lease of out.ended) this.announceEnd(lease);
    this.announceGrants(out.grants);
    this.log.info({ node: name, devices: out.devices, replaced: out.replaced }, "node registered");
  }

  /**
   * A lease another replica admitted (stored queued, its quota reserved): queue it here and
   * dispatch. With `queue: false` it is granted now or fails at once, refunded.
   */
  private adopt(id: string, queue: boolean): Promise<void> {
    return this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const lease = await tx.leases.get(id);
          if (!lease || lease.status !== "queued" || this.live.has(id)) return null;
          const why =
            lease.node !== null && !this.pool.hasNode(lease.node)
              ? problem("no_gpu_available", `Node ${lease.node} has no GPUs in the pool right now: its agent has not registered, or stopped heartbeating. Nothing was charged; check the agent on that host.`, { reason: "node_not_registered" })
              : !this.pool.couldEverFit(lease.slots, lease.node ?? undefined)
                ? this.noCapacity({ name: lease.size, slots: lease.slots }, lease.node)
                : null;
          if (why !== null) return { lease, ended: [await this.finishQueued(tx, lease, "failed", now, why)], grants: [] as LeaseRecord[] };
          this.live.set(lease.id, lease);
          const quota = await readQuota(tx, this.policy, { kind: lease.identityKind, id: lease.identityId }, now);
          const share = quota.view.quotaMs > 0 ? Math.min(1, (quota.view.leftMs + lease.reservedMs) / quota.view.quotaMs) : 0;
          this.scheduler.enqueue(this.queuedRequest(lease, share));
          const grants = await this.dispatchAndPersist(tx, now);
          const ended: LeaseRecord[] = [];
          if (!queue && !grants.some((g) => g.id === id)) {
            const busy = problem("no_gpu_available", "Every GPU slot that fits this call is busy and the request asked not to queue (queue: false). Nothing was charged; retry, or allow queueing.", { reason: "queue_disabled" });
            ended.push(await this.finishQueued(tx, lease, "failed", now, busy));
          }
          return { lease, ended, grants };
        });
      },
      (out) => {
        if (out === null) return;
        for (const lease of out.ended) this.announceEnd(lease);
        if (this.live.get(id)?.status === "queued") {
          this.armQueueTimeout(out.lease);
          // The replica that admitted it waits for its place.
          this.remoteWatched.add(id);
        }
        this.announceGrants(out.grants);
      },
    );
  }

  /** A lease another replica ended (released or cancelled): free its slots or its place in line. */
  private forget(id: string): Promise<void> {
    return this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const had = this.live.get(id);
          const lease = await tx.leases.get(id);
          if (!had || !lease || lease.status === "queued" || lease.status === "active") return null;
          this.live.delete(id);
          if (this.pool.release(id)) this.countActive(had.appId, -1);
          this.scheduler.onReleased(id);
          this.scheduler.remove(id);
          return { lease, grants: await this.dispatchAndPersist(tx, now) };
        });
      },
      (out) => {
        if (out === null) return;
        this.announceEnd(out.lease);
        this.announceGrants(out.grants);
      },
    );
  }

  /** The node's agent was heard from (its heartbeat is already recorded in the store). */
  nodeHeartbeat(name: string, at: number): void {
    if (!this.leading) return void this.tellLeader({ op: "heartbeat", name, at }).catch((err: unknown) => this.log.warn({ err }, "could not pass a heartbeat to the leader"));
    if (this.nodes.has(name)) this.timers.arm(NODE_TIMER + name, "heartbeat", at + this.heartbeatTimeoutMs);
  }

  /** No heartbeat from a node for the timeout: fail its leases (charging only the time held) and drop its slots. */
  private onNodeSilent(name: string): void {
    this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const node = (await tx.nodes.getByName(name)) ?? null;
          // Another replica may have recorded a heartbeat this one has not heard about yet.
          if (node !== null && node.heartbeatAt !== null && node.devices !== null && node.heartbeatAt + this.heartbeatTimeoutMs > now) {
            return { lost: false, at: node.heartbeatAt, ended: [] as LeaseRecord[], grants: [] as LeaseRecord[] };
          }
          if (node !== null) await this.forgetNode(tx, node);
          // Its leases held their GPUs as long as the node was heard from, not until now.
          const lastHeard = node?.heartbeatAt ?? null;
          const ended = await this.evictNode(tx, name, now, (lease) => nodeLostProblem(this.heartbeatTimeoutMs, name, lease, heldUntil(lease, lastHeard, now)), true, lastHeard);
          return { lost: true, at: now, ended, grants: await this.dispatchAndPersist(tx, now) };
        });
      },
      (out) => {
        if (!out.lost) return this.timers.arm(NODE_TIMER + name, "heartbeat", out.at + this.heartbeatTimeoutMs);
        this.log.warn({ node: name, failed: out.ended.length }, "node lost: no heartbeat; its leases failed and its slots were removed");
        for (const lease of out.ended) this.announceEnd(lease);
        this.announceGrants(out.grants);
      },
    ).catch((err: unknown) => this.log.error({ err, node: name }, "handling a silent node failed"));
  }

  /**
   * Takes the node's devices out of the pool and fails the leases that held them; with
   * `waitingToo`, also the queued requests that could only run on that node (nothing is requeued
   * elsewhere: the app runs on that host).
   */
  private async evictNode(tx: Tx, name: string, now: number, why: (lease: LeaseRecord) => Problem, waitingToo: boolean, lastHeard: number | null = now): Promise<LeaseRecord[]> {
    const evicted = new Set(this.pool.removeNode(name));
    this.nodes.delete(name);
    const ended: LeaseRecord[] = [];
    for (const lease of [...this.live.values()]) {
      if (lease.status === "active" && evicted.has(lease.id)) {
        this.countActive(lease.appId, -1);
        ended.push(await this.finishActive(tx, lease, "failed", now, why(lease), false, heldUntil(lease, lastHeard, now)));
      } else if (waitingToo && lease.status === "queued" && lease.node === name) {
        ended.push(await this.finishQueued(tx, lease, "failed", now, why(lease)));
      }
    }
    return ended;
  }

  /** Marks a node unregistered, so its agent's next heartbeat is told to register again (when it was last heard from stays known). */
  private async forgetNode(tx: Tx, node: NodeRecord): Promise<void> {
    this.timers.clear(NODE_TIMER + node.name);
    await tx.nodes.setState(node.id, { devices: null, registeredAt: null, heartbeatAt: node.heartbeatAt, agentUrl: node.agentUrl });
  }

  /** Why no GPU could ever take the call (see noCapacityProblem). */
  private noCapacity(size: { name: string; slots: number }, node: string | null): Problem {
    // Only agents' GPUs exist, and a direct request may not use them.
    const onlyAgents = node === null && !this.pool.couldEverFit(size.slots) && this.nodes.size > 0 && this.devices.length === 0;
    return noCapacityProblem(size, node, onlyAgents);
  }

  /** A lease's timer fired: its deadline (expire it) or its queue timeout (fail it, refunded). */
  private onTimer(leaseId: string, due: "deadline" | "queue_timeout"): void {
    this.op(
      () => {
        const now = this.clock.now();
        return this.stage(async (tx) => {
          const lease = await this.leaseFor(tx, leaseId);
          if (!lease || lease.status !== (due === "deadline" ? "active" : "queued")) {
            // Ended by another replica whose word has not arrived (or was lost): free it now.
            return lease !== null && this.live.has(leaseId) ? { lease, early: false, grants: [], elsewhere: true } : null;
          }
          // Timers can fire a little early; never expire a lease before its deadline.
          if (due === "deadline" && lease.deadline !== null && lease.deadline > now) return { lease, early: true, grants: [], elsewhere: false };
          const ended =
            due === "deadline"
              ? await this.finishActive(tx, lease, "expired", now)
              : await this.finishQueued(tx, lease, "failed", now, queueTimeoutProblem(lease, now, this.policy.queueTimeoutMs));
          return { lease: ended, early: false, grants: await this.dispatchAndPersist(tx, now), elsewhere: false };
        });
      },
      (out) => {
        if (!out) return;
        if (out.elsewhere) return void this.forget(leaseId).catch((err: unknown) => this.log.error({ err, leaseId }, "freeing a lease ended elsewhere failed"));
        if (out.early) return this.armDeadline(out.lease);
        this.announceEnd(out.lease);
        this.announceGrants(out.grants);
      },
    ).catch((err: unknown) => this.log.error({ err, leaseId, due }, "a lease timer failed"));
  }

  /**
   * Ends an active lease (see endActive) and frees its slots. `endAt` (≤ now): when it stopped
   * holding its GPU, if that was before now (a node that went silent).
   */
  private async finishActive(tx: Tx, lease: LeaseRecord, status: "released" | "expired" | "failed", now: number, why: Problem | null = null, failed = false, endAt = now): Promise<LeaseRecord> {
    const ended = await this.transition(tx, lease, now, (ledger) => endActive(lease, ledger, status, endAt, why, failed));
    this.live.delete(ended.id);
    if (this.pool.release(lease.id)) this.countActive(lease.appId, -1);
    this.scheduler.onReleased(lease.id);
    return ended;
  }

  /** Ends a lease that never got a GPU (see endQueued) and takes it out of the queue. */
  private async finishQueued(tx: Tx, lease: LeaseRecord, status: "cancelled" | "failed", now: number, why: Problem | null): Promise<LeaseRecord> {
    this.scheduler.remove(lease.id);
    const ended = await this.transition(tx, lease, now, (ledger) => endQueued(lease, ledger, status, now, why, this.policy.windowMs));
    this.live.delete(ended.id);
    return ended;
  }

  /** Reads the lease's ledger (rolled to now), applies `step`, and writes lease and ledger. */
  private async transition(tx: Tx, lease: LeaseRecord, now: number, step: (ledger: LedgerState) => Transition): Promise<LeaseRecord> {
    const key = identityKey({ kind: lease.identityKind, id: lease.identityId });
    const next = step(rollWindow((await tx.ledgers.get(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs));
    await tx.ledgers.put(key, next.ledger);
    await tx.leases.update(next.lease);
    return next.lease;
  }

  private async leaseFor(tx: Tx, id: string): Promise<LeaseRecord | null> {
    // Other replicas change leases too when the store is shared: read (and lock) the row.
    if (this.coordination.shared) return tx.leases.get(id);
    return this.live.get(id) ?? (await tx.leases.get(id));
  }

  /** A live lease as the engine last wrote it, or null (then ask the store). */
  liveLease(id: string): LeaseRecord | null {
    // On a shared store another replica may have just changed it: the store has the truth.
    return this.coordination.shared ? null : (this.live.get(id) ?? null);
  }

  private dispatch(now: number): { grant: Grant; request: PriorityRequest }[] {
    const out: { grant: Grant; request: PriorityRequest }[] = [];
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

  /** A new request: granted at once when nothing waits and it fits (see grantNow), else queued and dispatched. */
  private placeNew(request: PriorityRequest, now: number): { grant: Grant; request: PriorityRequest }[] {
    const atOnce = this.scheduler.grantNow(request, this.pool, this.concurrency, now);
    if (atOnce !== null) {
      this.countActive(request.appId, +1);
      return [{ grant: atOnce, request }];
    }
    this.scheduler.enqueue(request);
    return this.dispatch(now);
  }

  private async dispatchAndPersist(tx: Tx, now: number): Promise<LeaseRecord[]> {
    return this.persistGrants(tx, this.dispatch(now), now);
  }

  /** Records grants made by dispatch: the lease becomes active and its identity's window may start. */
  private async persistGrants(tx: Tx, grants: { grant: Grant }[], now: number): Promise<LeaseRecord[]> {
    const out: LeaseRecord[] = [];
    for (const { grant: g } of grants) {
      const lease = await this.leaseFor(tx, g.leaseId);
      if (!lease) throw new Error(`granted lease ${g.leaseId} is not in the store`);
      if (lease.status !== "queued") {
        // Another replica cancelled it just before: give the slots back (the cancel's message follows).
        if (this.pool.release(lease.id)) this.countActive(lease.appId, -1);
        this.scheduler.onReleased(lease.id);
        this.live.delete(lease.id);
        continue;
      }
      const active = await this.transition(tx, lease, now, (ledger) => grant(lease, g.assignment, ledger, now));
      this.live.set(active.id, active);
      out.push(active);
    }
    return out;
  }

  private announceGrants(granted: readonly LeaseRecord[]): void {
    for (const lease of granted) {
      this.timers.clear(lease.id);
      this.announced.delete(lease.id);
      this.armDeadline(lease);
      this.metrics?.grant(lease.size, (lease.grantedAt ?? lease.queuedAt) - lease.queuedAt);
      this.remoteWatched.delete(lease.id);
      this.events.emit(lease.id, { type: "granted", lease });
      this.broadcast({ type: "granted", id: lease.id });
    }
    this.announcePositions();
  }

  private announceEnd(lease: LeaseRecord): void {
    this.timers.clear(lease.id);
    this.announced.delete(lease.id);
    this.metrics?.end(lease.status, lease.size, lease.grantedAt === null ? null : lease.heldMs);
    this.remoteWatched.delete(lease.id);
    if (lease.status === "failed" && lease.problemCode !== null && lease.grantedAt === null) {
      const why = queueTimeoutProblemFrom(lease);
      this.events.emit(lease.id, { type: "failed", lease, problem: why });
      this.broadcast({ type: "failed", id: lease.id, problem: why });
    } else {
      this.events.emit(lease.id, { type: "ended", lease });
      this.broadcast({ type: "ended", id: lease.id });
    }
    this.announcePositions();
  }

  /** Queue places move whenever the queue changes; tell whoever is watching (O(log n) each). */
  private announcePositions(): void {
    if (this.scheduler.size === 0) return;
    const now = this.clock.now();
    const watched = this.remoteWatched.size === 0 ? this.events.subscribed() : new Set([...this.events.subscribed(), ...this.remoteWatched]);
    for (const leaseId of watched) {
      const place = this.scheduler.place(leaseId, now);
      if (!place) continue;
      const said = `${place.position}:${place.reason}`;
      if (this.announced.get(leaseId) === said) continue;
      this.announced.set(leaseId, said);
      this.events.emit(leaseId, { type: "queued", position: place.position, reason: place.reason, etaMs: place.etaMs });
      if (this.remoteWatched.has(leaseId)) this.broadcast({ type: "queued", id: leaseId, ...place });
    }
  }

  private armDeadline(lease: LeaseRecord): void {
    if (lease.deadline !== null) this.timers.arm(lease.id, "deadline", lease.deadline);
  }

  private armQueueTimeout(lease: LeaseRecord): void {
    this.timers.arm(lease.id, "queue_timeout", lease.queuedAt + this.policy.queueTimeoutMs);
  }

  private countActive(appId: string | null, delta: number): void {
    if (appId === null) return;
    this.appActive.set(appId, Math.max(0, (this.appActive.get(appId) ?? 0) + delta));
  }

  private queuedRequest(lease: LeaseRecord, quotaLeftShare: number): PriorityRequest {
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
    };
  }

  /**
   * If a transaction fails after memory was changed, memory no longer matches the store:
   * rebuild it from the store (the source of truth) before letting the error through.
   */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof DomainError) && !(err instanceof LeadershipLostError)) {
        try {
          await this.recover();
        } catch (again) {
          this.log.error({ err: again }, "rebuilding lease state after a failed transaction failed");
        }
      }
      throw err;
    }
  }
}

export type { Identity };
