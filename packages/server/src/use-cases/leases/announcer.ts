import { queueTimeoutOf, waitLimitMs } from "@gpupool/core";
import type { Policy, Problem, QueuePlace, WaitReason } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { LeaseEvents } from "../../events.js";
import type { Metrics } from "../../metrics.js";
import type { LeaseRecord, Tx } from "../../storage/store.js";
import type { Timers } from "../timers.js";
import { queueTimeoutProblemFrom } from "./lease-problems.js";
import { noLeaseTracing } from "./lease-tracing.js";
import type { LeaseTracing } from "./lease-tracing.js";
import type { PoolState } from "./pool-state.js";

/**
 * A lease's change as the leader announces it beyond this process (other replicas relay it to
 * their watchers), with the lease as it now is (absent from an older replica's: then read it).
 */
export type Announcement =
  | { readonly type: "granted" | "ended"; readonly id: string; readonly lease?: LeaseRecord }
  | { readonly type: "failed"; readonly id: string; readonly problem: Problem; readonly lease?: LeaseRecord }
  | {
      readonly type: "queued";
      readonly id: string;
      readonly position: number;
      readonly reason: WaitReason;
      readonly etaMs: number | null;
      readonly expectedMs?: number | null;
    };

export type LeaseTimerKind = "deadline" | "queue_timeout";

/** Watchers hear their queue place at most this often while the queue keeps moving (see LeaseAnnouncer.positions). */
export const POSITIONS_INTERVAL_MS = 1_000;
/** The longest a watcher whose place keeps changing waits for its next place. */
export const POSITIONS_MAX_GAP_MS = 8_000;

/**
 * What the leader does once a change is durable: (re)arms the lease's timers, counts it in the
 * metrics, tells the lease's watchers here (SSE) and, through `outbox`, on other replicas, and
 * moves the queue places of whoever watches a queued lease.
 */
export class LeaseAnnouncer {
  /**
   * Last queue place sent to each watched lease (so a change is announced once), when, and how
   * long until the next may go: doubling from POSITIONS_INTERVAL_MS to POSITIONS_MAX_GAP_MS while
   * the place keeps changing, back to the start once a send finds it unchanged.
   */
  private readonly announced = new Map<string, { said: string; at: number; gap: number }>();
  /** Queued leases watched from other replicas: their places go out too. */
  private readonly remoteWatched = new Set<string>();
  /** The pending send of changed places, and when the last one went (see positions). */
  private flush: NodeJS.Timeout | null = null;
  private lastFlush = -Infinity;
  /**
   * Queued leases that asked for a shorter wait than their tier's queue timeout (max_wait), as
   * told with the lease: how long each may wait (the lease record stores it too, see queueLimitMs).
   */
  private readonly waitLimits = new Map<string, number>();

  constructor(
    private readonly state: PoolState,
    private readonly timers: Timers<LeaseTimerKind>,
    private readonly events: LeaseEvents,
    private readonly metrics: Metrics | null,
    private readonly clock: Clock,
    private readonly policy: Policy,
    /** Announcements for other replicas (replication sends them; a store nobody shares drops them). */
    private readonly outbox: (a: Announcement) => void,
    /** Spans of each lease's life (off: nothing). */
    private readonly tracing: LeaseTracing = noLeaseTracing,
    /**
     * An announcement for other replicas sent with a transaction (delivered at its COMMIT, dropped
     * by a rollback: no NOTIFY of its own); false when the store cannot, then it goes by `outbox`.
     */
    private readonly outboxWith: (tx: Tx, a: Announcement) => Promise<boolean> = () => Promise.resolve(false),
  ) {}

  /** Tells the other replicas `a` with the transaction `tx` (see outboxWith): true if it will go with it. */
  tellWith(tx: Tx, a: Announcement): Promise<boolean> {
    return this.outboxWith(tx, a);
  }

  /** Forgets all watchers' places and timers (a rebuild, or this replica stops leading). */
  clear(): void {
    this.timers.clearAll();
    this.announced.clear();
    this.remoteWatched.clear();
  }

  granted(leases: readonly LeaseRecord[]): void {
    for (const lease of leases) {
      this.announced.delete(lease.id);
      this.waitLimits.delete(lease.id);
      this.armDeadline(lease);
      this.metrics?.grant(lease.size, (lease.grantedAt ?? lease.queuedAt) - lease.queuedAt);
      this.remoteWatched.delete(lease.id);
      this.events.emit(lease.id, { type: "granted", lease });
      this.outbox({ type: "granted", id: lease.id, lease });
      this.tracing.granted(lease);
    }
    this.positions();
  }

  /**
   * `problems`: the problem a lease that never got a GPU was refused with, when known (else rebuilt
   * from the record). `relay`: false when the replica that ended them told the others itself.
   */
  ended(leases: readonly LeaseRecord[], problems?: ReadonlyMap<string, Problem>, relay = true): void {
    for (const lease of leases) {
      this.timers.clear(lease.id);
      this.announced.delete(lease.id);
      this.waitLimits.delete(lease.id);
      this.metrics?.end(lease.status, lease.size, lease.grantedAt === null ? null : lease.heldMs);
      this.remoteWatched.delete(lease.id);
      if (lease.status === "failed" && lease.problemCode !== null && lease.grantedAt === null) {
        const why = problems?.get(lease.id) ?? queueTimeoutProblemFrom(lease);
        this.events.emit(lease.id, { type: "failed", lease, problem: why });
        if (relay) this.outbox({ type: "failed", id: lease.id, problem: why, lease });
      } else {
        this.events.emit(lease.id, { type: "ended", lease });
        if (relay) this.outbox({ type: "ended", id: lease.id, lease });
      }
      this.tracing.ended(lease);
    }
    this.positions();
  }

