import { queueTimeoutOf } from "@gpupool/core";
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
    if (lease.deadline !== null && lease.deadline <= now) return this.writes.finishActive(tx, lease, "expired", now);
    if (this.state.restoreActive(lease, now)) {
      this.announcer.armDeadline(lease);
      return null;
    }
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

  /** A queued lease: back in line, or ended. */
  private async queued(tx: Tx, lease: LeaseRecord, now: number): Promise<LeaseRecord | null> {
    const limitMs = queueTimeoutOf(this.policy, this.policy.tiers[lease.tier]);
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
