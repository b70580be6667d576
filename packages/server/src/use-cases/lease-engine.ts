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
import type { LeaseRecord, NewLease, Store, Tx } from "../storage/store.js";
import { chargedIdentity } from "./charged-identity.js";
import type { IdentityQuota } from "./quota.js";
import { LeaseTimers } from "./lease-timers.js";
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
}

export type AdmitResult =
  | { readonly kind: "granted"; readonly lease: LeaseRecord; readonly quota: IdentityQuota }
  | { readonly kind: "queued"; readonly lease: LeaseRecord; readonly position: number; readonly reason: WaitReason; readonly etaMs: number | null; readonly quota: IdentityQuota }
  | { readonly kind: "denied"; readonly problem: Problem; readonly retryAfterS: number | null };

const LIVE = new Set(["queued", "active"]);

/** The value a staging function resolves to. */
type Staged<F extends (...args: never[]) => Promise<{ value: unknown }>> = Awaited<ReturnType<F>>["value"];

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

  constructor(
    private readonly store: Store,
    private readonly policy: Policy,
    private readonly devices: readonly DeviceSpec[],
    private readonly clock: Clock,
    private readonly events: LeaseEvents,
    private readonly metrics: Metrics | null,
    private readonly log: Logger,
  ) {
    this.pool = new Pool(devices);
    this.scheduler = new PriorityScheduler(schedulerOptionsFor(policy));
    this.timers = new LeaseTimers(clock, (leaseId, kind) => this.onTimer(leaseId, kind));
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
    this.appLimits.set(appId, limit);
    this.scheduler.appLimitChanged(appId);
  }

  /** A queued lease's place in line, why it waits, and the estimated wait (null if not queued). */
  position(leaseId: string): QueuePlace | null {
    return this.scheduler.place(leaseId, this.clock.now());
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
    await this.serial.run(() => this.recover());
  }

  stop(): void {
    this.timers.stop();
  }

  private async recover(): Promise<void> {
    const ended: LeaseRecord[] = [];
    // One transaction: memory is rebuilt from a single consistent view, and no other use case's
    // transaction can run in between.
    const grants = await this.store.transaction(async (tx) => {
      const now = this.clock.now();
      this.pool = new Pool(this.devices);
      this.scheduler = new PriorityScheduler(schedulerOptionsFor(this.policy));
      this.appActive.clear();
      this.live.clear();
      this.announced.clear();
      this.timers.clearAll();
      for (const app of await tx.listApps()) this.appLimits.set(app.id, app.maxConcurrency);
      for (const lease of await tx.liveLeases()) {
        if (lease.status === "active") {
          const occupied =
            lease.node !== null && lease.deviceIndex !== null && lease.slotIndexes !== null
              ? this.pool.occupy(lease.id, lease.node, lease.deviceIndex, lease.slotIndexes)
              : null;
          if (lease.deadline !== null && lease.deadline <= now) {
            if (occupied) this.pool.release(lease.id);
            ended.push(await this.finishActive(tx, lease, "expired", now));
          } else if (!occupied) {
            // Its device is no longer in the pool: the lease cannot continue. Charge only what it held.
            ended.push(await this.finishActive(tx, lease, "failed", now, problem("no_gpu_available", "The GPU this lease held left the pool while the server was down.", { reason: "device_removed" })));
          } else {
            this.live.set(lease.id, lease);
            this.countActive(lease.appId, +1);
            this.scheduler.onGranted(lease.id, lease.appId, occupied, lease.deadline ?? now);
            this.armDeadline(lease);
          }
        } else if (lease.queuedAt + this.policy.queueTimeoutMs <= now) {
          ended.push(await this.finishQueued(tx, lease, "failed", now, this.queueTimeoutProblem(lease, now)));
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
    for (const lease of ended) this.announceEnd(lease);
    this.announceGrants(grants);
    this.log.info({ active: this.activeLeases, queued: this.scheduler.size, settled: ended.length }, "lease state recovered");
  }

  admit(input: AdmitInput): Promise<AdmitResult> {
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
    const staged = this.store.serializesTransactions ? await this.guard(stage) : await this.serial.run(() => this.guard(stage));
    try {
      await staged.committed;
    } catch (err) {
      await this.serial.run(() => this.recover());
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
    return this.store.stage(async (tx) => {
      const { identity, overrideMs } = await chargedIdentity(tx, this.policy, input.charged);
      const key = identityKey(identity);
      const tier = tierOf(this.policy, identity.tier);
      const ledger = rollWindow((await tx.getLedger(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs);
      const outcome = await reserveWithRetryTime(tx, { policy: this.policy, identity, tier, overrideMs, ledger, durationMs: input.durationMs, size: input.size, now, via: input.via });
      if (!outcome.ok) return { kind: "denied" as const, problem: outcome.problem, retryAfterS: outcome.retryAfterS, others: [] as LeaseRecord[] };
      if (!this.pool.couldEverFit(input.size.slots)) {
        return { kind: "denied" as const, retryAfterS: null, others: [] as LeaseRecord[], problem: problem("no_gpu_available", `No GPU in this pool can take a ${input.size.name} call (${input.size.slots} slots of one GPU). Ask the app's developer to use a smaller size.`, { reason: "no_capacity" }) };
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
      };
      this.scheduler.enqueue(request);
      const granted = this.dispatch(now);
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
      const queued = admitted({ id: leaseId, appId: input.appId, identity, size: input.size, durationMs: input.durationMs, reservedMs: outcome.reservedMs, now, windowStartedAt: outcome.ledger.windowStartedAt });
      const next: Transition<NewLease> = mine ? grant(queued, mine.grant.assignment, outcome.ledger, now) : { lease: queued, ledger: outcome.ledger };
      const ledgerAfter = next.ledger;
      const lease = await tx.insertLease(next.lease);
      await tx.putLedger(key, ledgerAfter);
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
    const started = performance.now();
    return this.op(
      () => {
        const now = this.clock.now();
        return this.store.stage(async (tx) => {
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

  /** A lease's timer fired: its deadline (expire it) or its queue timeout (fail it, refunded). */
  private onTimer(leaseId: string, due: "deadline" | "queue_timeout"): void {
    this.op(
      () => {
        const now = this.clock.now();
        return this.store.stage(async (tx) => {
          const lease = await this.leaseFor(tx, leaseId);
          if (!lease || lease.status !== (due === "deadline" ? "active" : "queued")) return null;
          // Timers can fire a little early; never expire a lease before its deadline.
          if (due === "deadline" && lease.deadline !== null && lease.deadline > now) return { lease, early: true, grants: [] };
          const ended =
            due === "deadline"
              ? await this.finishActive(tx, lease, "expired", now)
              : await this.finishQueued(tx, lease, "failed", now, this.queueTimeoutProblem(lease, now));
          return { lease: ended, early: false, grants: await this.dispatchAndPersist(tx, now) };
        });
      },
      (out) => {
        if (!out) return;
        if (out.early) return this.armDeadline(out.lease);
        this.announceEnd(out.lease);
        this.announceGrants(out.grants);
      },
    ).catch((err: unknown) => this.log.error({ err, leaseId, due }, "a lease timer failed"));
  }

  private queueTimeoutProblem(lease: LeaseRecord, now: number): Problem {
    const waited = Math.round((now - lease.queuedAt) / 100) / 10;
    return problem(
      "queue_timeout",
      `Waited ${waited}s in the queue without a free GPU (the limit is ${this.policy.queueTimeoutMs / 1000}s). Nothing was charged and the reservation was refunded; the pool is busy, try again shortly.`,
      { waited },
    );
  }

  /** Ends an active lease (see endActive) and frees its slots. */
  private async finishActive(tx: Tx, lease: LeaseRecord, status: "released" | "expired" | "failed", now: number, why: Problem | null = null, failed = false): Promise<LeaseRecord> {
    const ended = await this.transition(tx, lease, now, (ledger) => endActive(lease, ledger, status, now, why, failed));
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
    const next = step(rollWindow((await tx.getLedger(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs));
    await tx.putLedger(key, next.ledger);
    await tx.updateLease(next.lease);
    return next.lease;
  }

  private async leaseFor(tx: Tx, id: string): Promise<LeaseRecord | null> {
    return this.live.get(id) ?? (await tx.getLease(id));
  }

  /** A live lease as the engine last wrote it, or null (then ask the store). */
  liveLease(id: string): LeaseRecord | null {
    return this.live.get(id) ?? null;
  }

  private dispatch(now: number): { grant: Grant; request: PriorityRequest }[] {
    const out: { grant: Grant; request: PriorityRequest }[] = [];
    this.scheduler.dispatch(
      this.pool,
      { active: (id) => this.appActive.get(id) ?? 0, limit: (id) => this.appLimits.get(id) ?? null },
      (grant, request) => {
        this.countActive(request.appId, +1);
        out.push({ grant, request });
      },
      now,
    );
    return out;
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
      this.events.emit(lease.id, { type: "granted", lease });
    }
    this.announcePositions();
  }

  private announceEnd(lease: LeaseRecord): void {
    this.timers.clear(lease.id);
    this.announced.delete(lease.id);
    this.metrics?.end(lease.status, lease.size, lease.grantedAt === null ? null : lease.heldMs);
    if (lease.status === "failed" && lease.problemCode !== null && lease.grantedAt === null) {
      this.events.emit(lease.id, { type: "failed", lease, problem: this.queueTimeoutProblemFrom(lease) });
    } else {
      this.events.emit(lease.id, { type: "ended", lease });
    }
    this.announcePositions();
  }

  private queueTimeoutProblemFrom(lease: LeaseRecord): Problem {
    return problem((lease.problemCode ?? "queue_timeout") as "queue_timeout", lease.problemDetail ?? "", { waited: ((lease.endedAt ?? lease.queuedAt) - lease.queuedAt) / 1000 });
  }

  /** Queue places move whenever the queue changes; tell whoever is watching (O(log n) each). */
  private announcePositions(): void {
    if (this.scheduler.size === 0) return;
    const now = this.clock.now();
    for (const leaseId of this.events.subscribed()) {
      const place = this.scheduler.place(leaseId, now);
      if (!place) continue;
      const said = `${place.position}:${place.reason}`;
      if (this.announced.get(leaseId) === said) continue;
      this.announced.set(leaseId, said);
      this.events.emit(leaseId, { type: "queued", position: place.position, reason: place.reason, etaMs: place.etaMs });
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
      if (!(err instanceof DomainError)) {
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