  /**
   * The caller's own lease, granted by its admission here. Nobody can watch it yet (its id is in
   * the answer still to be sent), so the other replicas hear only that it was granted — the pool
   * and the identity's meter changed — and the live views here and there look again at once.
   * `told`: the admission's transaction carried that word already (see tellWith).
   */
  grantedOnAdmission(lease: LeaseRecord, told = false): void {
    this.armDeadline(lease);
    this.metrics?.grant(lease.size, 0);
    this.events.changed();
    if (!told) this.outbox({ type: "granted", id: lease.id });
  }

  /**
   * A lease now waits in the queue here: its queue timeout runs (its `maxWaitMs`, at most its
   * tier's timeout); `remote`: it is watched from the replica that admitted it. The queue changed:
   * the live views here look again, and the other replicas hear its place at once (the one that
   * admitted it answers with it; the others' views look again). `place`: as just computed, if so;
   * `told`: the admission's transaction carried it already (see tellWith).
   */
  queued(lease: LeaseRecord, remote = false, maxWaitMs?: number | null, place?: QueuePlace | null, told = false): void {
    const tier = this.policy.tiers[lease.tier];
    if (maxWaitMs !== undefined && maxWaitMs !== null && maxWaitMs < queueTimeoutOf(this.policy, tier))
      this.waitLimits.set(lease.id, waitLimitMs(this.policy, tier, maxWaitMs));
    this.armQueueTimeout(lease);
    if (remote) this.remoteWatched.add(lease.id);
    this.events.changed();
    if (told) return;
    const where = place ?? this.state.position(lease.id, this.clock.now());
    if (where === null) return;
    // Sent now, so the batched sends of changed places (see positions) need not send it again.
    if (remote)
      this.announced.set(lease.id, {
        said: `${where.position}:${where.reason}`,
        at: performance.now(),
        gap: POSITIONS_INTERVAL_MS,
      });
    this.outbox({ type: "queued", id: lease.id, ...where });
  }

  /** Someone on another replica watches this queued lease: send its place, now and as it changes. */
  watchRemote(leaseId: string): void {
    this.remoteWatched.add(leaseId);
    this.announced.delete(leaseId);
    this.positions();
  }

  armDeadline(lease: LeaseRecord): void {
    if (lease.deadline !== null) this.timers.arm(lease.id, "deadline", lease.deadline);
  }

  armQueueTimeout(lease: LeaseRecord): void {
    this.timers.arm(lease.id, "queue_timeout", lease.queuedAt + this.queueLimitMs(lease));
  }

  /**
   * How long a queued lease may wait: its max_wait when it named a shorter one (as told now, else
   * as stored with it: a lease recovered or adopted after a restart or a failover), else its
   * tier's queue timeout.
   */
  queueLimitMs(lease: LeaseRecord): number {
    return this.waitLimits.get(lease.id) ?? waitLimitMs(this.policy, this.policy.tiers[lease.tier], lease.maxWaitMs);
  }

  /**
   * Queue places move whenever the queue changes: tell whoever watches — only places that changed,
   * batched: one send for all the changes of a turn of the event loop, and at most one a second
   * (POSITIONS_INTERVAL_MS) while the queue keeps moving. Cancelling 1,000 watched queued leases
   * moved every place behind each one and sent ~40,000 events (~n²); batched, a watcher hears its
   * place a few times, and a grant, failure or end still goes out at once.
   */
  positions(): void {
    this.sendWithin(Math.max(0, this.lastFlush + POSITIONS_INTERVAL_MS - performance.now()));
  }

  private sendWithin(waitMs: number): void {
    if (this.flush !== null || this.state.queueDepth === 0) return;
    this.flush = setTimeout(() => {
      this.flush = null;
      this.lastFlush = performance.now();
      this.sendPositions();
    }, waitMs);
    this.flush.unref();
  }

  /** Sends each watcher its place if it changed since it was last sent (O(log n) each). */
  private sendPositions(): void {
    if (this.state.queueDepth === 0) return;
    const now = this.clock.now();
    const at = performance.now();
    let due = Infinity;
    const watched =
      this.remoteWatched.size === 0
        ? this.events.subscribed()
        : new Set([...this.events.subscribed(), ...this.remoteWatched]);
    for (const leaseId of watched) {
      const place = this.state.position(leaseId, now);
      if (!place) continue;
      const said = `${place.position}:${place.reason}`;
      const last = this.announced.get(leaseId);
      if (last?.said === said) {
        last.gap = POSITIONS_INTERVAL_MS;
        continue;
      }
      if (last !== undefined && at < last.at + last.gap) {
        // Changed again too soon: it goes with a later send.
        due = Math.min(due, last.at + last.gap);
        continue;
      }
      const gap = last === undefined ? POSITIONS_INTERVAL_MS : Math.min(POSITIONS_MAX_GAP_MS, last.gap * 2);
      this.announced.set(leaseId, { said, at, gap });
      this.events.emit(leaseId, {
        type: "queued",
        position: place.position,
        reason: place.reason,
        etaMs: place.etaMs,
        expectedMs: place.expectedMs ?? null,
      });
      if (this.remoteWatched.has(leaseId)) this.outbox({ type: "queued", id: leaseId, ...place });
    }
    if (due !== Infinity) this.sendWithin(Math.max(0, due - performance.now()));
  }
}
