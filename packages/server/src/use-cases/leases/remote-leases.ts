import { placementRefusal, queueTimeoutOf } from "@gpupool/core";
import type { Policy, Problem } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { EngineRunner } from "../../engine/runner.js";
import type { LeaseRecord, Tx } from "../../storage/store.js";
import type { Accounts, IdentityQuota } from "../accounts/accounts.js";
import type { LeaseAnnouncer } from "./announcer.js";
import { queueTimeoutProblem } from "./lease-problems.js";
import type { LeaseWrites } from "./lease-writes.js";
import type { PoolState } from "./pool-state.js";

/** How many leases one catch-up transaction places at most (see RemoteLeases.catchUp). */
const CATCH_UP_BATCH = 50;

/** A lease the pool's half of admission turned down, as ended, and the problem it was refused with. */
interface Refused {
  readonly lease: LeaseRecord;
  readonly problem: Problem;
}

/**
 * The leader's use cases for leases other replicas admitted or ended (on a shared store): each
 * one an operation of the EngineRunner, like LeaderLeases' own (which hands these on).
 */
export class RemoteLeases {
  constructor(
    private readonly runner: EngineRunner,
    private readonly state: PoolState,
    private readonly writes: LeaseWrites,
    private readonly accounts: Accounts,
    private readonly announcer: LeaseAnnouncer,
    private readonly policy: Policy,
    private readonly clock: Clock,
  ) {}

