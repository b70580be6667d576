import { billingOf } from "@gpupool/core";
import type { Policy, Problem } from "@gpupool/core";
import type { LeaseRecord, Tx } from "../../storage/store.js";
import type { Accounts } from "../accounts/accounts.js";
import { endActive, endQueued, grant } from "./lease-transitions.js";
import type { Placed, PoolState } from "./pool-state.js";

/**
 * The leader's steps that change a lease, its identity's ledger and the pool's memory together,
 * inside an operation's transaction (see EngineRunner): grants made by the scheduler, and the
 * end of an active or a queued lease.
 */
export class LeaseWrites {
  constructor(
    private readonly state: PoolState,
    private readonly accounts: Accounts,
    private readonly policy: Policy,
    /** False when other replicas change leases too (a shared store): then memory is never the truth about a lease. */
    private readonly memoryIsCurrent: boolean,
  ) {}

  /** The lease as it stands: from memory when only this process writes leases, else read (and locked) in the store. */
  async lease(tx: Tx, id: string): Promise<LeaseRecord | null> {
    if (!this.memoryIsCurrent) return tx.leases.get(id);
    return this.state.live.get(id) ?? (await tx.leases.get(id));
  }

  /** A live lease as last written here, or null (then ask the store): never on a shared store, where another replica may just have changed it. */
  liveLease(id: string): LeaseRecord | null {
    return this.memoryIsCurrent ? (this.state.live.get(id) ?? null) : null;
  }

  /**
   * Ends an active lease (see endActive) and frees its slots. `endAt` (≤ now): when it stopped
   * holding its GPU, if that was before now (a node that went silent).
   */
  async finishActive(
    tx: Tx,
    lease: LeaseRecord,
    status: "released" | "expired" | "failed",
    now: number,
    why: Problem | null = null,
    failed = false,
    endAt = now,
  ): Promise<LeaseRecord> {
    const ended = await this.accounts.step(tx, lease, now, (ledger) =>
      endActive(lease, ledger, status, endAt, why, failed, billingOf(this.policy).overage.pricePerMinuteMicros),
    );
    this.state.live.delete(ended.id);
    this.state.freeSlots(lease, status === "failed" ? undefined : endAt);
    return ended;
  }

  /** Ends a lease that never got a GPU (see endQueued) and takes it out of the queue. */
  async finishQueued(
    tx: Tx,
    lease: LeaseRecord,
    status: "cancelled" | "failed",
    now: number,
    why: Problem | null,
  ): Promise<LeaseRecord> {
    this.state.dequeue(lease.id);
    const ended = await this.accounts.step(tx, lease, now, (ledger) =>
      endQueued(lease, ledger, status, now, why, this.policy.windowMs),
    );
    this.state.live.delete(ended.id);
    return ended;
  }

  /** Dispatches the queue and records what it granted. */
  async dispatch(tx: Tx, now: number): Promise<LeaseRecord[]> {
    // With nothing queued there is nothing to grant (the common case after a release).
    if (this.state.queueDepth === 0) return [];
    const placed = this.state.dispatch(now);
    return placed.length === 0 ? [] : this.recordGrants(tx, placed, now);
  }

  /** Records grants the scheduler made: each lease becomes active, and its identity's window may start. */
  async recordGrants(tx: Tx, placed: readonly Placed[], now: number): Promise<LeaseRecord[]> {
    const out: LeaseRecord[] = [];
    for (const { grant: g } of placed) {
      const lease = await this.lease(tx, g.leaseId);
      if (!lease) throw new Error(`granted lease ${g.leaseId} is not in the store`);
      if (lease.status !== "queued") {
        // Another replica cancelled it just before: give the slots back (the cancel's message follows).
        this.state.undoPlacement(lease);
        continue;
      }
      const active = await this.accounts.step(tx, lease, now, (ledger) => grant(lease, g.assignment, ledger, now));
      this.state.live.set(active.id, active);
      out.push(active);
    }
    return out;
  }
}
