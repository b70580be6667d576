import {
  billingOf,
  decideAdmission,
  fail,
  predictedWaitHeadroomOf,
  predictedWaitRetryS,
  problem,
  quotaLeftShare,
  startWindow,
} from "@gpupool/core";
import type { Placement, Policy, Problem, QueuePlace } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { LeaseEvents } from "../events.js";
import { newOrderedId } from "../secrets.js";
import type { LeaseRecord, Store, Tx } from "../storage/store.js";
import type { Accounts } from "../use-cases/accounts/accounts.js";
import { admissionRequestOf, admittedLease } from "../use-cases/leases/admitted-lease.js";
import { endActive, endQueued } from "../use-cases/leases/lease-transitions.js";
import type { IdentityQuota } from "../use-cases/accounts/accounts.js";
import { earlierUse, rememberKey, replayKind } from "../use-cases/leases/idempotency.js";
import type { AdmitInput, AdmitResult, LeaseLifecycle, Released } from "../use-cases/leases/leases.js";
import { EVENTS_CHANNEL, LEADER_CHANNEL } from "./messages.js";
import type { LeaderMessage, LeaseBroadcast } from "./messages.js";

/** How long a follower waits for the leader to place a lease it admitted before answering 202. */
const VERDICT_WAIT_MS = 2_000;

/**
 * The lease lifecycle on a replica that does not lead (PostgreSQL, several replicas). The ledger
 * is changed here, under the database's row locks, exactly as on the leader — so admission is
 * atomic across replicas — but slots and the queue belong to the leader: an admitted lease is
 * stored queued and the leader is told to place it; a release ends the lease in the database
 * and tells the leader to free its slots. The answer waits (briefly) for the leader's verdict, so
 * a caller still gets 201 when a GPU was free.
 */
export class FollowerLeases implements LeaseLifecycle {
  /** The latest queue place the leader announced for each queued lease. */
  private readonly places = new Map<string, QueuePlace>();
  /** Admissions waiting for the leader's first word on their lease. */
  private readonly waiting = new Map<string, (b: LeaseBroadcast) => void>();

  constructor(
    private readonly store: Store,
    private readonly accounts: Accounts,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly events: LeaseEvents,
    private readonly tellLeader: (m: LeaderMessage) => Promise<void>,
    private readonly log: Logger,
    /** This replica's id in broadcasts (its own are not relayed back to it). */
    private readonly replicaId = "",
  ) {}

  position(leaseId: string): QueuePlace | null {
    return this.places.get(leaseId) ?? null;
  }

  liveLease(): LeaseRecord | null {
    return null;
  }

  async admit(input: AdmitInput): Promise<AdmitResult> {
    const now = this.clock.now();
    const leaseId = newOrderedId("ls", now);
    const request = admissionRequestOf(input, now, false);
    // Waiting for the leader's word before it can come: it is sent when the admission commits,
    // and the leader may answer before the commit's answer gets back here.
    let settle!: (b: LeaseBroadcast | null) => void;
    const verdict = new Promise<LeaseBroadcast | null>((resolve) => (settle = resolve));
    this.waiting.set(leaseId, (b) => settle(b));
    const timers: NodeJS.Timeout[] = [];
    const done = (): void => {
      for (const t of timers) clearTimeout(t);
      this.waiting.delete(leaseId);
    };
    const staged = await this.stage(input, request, leaseId, now).catch((err: unknown) => {
      done();
      throw err;
    });
    if (staged.kind !== "stored") done();
    if (staged.kind === "denied") return staged;
    if (staged.kind === "replay") return this.answer(staged.lease, staged.quota, undefined, input.charged);
    // From here on the lease exists, its quota reserved: whatever fails, the answer says so (the lease, 202).
    timers.push(setTimeout(() => settle(null), VERDICT_WAIT_MS).unref());
    void verdict.then(done);
    if (!staged.told)
      await this.tellLeader(staged.message).catch((err: unknown) => {
        this.log.warn({ err, leaseId }, "could not tell the leader about an admitted lease; trying again");
        this.tellLater(staged.message);
        settle(null);
      });
    const word = await verdict;
    // The leader granted it and said how: the answer needs nothing read again.
    if (word?.type === "granted" && word.lease !== undefined && word.lease.grantedAt !== null) {
      const { identity, overrideMs, ledger, billing } = staged.account;
      const quota = this.accounts.view(identity, overrideMs, startWindow(ledger, word.lease.grantedAt), billing);
      return { kind: "granted", lease: word.lease, quota };
    }
    if (word?.type === "queued" || word?.type === "failed")
      return this.answer(staged.lease, staged.quota, word, input.charged, false);
    return this.answer(staged.lease, staged.quota, word, input.charged);
  }

