import { waitLimitMs } from "@gpupool/core";
import type { Policy } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { LeaseRecord, Stager, Tx } from "../storage/store.js";
import type { LeaseAnnouncer } from "./leases/announcer.js";
import type { LeaderLeases } from "./leases/leader-leases.js";
import { deviceGoneProblem, heldUntil, nodeLostProblem, queueTimeoutProblem } from "./leases/lease-problems.js";
import type { LeaseWrites } from "./leases/lease-writes.js";
import type { PoolState } from "./leases/pool-state.js";
import type { NodeMembership } from "./nodes/node-membership.js";

/**
 * Rebuilds the leader's memory from the store and settles whatever came due while nobody led:
 * in one transaction, so memory is rebuilt from a single consistent view and no other operation
 * runs in between. The EngineRunner's rebuild, and what a replica does when it takes the lead.
 *
 * Active leases keep their slots and deadlines; those whose deadline passed expire, charged in
 * full; those whose device is gone fail, charged only what they held (on a lost node, until it
 * was last heard from). Queued leases keep their place unless their queue timeout passed or
 * their node is gone. Freed slots go to the queue.
 */
export class Recovery {
  constructor(
    private readonly stager: Stager,
    private readonly state: PoolState,
    private readonly writes: LeaseWrites,
    private readonly announcer: LeaseAnnouncer,
    private readonly nodes: NodeMembership,
    private readonly leases: LeaderLeases,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly heartbeatTimeoutMs: number,
  ) {}

  async rebuild(): Promise<void> {
    const staged = await this.stager.stage(async (tx) => {
      const now = this.clock.now();
      this.state.clear();
      this.announcer.clear();
      const lost = await this.nodes.rebuild(tx, now);
      for (const app of await tx.apps.list()) this.state.setAppLimit(app.id, app.maxConcurrency);
      const ended: LeaseRecord[] = [];
      for (const lease of await tx.leases.live()) {
        const settled =
          lease.status === "active" ? await this.active(tx, lease, now, lost) : await this.queued(tx, lease, now);
        if (settled !== null) ended.push(settled);
      }
      return { ended, grants: await this.writes.dispatch(tx, now) };
    });
    await staged.committed;
    this.announcer.ended(staged.value.ended);
    this.announcer.granted(staged.value.grants);
    this.log.info(
      { active: this.state.activeLeases, queued: this.state.queueDepth, settled: staged.value.ended.length },
      "lease state recovered",
    );
  }

  /** An active lease: kept on its slots, or ended (the lease as ended). */
  private async active(
    tx: Tx,
    lease: LeaseRecord,
    now: number,
    lost: ReadonlyMap<string, number | null>,
  ): Promise<LeaseRecord | null> {
    if (lease.deadline !== null && lease.deadline <= now) {
      const current = await this.stillAsListed(tx, lease);
      return current === null ? null : this.writes.finishActive(tx, current, "expired", now);
    }
    if (this.state.restoreActive(lease, now)) {
      this.announcer.armDeadline(lease);
      return null;
    }
    const current = await this.stillAsListed(tx, lease);
    if (current === null) return null;
    lease = current;
    // Its device is no longer in the pool: the lease cannot continue. Charge only what it held.
    const node = lease.node ?? "";
    if (!lost.has(node)) return this.writes.finishActive(tx, lease, "failed", now, deviceGoneProblem());
    const endAt = heldUntil(lease, lost.get(node) ?? null, now);
    return this.writes.finishActive(
      tx,
      lease,
      "failed",
      now,
      nodeLostProblem(this.heartbeatTimeoutMs, node, lease, endAt),
      false,
      endAt,
    );
  }

  /**
   * The lease as stored now, read again under its lock, or null if another replica ended it since
   * `leases.live()` listed it (that list takes no locks: ending a lease from it could overwrite a
   * follower's release with an expiry and charge it twice).
   */
  private async stillAsListed(tx: Tx, listed: LeaseRecord): Promise<LeaseRecord | null> {
    const current = await tx.leases.get(listed.id);
    return current !== null && current.status === listed.status ? current : null;
  }

  /** A queued lease: back in line, or ended. */
  private async queued(tx: Tx, listed: LeaseRecord, now: number): Promise<LeaseRecord | null> {
    const limitMs = waitLimitMs(this.policy, this.policy.tiers[listed.tier], listed.maxWaitMs);
    const ends = listed.queuedAt + limitMs <= now || (listed.node !== null && !this.state.hasNode(listed.node));
    const lease = ends ? await this.stillAsListed(tx, listed) : listed;
    if (lease === null) return null;
    if (lease.queuedAt + limitMs <= now)
      return this.writes.finishQueued(tx, lease, "failed", now, queueTimeoutProblem(lease, now, limitMs));
    if (lease.node !== null && !this.state.hasNode(lease.node))
      return this.writes.finishQueued(
        tx,
        lease,
        "failed",
        now,
        nodeLostProblem(this.heartbeatTimeoutMs, lease.node, lease, now),
      );
    await this.leases.requeue(tx, lease, now);
    this.announcer.armQueueTimeout(lease);
    return null;
  }
}
