import { decideAdmission, fail, identityKey, quotaLeftShare } from "@gpupool/core";
import type { Policy, QueuePlace } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { EngineRunner } from "../../engine/runner.js";
import type { Metrics } from "../../metrics.js";
import { newOrderedId } from "../../secrets.js";
import type { LeaseRecord, Tx } from "../../storage/store.js";
import type { Accounts, IdentityQuota } from "../accounts/accounts.js";
import type { LeaseAnnouncer, LeaseTimerKind } from "./announcer.js";
import { earlierUse, rememberKey, replayKind } from "./idempotency.js";
import { queueTimeoutProblem } from "./lease-problems.js";
import { admissionRequestOf, admittedLease } from "./admitted-lease.js";
import { grant } from "./lease-transitions.js";
import type { LeaseWrites } from "./lease-writes.js";
import { noLeaseTracing } from "./lease-tracing.js";
import type { LeaseTracing, RequestTrace } from "./lease-tracing.js";
import type { AdmitInput, AdmitResult, Released } from "./leases.js";
import type { PoolState } from "./pool-state.js";
import { RemoteLeases } from "./remote-leases.js";

/**
 * The lease use cases of the replica that runs the scheduler (always, on a store nobody shares):
 * admit, release or cancel, deadlines and queue timeouts, and the leases other replicas admitted
 * or ended. Each is one operation of the EngineRunner.
 */
export class LeaderLeases {
  constructor(
    private readonly runner: EngineRunner,
    private readonly state: PoolState,
    private readonly writes: LeaseWrites,
    private readonly accounts: Accounts,
    private readonly announcer: LeaseAnnouncer,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly metrics: Metrics | null,
    private readonly tracing: LeaseTracing = noLeaseTracing,
  ) {
    this.remote = new RemoteLeases(runner, state, writes, accounts, announcer, policy, clock);
  }

  private readonly remote: RemoteLeases;

