import { EMPTY_LEDGER, fail, identityKey, problem, quotaView, rollWindow, tierOf } from "@gpupool/core";
import type { QueuePlace } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { LeaseEvents } from "../events.js";
import { newOrderedId } from "../secrets.js";
import type { LeaseRecord, Store } from "../storage/store.js";
import { chargedIdentity } from "./charged-identity.js";
import type { AdmitInput, AdmitResult } from "./lease-engine.js";
import { admitted, endActive, endQueued } from "./lease-transitions.js";
import type { IdentityQuota } from "./quota.js";
import { readQuota, reserveWithRetryTime } from "./quota.js";
import type { LeaderMessage, LeaseBroadcast } from "./replica-messages.js";
import type { Policy } from "@gpupool/core";

/** How long a follower waits for the leader to place a lease it admitted before answering 202. */
const VERDICT_WAIT_MS = 2_000;

/**
 * The lease use cases on a replica that does not lead (PostgreSQL, several replicas). The ledger
 * is changed here, under the database's row locks, exactly as on the leader — so admission is
 * atomic across replicas — but slots and the queue belong to the leader: an admitted lease is
 * stored queued and the leader is told to place it; a release frees the lease in the database
 * and tells the leader to free its slots. The answer waits (briefly) for the leader's verdict, so
 * a caller still gets 201 when a GPU was free.
 */
export class LeaseFollower {
  /** The latest queue place the leader announced for each queued lease. */
  private readonly places = new Map<string, QueuePlace>();
  /** Admissions waiting for the leader's first word on their lease. */
  private readonly waiting = new Map<string, (b: LeaseBroadcast) => void>();

  constructor(
    private readonly store: Store,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly events: LeaseEvents,
    private readonly tellLeader: (m: LeaderMessage) => Promise<void>,
    private readonly log: Logger,
  ) {}

  position(leaseId: string): QueuePlace | null {
    return this.places.get(leaseId) ?? null;
  }