  /**
   * The admission's transaction: the quota reserved and the lease stored queued, and the leader
   * told to place it — in the same transaction (its NOTIFY goes out at COMMIT), with the lease and
   * its quota share, so the leader need not read them. May run more than once
   * (Store.transaction): statements and pure computation only; a second run inserts the same lease
   * id, the first having been rolled back.
   */
  private stage(input: AdmitInput, request: ReturnType<typeof admissionRequestOf>, leaseId: string, now: number) {
    return this.inGroup(async (tx) => {
      const account = await this.accounts.forAdmission(tx, input.charged, request);
      const { identity } = account;
      // A retry with the same Idempotency-Key: the lease the first request made (the ledger read above took its lock).
      const earlier = await earlierUse(tx, input.idempotency, now);
      if (earlier.kind === "reused") return { kind: "denied" as const, problem: earlier.problem, retryAfterS: null };
      if (earlier.kind === "same")
        return {
          kind: "replay" as const,
          lease: earlier.lease,
          quota: this.accounts.view(identity, account.overrideMs, account.ledger, account.billing),
        };
      // Slots and the queue are the leader's: it places the lease once it is stored.
      const placement: Placement =
        input.node !== null && (await tx.nodes.getByName(input.node))?.devices == null
          ? { kind: "node_missing" }
          : { kind: "later" };
      const decision = decideAdmission(this.policy, account, request, placement);
      if (decision.kind === "refused")
        return { kind: "denied" as const, problem: decision.problem, retryAfterS: decision.retryAfterS };
      const call = {
        id: leaseId,
        appId: input.appId,
        size: input.size,
        durationMs: input.durationMs,
        node: input.node,
        maxWaitMs: input.maxWaitMs ?? null,
      };
      const admitted = await admittedLease(tx, this.accounts, account, decision, call, now);
      const lease = await tx.leases.insert(admitted.lease);
      await this.accounts.save(tx, identity, decision.ledger);
      await rememberKey(tx, input.idempotency, lease.id, now);
      const message: LeaderMessage = {
        op: "admitted",
        id: leaseId,
        queue: input.queue,
        ...(input.maxWaitMs === undefined || input.maxWaitMs === null ? {} : { max_wait_ms: input.maxWaitMs }),
        ...(input.refuseLongWait === true ? { refuse_long_wait: true } : {}),
        lease,
        share: quotaLeftShare(this.policy, account),
      };
      if (tx.publish !== undefined) await tx.publish(LEADER_CHANNEL, JSON.stringify(message));
      return {
        kind: "stored" as const,
        lease,
        message,
        told: tx.publish !== undefined,
        quota: this.accounts.view(identity, account.overrideMs, decision.ledger, admitted.billing),
        account: { identity, overrideMs: account.overrideMs, ledger: decision.ledger, billing: admitted.billing },
      };
    });
  }

