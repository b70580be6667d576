import { queueTimeoutOf, waitLimitMs } from "@gpupool/core";
import type { Policy, Problem, WaitReason } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { LeaseEvents } from "../../events.js";
import type { Metrics } from "../../metrics.js";
import type { LeaseRecord } from "../../storage/store.js";
import type { Timers } from "../timers.js";
import { queueTimeoutProblemFrom } from "./lease-problems.js";
import type { PoolState } from "./pool-state.js";

/** A lease's change as the leader announces it beyond this process (other replicas relay it to their watchers). */
export type Announcement =
  | { readonly type: "granted" | "ended"; readonly id: string }
  | { readonly type: "failed"; readonly id: string; readonly problem: Problem }
  | {
      readonly type: "queued";
      readonly id: string;
      readonly position: number;
      readonly reason: WaitReason;
      readonly etaMs: number | null;
      readonly expectedMs?: number | null;
    };

export type LeaseTimerKind = "deadline" | "queue_timeout";

/**
 * What the leader does once a change is durable: (re)arms the lease's timers, counts it in the
 * metrics, tells the lease's watchers here (SSE) and, through `outbox`, on other replicas, and
 * moves the queue places of whoever watches a queued lease.
 */
export class LeaseAnnouncer {
  /** Last queue place sent to each watched lease, so a change is announced once. */
  private readonly announced = new Map<string, string>();
  /** Queued leases watched from other replicas: their places go out too. */
  private readonly remoteWatched = new Set<string>();
  /**
   * Queued leases that asked for a shorter wait than their tier's queue timeout (max_wait): how
   * long each may wait. Kept in memory: after a restart a recovered lease waits its tier's timeout.
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
  ) {}

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
      this.outbox({ type: "granted", id: lease.id });
    }
    this.positions();
  }

  ended(leases: readonly LeaseRecord[]): void {
    for (const lease of leases) {
      this.timers.clear(lease.id);
      this.announced.delete(lease.id);
      this.waitLimits.delete(lease.id);
      this.metrics?.end(lease.status, lease.size, lease.grantedAt === null ? null : lease.heldMs);
      this.remoteWatched.delete(lease.id);
      if (lease.status === "failed" && lease.problemCode !== null && lease.grantedAt === null) {
        const why = queueTimeoutProblemFrom(lease);
        this.events.emit(lease.id, { type: "failed", lease, problem: why });
        this.outbox({ type: "failed", id: lease.id, problem: why });
      } else {
        this.events.emit(lease.id, { type: "ended", lease });
        this.outbox({ type: "ended", id: lease.id });
      }
    }
    this.positions();
  }

  /**
   * A lease now waits in the queue here: its queue timeout runs (its `maxWaitMs`, at most its
   * tier's timeout); `remote`: it is watched from the replica that admitted it.
   */
  queued(lease: LeaseRecord, remote = false, maxWaitMs?: number | null): void {
    const tier = this.policy.tiers[lease.tier];
    if (maxWaitMs !== undefined && maxWaitMs !== null && maxWaitMs < queueTimeoutOf(this.policy, tier))
      this.waitLimits.set(lease.id, waitLimitMs(this.policy, tier, maxWaitMs));
    this.armQueueTimeout(lease);
    if (remote) this.remoteWatched.add(lease.id);
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

  /** How long a queued lease may wait: its max_wait when it named a shorter one, else its tier's queue timeout. */
  queueLimitMs(lease: LeaseRecord): number {
    return this.waitLimits.get(lease.id) ?? queueTimeoutOf(this.policy, this.policy.tiers[lease.tier]);
  }

  /** Queue places move whenever the queue changes; tell whoever is watching (O(log n) each). */
  positions(): void {
    if (this.state.queueDepth === 0) return;
    const now = this.clock.now();
    const watched =
      this.remoteWatched.size === 0
        ? this.events.subscribed()
        : new Set([...this.events.subscribed(), ...this.remoteWatched]);
    for (const leaseId of watched) {
      const place = this.state.position(leaseId, now);
      if (!place) continue;
      const said = `${place.position}:${place.reason}`;
      if (this.announced.get(leaseId) === said) continue;
      this.announced.set(leaseId, said);
      this.events.emit(leaseId, {
        type: "queued",
        position: place.position,
        reason: place.reason,
        etaMs: place.etaMs,
        expectedMs: place.expectedMs ?? null,
      });
      if (this.remoteWatched.has(leaseId)) this.outbox({ type: "queued", id: leaseId, ...place });
    }
  }
}