  async admit(input: AdmitInput): Promise<AdmitResult> {
    const now = this.clock.now();
    const leaseId = newOrderedId("ls", now);
    // May run more than once (see Store.transaction on PostgreSQL): statements and pure computation
    // only; a second run inserts the same lease id, the first having been rolled back.
    const staged = await this.store.transaction(async (tx) => {
      const { identity, overrideMs } = await chargedIdentity(tx, this.policy, input.charged);
      const key = identityKey(identity);
      const tier = tierOf(this.policy, identity.tier);
      if (input.node !== null && (await tx.nodes.getByName(input.node))?.devices == null) {
        return { kind: "denied" as const, retryAfterS: 5, problem: problem("no_gpu_available", `Node ${input.node} has no GPUs in the pool right now: its agent has not registered, or stopped heartbeating. Nothing was reserved; check the agent on that host (gpupool pool shows the nodes).`, { reason: "node_not_registered" }) };
      }
      const ledger = rollWindow((await tx.ledgers.get(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs);
      const outcome = await reserveWithRetryTime(tx, { policy: this.policy, identity, tier, overrideMs, ledger, durationMs: input.durationMs, size: input.size, now, via: input.via });
      if (!outcome.ok) return { kind: "denied" as const, problem: outcome.problem, retryAfterS: outcome.retryAfterS };
      const lease = await tx.leases.insert(admitted({ id: leaseId, appId: input.appId, identity, size: input.size, durationMs: input.durationMs, reservedMs: outcome.reservedMs, now, windowStartedAt: outcome.ledger.windowStartedAt, node: input.node }));
      await tx.ledgers.put(key, outcome.ledger);
      const quota: IdentityQuota = { identity, view: quotaView(outcome.ledger, tier, overrideMs, this.policy.windowMs) };
      return { kind: "stored" as const, lease, quota };
    });
    if (staged.kind === "denied") return staged;
    const verdict = new Promise<LeaseBroadcast | null>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(leaseId);
        resolve(null);
      }, VERDICT_WAIT_MS);
      timer.unref();
      this.waiting.set(leaseId, (b) => {
        clearTimeout(timer);
        this.waiting.delete(leaseId);
        resolve(b);
      });
    });
    await this.tellLeader({ op: "admitted", id: leaseId, queue: input.queue });
    const word = await verdict;
    const fresh = await this.store.transaction(async (tx) => ({ lease: await tx.leases.get(leaseId), quota: await readQuota(tx, this.policy, input.charged, this.clock.now()) }));
    const lease = fresh.lease ?? staged.lease;
    const answer = admissionAnswer(lease);
    if (answer === "granted") return { kind: "granted", lease, quota: fresh.quota };
    if (answer === "refused") {
      // The leader turned it down (queue: false with no free slot, no GPU that could ever fit).
      const why = lease.problemCode === null ? problem("no_gpu_available", "The request ended before it was granted.") : problem(lease.problemCode as "no_gpu_available", lease.problemDetail ?? "");
      return { kind: "denied", problem: why, retryAfterS: 5 };
    }
    // No word from the leader in time (none is leading right now, or it is slow): the lease is
    // stored and waits; whichever replica leads next places it.
    const place = word?.type === "queued" ? word : this.places.get(leaseId);
    return { kind: "queued", lease, position: place?.position ?? 0, reason: place?.reason ?? "node", etaMs: place?.etaMs ?? null, quota: fresh.quota };
  }

  /**
   * Release or cancel in the database, then tell the leader (and every watcher). Idempotent.
   *
   * Locks: `leases.get` takes the lease's identity's ledger lock before it locks the lease row and
   * reads its status (the order every replica takes them in, leader included: see the PostgreSQL
   * adapter's postgresTx), so a cancel here and the leader granting that same lease while it
   * releases another of the identity take turns instead of deadlocking.
   */
  async release(leaseId: string, failed: boolean): Promise<{ lease: LeaseRecord; quota: IdentityQuota }> {
    // Run again if the database broke a deadlock against it: it does nothing but its statements
    // until it returns (the clock is read inside, so a second run ends the lease at its own time).
    const out = await this.store.transaction(async (tx) => {
      const now = this.clock.now();
      const lease = await tx.leases.get(leaseId);
      if (!lease) fail("not_found", `No lease ${leaseId}.`);
      let ended = lease;
      if (lease.status === "queued" || lease.status === "active") {
        const key = identityKey({ kind: lease.identityKind, id: lease.identityId });
        const ledger = rollWindow((await tx.ledgers.get(key)) ?? EMPTY_LEDGER, now, this.policy.windowMs);
        const next = lease.status === "queued" ? endQueued(lease, ledger, "cancelled", now, null, this.policy.windowMs) : endActive(lease, ledger, "released", now, null, failed);
        await tx.ledgers.put(key, next.ledger);
        await tx.leases.update(next.lease);
        ended = next.lease;
      }
      return { lease: ended, changed: ended !== lease, quota: await readQuota(tx, this.policy, { kind: lease.identityKind, id: lease.identityId }, now) };
    });
    if (out.changed) {
      this.places.delete(leaseId);
      this.events.emit(leaseId, { type: "ended", lease: out.lease });
      await this.tellLeader({ op: "ended", id: leaseId }).catch((err: unknown) => this.log.warn({ err, leaseId }, "could not tell the leader about a release; it frees the slots when it next recovers"));
    }
    return { lease: out.lease, quota: out.quota };
  }

  /** Someone here watches a queued lease: ask the leader for its place. */
  watch(leaseId: string): void {
    this.tellLeader({ op: "watch", id: leaseId }).catch((err: unknown) => this.log.warn({ err, leaseId }, "could not ask the leader for a queue place"));
  }

  /** The leader announced a change: answer a waiting admission, and tell local watchers. */
  async onBroadcast(b: LeaseBroadcast): Promise<void> {
    this.waiting.get(b.id)?.(b);
    if (b.type === "queued") {
      const place: QueuePlace = { position: b.position, reason: b.reason, etaMs: b.etaMs };
      this.places.set(b.id, place);
      this.events.emit(b.id, { type: "queued", ...place });
      return;
    }
    this.places.delete(b.id);
    if (!this.events.subscribed().includes(b.id)) return;
    const lease = await this.store.transaction((tx) => tx.leases.get(b.id));
    if (lease === null) return;
    if (b.type === "failed") this.events.emit(b.id, { type: "failed", lease, problem: b.problem });
    else this.events.emit(b.id, { type: b.type, lease });
  }
}

/**
 * What a follower answers for a lease it stored and handed to the leader, read back afterwards:
 * granted if the leader gave it a GPU — even if it is already over (a short lease can end before a
 * slow answer gets back; the record says how it ended) —, still queued, or refused (the leader
 * ended it without a grant: queue: false with no free slot, or no GPU that could ever take it).
 */
export function admissionAnswer(lease: LeaseRecord): "granted" | "queued" | "refused" {
  if (lease.status === "active" || lease.grantedAt !== null) return "granted";
  return lease.status === "queued" ? "queued" : "refused";
}