  /**
   * The answer for a stored lease, read back (the leader may have granted or refused it): granted
   * if the leader gave it a GPU — even if it is already over (a short lease can end before a slow
   * answer gets back; the record says how it ended) —, still queued, or refused. If it cannot be
   * read back, the lease as stored: it exists and waits, and the leader places it.
   * `word`: the leader's first word on it (undefined: a retry, nothing was asked of the leader).
   */
  private async answer(
    stored: LeaseRecord,
    storedQuota: IdentityQuota,
    word: LeaseBroadcast | null | undefined,
    charged: AdmitInput["charged"],
    /** False when the leader's word says all there is (queued: its place; refused: its problem): nothing is read again. */
    readBack = true,
  ): Promise<AdmitResult> {
    const fresh = !readBack
      ? { lease: stored, quota: storedQuota }
      : await this.store
          .transaction(async (tx) => ({
            lease: await tx.leases.get(stored.id),
            quota: await this.accounts.quota(tx, charged, this.clock.now()),
          }))
          .catch((err: unknown) => {
            this.log.warn({ err, leaseId: stored.id }, "could not read an admitted lease back; answering it as stored");
            return { lease: stored, quota: storedQuota };
          });
    const lease = fresh.lease ?? stored;
    // The leader's refusal is final (the record, read back or not, says failed).
    const answer =
      word?.type === "failed" ? "refused" : word === undefined ? replayKind(lease) : admissionAnswer(lease);
    if (answer === "granted") return { kind: "granted", lease, quota: fresh.quota };
    if (answer === "ended") return { kind: "ended", lease, quota: fresh.quota };
    if (answer === "refused") {
      // The leader turned it down (the pool's half of admission: no GPU that could ever take it, queue: false with no free slot, a full queue).
      // The leader's word carries the problem itself (with its `reason`); the record only its code and detail.
      const why =
        word?.type === "failed"
          ? word.problem
          : lease.problemCode === null
            ? problem("no_gpu_available", "The request ended before it was granted.")
            : problem(lease.problemCode as "no_gpu_available", lease.problemDetail ?? "");
      return { kind: "denied", problem: why, retryAfterS: retryAfterOf(why, predictedWaitHeadroomOf(this.policy)) };
    }
    // No word from the leader in time (none is leading right now, or it is slow): the lease is
    // stored and waits; whichever replica leads next places it.
    const place = word?.type === "queued" ? word : this.places.get(lease.id);
    return {
      kind: "queued",
      lease,
      place: {
        position: place?.position ?? 0,
        reason: place?.reason ?? "node",
        etaMs: place?.etaMs ?? null,
        expectedMs: place?.expectedMs ?? null,
      },
      quota: fresh.quota,
    };
  }

  /** Tells the leader again, a few times, backing off (a lost word would leave the lease unplaced until the next leader reads the store). */
  private tellLater(m: LeaderMessage, attempt = 1): void {
    if (attempt > 6) {
      this.log.error({ leaseId: "id" in m ? m.id : null }, "could not tell the leader; the next leader places it");
      return;
    }
    setTimeout(() => void this.tellLeader(m).catch(() => this.tellLater(m, attempt + 1)), 250 * 2 ** attempt).unref();
  }

  /**
   * Release or cancel in the database, then tell the leader (and every watcher). Idempotent.
   *
   * Locks: reading the lease takes its identity's ledger lock before it locks the lease row (the
   * order every replica takes them in, leader included: see the PostgreSQL adapter's postgresTx),
   * so a cancel here and the leader granting that same lease while it releases another of the
   * identity take turns instead of deadlocking.
   */
  async release(leaseId: string, failed: boolean): Promise<Released> {
    // Run again if the database broke a deadlock against it: it does nothing but its statements
    // until it returns (the clock is read inside, so a second run ends the lease at its own time).
    const out = await this.inGroup(async (tx) => {
      const now = this.clock.now();
      const lease = await tx.leases.get(leaseId);
      if (!lease) fail("not_found", `No lease ${leaseId}.`);
      let ended = lease;
      if (lease.status === "queued")
        ended = await this.accounts.step(tx, lease, now, (ledger) =>
          endQueued(lease, ledger, "cancelled", now, null, this.policy.windowMs),
        );
      else if (lease.status === "active")
        ended = await this.accounts.step(tx, lease, now, (ledger) =>
          endActive(lease, ledger, "released", now, null, failed, billingOf(this.policy).overage.pricePerMinuteMicros),
        );
      const changed = ended !== lease;
      // Everyone hears it — the leader frees the slots — once it is committed: one NOTIFY, in this transaction.
      const told = changed && tx.publish !== undefined;
      if (told) await tx.publish?.(EVENTS_CHANNEL, JSON.stringify(endedBroadcast(ended, this.replicaId)));
      return {
        lease: ended,
        changed,
        told,
        quota: await this.accounts.quota(tx, { kind: lease.identityKind, id: lease.identityId }, now),
      };
    });
    if (out.changed) {
      this.places.delete(leaseId);
      this.events.emit(leaseId, { type: "ended", lease: out.lease });
      if (!out.told)
        await this.tellLeader({ op: "ended", id: leaseId }).catch((err: unknown) =>
          this.log.warn(
            { err, leaseId },
            "could not tell the leader about a release; it frees the slots when it next recovers",
          ),
        );
    }
    return { lease: out.lease, quota: out.quota };
  }