  admit(input: AdmitInput): Promise<AdmitResult> {
    const started = performance.now();
    const now = this.clock.now();
    const leaseId = newOrderedId("ls", now);
    const request = admissionRequestOf(input, now, true);
    const traced = this.tracing.admission(input);
    const answer = this.runner.run(
      async (tx) => {
        const account = await this.accounts.forAdmission(tx, input.charged, request);
        const { identity } = account;
        // A retry with the same Idempotency-Key: the lease the first request made (the ledger read above took its lock).
        const earlier = await earlierUse(tx, input.idempotency, now);
        if (earlier.kind === "reused")
          return { kind: "denied" as const, problem: earlier.problem, retryAfterS: null, others: [] };
        if (earlier.kind === "same")
          return {
            kind: "replay" as const,
            lease: earlier.lease,
            others: [],
            quota: this.accounts.view(identity, account.overrideMs, account.ledger, account.billing),
          };
        const fields = {
          id: leaseId,
          appId: input.appId,
          identityKind: identity.kind,
          identityId: identity.id,
          tier: identity.tier,
          slots: input.size.slots,
          durationMs: input.durationMs,
          seq: 0,
          queuedAt: now,
          node: input.node,
          maxWaitMs: input.maxWaitMs ?? null,
        };
        const queued = this.state.request(fields, quotaLeftShare(this.policy, account));
        // Whatever could be placed already is placed first (normally nothing: the queue is
        // dispatched after every change), so the trial behind `placement` is exact.
        const before = await this.writes.dispatch(tx, now);
        const decision = decideAdmission(this.policy, account, request, this.state.placement(queued, now));
        if (decision.kind === "refused")
          return {
            kind: "denied" as const,
            problem: decision.problem,
            retryAfterS: decision.retryAfterS,
            others: before,
          };
        const placed = this.state.place(queued, now);
        const mine = placed.find((p) => p.grant.leaseId === leaseId);
        if ((decision.outcome === "granted") !== (mine !== undefined))
          throw new Error(
            `admission decided ${decision.outcome} for ${leaseId}, but the scheduler ${mine ? "granted" : "queued"} it`,
          );
        const call = {
          id: leaseId,
          appId: input.appId,
          size: input.size,
          durationMs: input.durationMs,
          node: input.node,
          maxWaitMs: input.maxWaitMs ?? null,
        };
        const { lease: lease0, billing } = await admittedLease(tx, this.accounts, account, decision, call, now);
        const next = mine
          ? grant(lease0, mine.grant.assignment, decision.ledger, now)
          : { lease: lease0, ledger: decision.ledger };
        const lease = await tx.leases.insert(next.lease);
        await this.accounts.save(tx, identity, next.ledger);
        await rememberKey(tx, input.idempotency, lease.id, now);
        this.state.live.set(lease.id, lease);
        const rest = placed.filter((p) => p !== mine);
        const others = rest.length === 0 ? before : [...before, ...(await this.writes.recordGrants(tx, rest, now))];
        const quota = this.accounts.view(identity, account.overrideMs, next.ledger, billing);
        // The other replicas' live views hear of it with the commit (no NOTIFY of its own).
        const place: QueuePlace | null = mine
          ? null
          : (this.state.position(leaseId, now) ?? { position: this.state.queueDepth, reason: "node", etaMs: null });
        const told = await this.announcer.tellWith(
          tx,
          place === null ? { type: "granted", id: leaseId } : { type: "queued", id: leaseId, ...place },
        );
        return { kind: mine ? ("granted" as const) : ("queued" as const), lease, others, quota, place, told };
      },
      (out): AdmitResult => {
        this.metrics?.ledgerTransaction("admit", (performance.now() - started) / 1000);
        this.announcer.granted(out.others);
        if (out.kind === "denied") {
          this.metrics?.denial(out.problem.code);
          return { kind: "denied", problem: out.problem, retryAfterS: out.retryAfterS };
        }
        if (out.kind === "replay") return this.replayed(out.lease, out.quota);
        if (out.kind === "granted") {
          this.announcer.grantedOnAdmission(out.lease, out.told);
          return { kind: "granted", lease: out.lease, quota: out.quota };
        }
        this.announcer.queued(out.lease, false, input.maxWaitMs, out.place, out.told);
        const place: QueuePlace = out.place ?? { position: 0, reason: "node", etaMs: null };
        // Answered here, not below: the queue wait starts before any later grant can end it.
        return traced.answered({ kind: "queued", lease: out.lease, place, quota: out.quota });
      },
      // Its ledger is what it locks first (Accounts.forAdmission).
      { ledger: identityKey(input.charged) },
    );
    void answer.then(
      (result) => traced.answered(result),
      (err: unknown) => traced.failed(err),
    );
    return answer;
  }

  /**
   * Release (or cancel, if still queued). Idempotent: a lease that already ended is returned as
   * it is. `failed` records that the caller's function failed; it does not change the charge.
   */
  release(leaseId: string, failed: boolean, trace?: RequestTrace): Promise<Released> {
    const started = performance.now();
    const now = this.clock.now();
    this.tracing.releasing(leaseId, trace);
    return this.runner.run(
      async (tx) => {
        const lease = await this.writes.lease(tx, leaseId);
        if (!lease) fail("not_found", `No lease ${leaseId}.`);
        const changed = lease.status === "queued" || lease.status === "active";
        const ended = !changed
          ? lease
          : lease.status === "queued"
            ? await this.writes.finishQueued(tx, lease, "cancelled", now, null)
            : await this.writes.finishActive(tx, lease, "released", now, null, failed);
        const grants = changed ? await this.writes.dispatch(tx, now) : [];
        const quota = await this.accounts.quota(tx, { kind: lease.identityKind, id: lease.identityId }, now);
        return { lease: ended, grants, changed, quota };
      },
      (out) => {
        this.metrics?.ledgerTransaction("release", (performance.now() - started) / 1000);
        if (out.changed) {
          this.announcer.ended([out.lease]);
          this.announcer.granted(out.grants);
        }
        return { lease: out.lease, quota: out.quota };
      },
      { lease: leaseId },
    );
  }