  /**
   * A lease another replica admitted (stored queued, its quota reserved): the pool's half of
   * admission decides it here — it fails at once (refunded) if no GPU of its node could take it,
   * or it may not wait and no slot is free; else it is queued and the queue dispatched.
   * `told`: the lease as stored and its identity's quota-left share, when the word carried them
   * (it was sent in the admission's transaction, so the lease was stored as told): then it is read
   * (and locked) only to be granted or refused — a lease cancelled meanwhile is found so there,
   * and one cancelled while it waits is taken out of the queue by the word of its end.
   */
  adopt(
    id: string,
    queue: boolean,
    maxWaitMs: number | null = null,
    refuseLongWait = false,
    told: { lease: LeaseRecord; share: number } | null = null,
  ): Promise<void> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        if (this.state.live.has(id)) return null;
        const lease = told?.lease ?? (await tx.leases.get(id));
        if (!lease || lease.status !== "queued") return null;
        const refused = await this.place(tx, lease, queue, now, refuseLongWait ? maxWaitMs : null, told?.share);
        if (refused === "gone") return null;
        return {
          leases: [lease],
          ended: refused === null ? [] : [refused],
          grants: await this.writes.dispatch(tx, now),
        };
      },
      (out) => {
        if (out !== null) this.adopted(out, maxWaitMs);
      },
      // Read and locked (told or not) to be granted or refused.
      { lease: id },
    );
  }

  /**
   * Another replica ended a lease and said so in the transaction that ended it (so it is
   * committed, and `lease` is how it ended): free its slots or its place in line — memory only,
   * no transaction, unless the queue can now move — and tell the watchers here (the others heard
   * the same word).
   */
  async endedElsewhere(lease: LeaseRecord): Promise<void> {
    const freed = await this.runner.exclusive(async () => {
      const had = this.state.live.get(lease.id);
      if (!had) return false;
      this.state.undoPlacement(had);
      this.state.dequeue(lease.id);
      return true;
    });
    if (!freed) return;
    this.announcer.ended([lease], undefined, false);
    if (this.state.queueDepth > 0)
      await this.runner.run(
        (tx) => this.writes.dispatch(tx, this.clock.now()),
        (grants) => this.announcer.granted(grants),
      );
  }

  /**
   * After this replica takes the lead, once its memory is rebuilt: the store's live set read
   * again, so no lease another replica admitted in the meantime is missed — its word to the
   * leader came while this replica was still rebuilding (and was dropped), or went to the leader
   * that just stopped. Each queued lease not in memory is placed as `adopt` would place it (its
   * queue timeout counted from when it was admitted); a lease memory holds that the store has
   * ended is freed. At most CATCH_UP_BATCH at a time: `more` says to call it again.
   */
  async catchUp(): Promise<{ adopted: number; more: boolean }> {
    const now = this.clock.now();
    return await this.runner.run(
      async (tx) => {
        const live = await tx.leases.live();
        const stored = new Set(live.map((l) => l.id));
        const gone = [...this.state.live.keys()].filter((id) => !stored.has(id));
        const leases: LeaseRecord[] = [];
        const ended: Refused[] = [];
        let more = false;
        for (const found of live) {
          if (found.status !== "queued" || this.state.live.has(found.id)) continue;
          // A few at a time: each one locks its identity until the commit, and followers wait for those locks.
          if (leases.length + ended.length >= CATCH_UP_BATCH) {
            more = true;
            break;
          }
          // Read again, locked: another replica may be cancelling it right now.
          const lease = await tx.leases.get(found.id);
          if (!lease || lease.status !== "queued") continue;
          const limitMs = queueTimeoutOf(this.policy, this.policy.tiers[lease.tier]);
          const late = lease.queuedAt + limitMs <= now;
          const why = queueTimeoutProblem(lease, now, limitMs);
          const done = late
            ? { lease: await this.writes.finishQueued(tx, lease, "failed", now, why), problem: why }
            : await this.place(tx, lease, true, now);
          if (done === null) leases.push(lease);
          else if (done !== "gone") ended.push(done);
        }
        return { leases, ended, gone, more, grants: await this.writes.dispatch(tx, now) };
      },
      async (out) => {
        this.adopted(out);
        for (const id of out.gone) await this.forget(id);
        return { adopted: out.leases.length + out.ended.length, more: out.more };
      },
    );
  }

  /**
   * The pool's half of admission for a stored queued lease: refused (the lease as ended, and why),
   * or queued here (null); "gone" if, read again to be refused, it was no longer queued.
   */
  private async place(
    tx: Tx,
    lease: LeaseRecord,
    queue: boolean,
    now: number,
    /** Refuse it at once if it is expected to wait longer than this (predicted_wait); null: do not. */
    refuseBeyondMs: number | null = null,
    /** Its identity's quota-left share, if known (else read). */
    share?: number,
  ): Promise<Refused | null | "gone"> {
    const request = this.state.request(lease, share ?? (await this.shareBefore(tx, lease, now)));
    const refused = placementRefusal(
      this.policy,
      {
        size: { name: lease.size, slots: lease.slots, cost: lease.cost },
        node: lease.node,
        queue,
        ...(refuseBeyondMs === null ? {} : { maxWaitMs: refuseBeyondMs }),
      },
      this.state.placement(request, now),
      this.policy.tiers[lease.tier],
    );
    if (refused !== null) {
      // Read (and locked) again: the lease as told may have been cancelled since.
      const current = await tx.leases.get(lease.id);
      if (!current || current.status !== "queued") return "gone";
      return {
        lease: await this.writes.finishQueued(tx, current, "failed", now, refused.problem),
        problem: refused.problem,
      };
    }
    this.state.live.set(lease.id, lease);
    this.state.enqueue(request);
    return null;
  }

  /** Announces adopted leases: refusals, those that wait (the replica that admitted them waits for their place), grants. */
  private adopted(
    out: { leases: readonly LeaseRecord[]; ended: readonly Refused[]; grants: LeaseRecord[] },
    maxWaitMs: number | null = null,
  ): void {
    // With the problem itself, so its fields (a refusal's `reason`) reach the replica that admitted it.
    this.announcer.ended(
      out.ended.map((r) => r.lease),
      new Map(out.ended.map((r) => [r.lease.id, r.problem])),
    );
    for (const lease of out.leases)
      if (this.state.live.get(lease.id)?.status === "queued") this.announcer.queued(lease, true, maxWaitMs);
    this.announcer.granted(out.grants);
  }

  /** A lease another replica ended (released or cancelled): free its slots or its place in line. */
  forget(id: string): Promise<void> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        const had = this.state.live.get(id);
        const lease = await tx.leases.get(id);
        if (!had || !lease || lease.status === "queued" || lease.status === "active") return null;
        this.state.undoPlacement(had);
        this.state.dequeue(id);
        return { lease, grants: await this.writes.dispatch(tx, now) };
      },
      (out) => {
        if (out === null) return;
        this.announcer.ended([out.lease]);
        this.announcer.granted(out.grants);
      },
      { lease: id },
    );
  }

  /** What the lease's identity had left before this lease reserved its share (the scheduler's quota-left share). */
  async shareBefore(tx: Tx, lease: LeaseRecord, now: number): Promise<number> {
    const quota: IdentityQuota = await this.accounts.quota(tx, { kind: lease.identityKind, id: lease.identityId }, now);
    return quota.view.quotaMs > 0 ? Math.min(1, (quota.view.leftMs + lease.reservedMs) / quota.view.quotaMs) : 0;
  }
}