  /**
   * An admission's or a release's transaction: in the store's group commit where it has one (the
   * concurrent ones share a BEGIN, a COMMIT and its WAL flush; see Store.groupedTransaction).
   */
  private inGroup<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.store.groupedTransaction !== undefined ? this.store.groupedTransaction(fn) : this.store.transaction(fn);
  }

  /** Someone here watches a queued lease: ask the leader for its place. */
  watch(leaseId: string): void {
    this.tellLeader({ op: "watch", id: leaseId }).catch((err: unknown) =>
      this.log.warn({ err, leaseId }, "could not ask the leader for a queue place"),
    );
  }

  /** The leader announced a change: answer a waiting admission, and tell local watchers. */
  async heard(b: LeaseBroadcast): Promise<void> {
    this.waiting.get(b.id)?.(b);
    // The dashboard's live views on this replica look again (the pool, the queue, a user's meter).
    this.events.changed();
    if (b.type === "queued") {
      const place: QueuePlace = {
        position: b.position,
        reason: b.reason,
        etaMs: b.etaMs,
        expectedMs: b.expectedMs ?? null,
      };
      this.places.set(b.id, place);
      this.events.emit(b.id, { type: "queued", ...place });
      return;
    }
    this.places.delete(b.id);
    if (!this.events.subscribed().includes(b.id)) return;
    const lease = b.lease ?? (await this.store.transaction((tx) => tx.leases.get(b.id)));
    if (lease === null) return;
    if (b.type === "failed") this.events.emit(b.id, { type: "failed", lease, problem: b.problem });
    else this.events.emit(b.id, { type: b.type, lease });
  }
}

/** What a replica that ended a lease tells every other (the leader frees its slots), with the lease as ended. */
export function endedBroadcast(lease: LeaseRecord, from: string): LeaseBroadcast & { from: string } {
  return { type: "ended", id: lease.id, lease, from };
}

/**
 * What a follower answers for a lease it stored and handed to the leader, read back afterwards:
 * granted if the leader gave it a GPU — even if it is already over (a short lease can end before a
 * slow answer gets back; the record says how it ended) —, still queued, or refused (the leader
 * ended it without a grant).
 */
export function admissionAnswer(lease: LeaseRecord): "granted" | "queued" | "refused" {
  if (lease.status === "active" || lease.grantedAt !== null) return "granted";
  return lease.status === "queued" ? "queued" : "refused";
}

/**
 * When to retry a call the leader refused: for `predicted_wait`, from the refusal's expected wait
 * and what the call may wait, as the leader answers it; else in a few seconds.
 */
function retryAfterOf(p: Problem, headroom: number): number {
  const etaS = p["eta_s"];
  const maxWaitS = p["max_wait_s"];
  if (p["reason"] === "predicted_wait" && typeof etaS === "number" && typeof maxWaitS === "number")
    return predictedWaitRetryS(etaS, maxWaitS, headroom);
  return 5;
}