  /** A lease's timer fired: its deadline (expire it) or its queue timeout (fail it, refunded). */
  async onTimer(leaseId: string, due: LeaseTimerKind): Promise<void> {
    const now = this.clock.now();
    const elsewhere = await this.runner.run(
      async (tx) => {
        const lease = await this.writes.lease(tx, leaseId);
        if (!lease || lease.status !== (due === "deadline" ? "active" : "queued")) {
          // Ended by another replica whose word has not arrived (or was lost): free it now.
          return { kind: lease !== null && this.state.live.has(leaseId) ? ("elsewhere" as const) : ("gone" as const) };
        }
        // Timers can fire a little early; never expire a lease before its deadline.
        if (due === "deadline" && lease.deadline !== null && lease.deadline > now)
          return { kind: "early" as const, lease };
        const ended =
          due === "deadline"
            ? await this.writes.finishActive(tx, lease, "expired", now)
            : await this.writes.finishQueued(
                tx,
                lease,
                "failed",
                now,
                queueTimeoutProblem(lease, now, this.announcer.queueLimitMs(lease)),
              );
        return { kind: "ended" as const, lease: ended, grants: await this.writes.dispatch(tx, now) };
      },
      (out) => {
        if (out.kind === "early") this.announcer.armDeadline(out.lease);
        if (out.kind === "ended") {
          this.announcer.ended([out.lease]);
          this.announcer.granted(out.grants);
        }
        return out.kind === "elsewhere";
      },
      { lease: leaseId },
    );
    if (elsewhere) await this.forget(leaseId);
  }

  /** A lease another replica admitted: see RemoteLeases.adopt. */
  adopt(
    id: string,
    queue: boolean,
    maxWaitMs: number | null = null,
    refuseLongWait = false,
    told: { lease: LeaseRecord; share: number } | null = null,
  ): Promise<void> {
    return this.remote.adopt(id, queue, maxWaitMs, refuseLongWait, told);
  }

  /** Another replica ended a lease and said how: see RemoteLeases.endedElsewhere. */
  endedElsewhere(lease: LeaseRecord): Promise<void> {
    return this.remote.endedElsewhere(lease);
  }

  /** After this replica takes the lead: see RemoteLeases.catchUp. */
  catchUp(): Promise<{ adopted: number; more: boolean }> {
    return this.remote.catchUp();
  }

  /** A lease another replica ended (released or cancelled): free its slots or its place in line. */
  forget(id: string): Promise<void> {
    return this.remote.forget(id);
  }

  /** An app's concurrency limit changed: its waiting calls may go now (or must wait). */
  setAppLimit(appId: string, limit: number | null): Promise<void> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        this.state.setAppLimit(appId, limit);
        return this.writes.dispatch(tx, now);
      },
      (grants) => this.announcer.granted(grants),
    );
  }

  /** The answer to a retry (same Idempotency-Key): the lease as it stands now. */
  private replayed(lease: LeaseRecord, quota: IdentityQuota): AdmitResult {
    const kind = replayKind(lease);
    if (kind !== "queued") return { kind, lease, quota };
    const place = this.state.position(lease.id, this.clock.now()) ?? { position: 0, reason: "node", etaMs: null };
    return { kind, lease, place, quota };
  }

  /** Someone on another replica watches a queued lease. */
  watchRemote(id: string): void {
    this.announcer.watchRemote(id);
  }

  liveLease(leaseId: string): LeaseRecord | null {
    return this.writes.liveLease(leaseId);
  }

  position(leaseId: string): QueuePlace | null {
    return this.state.position(leaseId, this.clock.now());
  }

  /** For recovery: re-queues a lease recovered queued. */
  async requeue(tx: Tx, lease: LeaseRecord, now: number): Promise<void> {
    this.state.live.set(lease.id, lease);
    this.state.enqueue(this.state.request(lease, await this.remote.shareBefore(tx, lease, now)));
  }
}
