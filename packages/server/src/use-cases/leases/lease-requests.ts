import { fail, problem } from "@gpupool/core";
import type { Policy, Problem, QueuePlace } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { LeaseEvents } from "../../events.js";
import type { Metrics } from "../../metrics.js";
import type { LeaseRecord, LeaseStatus, Store } from "../../storage/store.js";
import type { Accounts, IdentityQuota } from "../accounts/accounts.js";
import type { RefusalLog } from "../accounts/refusals.js";
import type { Caller, Callers } from "../identity/callers.js";
import type { IpTokenHeader, RequestIdentity } from "../identity/request-identity.js";
import { idempotencyKey } from "./idempotency.js";
import { queueTimeoutProblemFrom } from "./lease-problems.js";
import { sizeNamed } from "./sizes.js";
import type { AdmitResult, LeaseLifecycle, Released } from "./leases.js";
import type { RequestTrace } from "./lease-tracing.js";

export interface LeaseRequest {
  readonly ipToken: IpTokenHeader;
  /** X-Gpupool-Node-Key: an agent asking on behalf of an app on its host (only that node's GPUs will do). */
  readonly nodeKey: string | null;
  /** Idempotency-Key: a retry with the same key gets the same lease (see idempotency.ts). */
  readonly idempotencyKey?: string | null | undefined;
  /** Seconds; the policy's default when absent. */
  readonly duration?: number | undefined;
  readonly size?: string | undefined;
  readonly queue?: boolean | undefined;
  /** Seconds the caller will wait for a slot; absent: the tier's queue timeout. */
  readonly maxWait?: number | undefined;
  /** The request's trace context (when tracing is on). */
  readonly trace?: RequestTrace;
}

/** A lease as a caller sees it: the record, its queue place while queued, and its identity's quota. */
export interface LeaseView {
  readonly lease: LeaseRecord;
  readonly place: QueuePlace | null;
  readonly quota: IdentityQuota | null;
}

/** What a watcher of a lease hears, in order: the current state, then each change, ending with the last. */
export type LeaseUpdate =
  | { readonly type: "queued"; readonly place: QueuePlace }
  | { readonly type: "granted"; readonly lease: LeaseRecord; readonly quota: IdentityQuota | null }
  | { readonly type: "failed"; readonly problem: Problem }
  | { readonly type: "ended"; readonly lease: LeaseRecord; readonly quota: IdentityQuota | null };

/**
 * The lease API's use cases, as a caller (an app key, a user token, the admin) reaches them:
 * who is charged, then the lease lifecycle; and which leases each caller may see. A lease is
 * visible to the app that made it, the user it is charged to, and the admin; a user may end only
 * the leases of their own scripts (made with their user token, not through an app).
 */
export class LeaseRequests {
  constructor(
    private readonly lifecycle: LeaseLifecycle,
    private readonly identity: RequestIdentity,
    private readonly callers: Callers,
    private readonly store: Store,
    private readonly accounts: Accounts,
    private readonly events: LeaseEvents,
    private readonly metrics: Metrics,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly refusals: RefusalLog | null = null,
  ) {}

  async request(caller: Caller & { kind: "app" | "user" }, input: LeaseRequest): Promise<AdmitResult> {
    const node = await this.callers.nodeByKey(input.nodeKey);
    const attribution = await this.identity.of(caller, input.ipToken);
    if (!attribution.ok) {
      this.metrics.denial(attribution.problem.code);
      return { kind: "denied", problem: attribution.problem, retryAfterS: null };
    }
    const size = sizeNamed(this.policy, input.size);
    const durationMs = input.duration === undefined ? this.policy.defaultDurationMs : Math.round(input.duration * 1000);
    const queue = input.queue ?? true;
    const nodeName = node?.name ?? null;
    const scope = caller.kind === "app" ? { kind: "app", id: caller.app.id } : { kind: "user", id: caller.user.id };
    const result = await this.lifecycle.admit({
      appId: caller.kind === "app" ? caller.app.id : null,
      charged: attribution.charged,
      via: attribution.via,
      durationMs,
      size,
      queue,
      node: nodeName,
      idempotency: idempotencyKey(input.idempotencyKey ?? null, scope, attribution.charged, {
        durationMs,
        size: size.name,
        queue,
        node: nodeName,
      }),
      ...this.maxWaitOf(input, node !== null),
      ...(input.trace === undefined ? {} : { trace: input.trace }),
    });
    if (result.kind === "denied") {
      const { charged } = attribution;
      const tier =
        typeof result.problem["tier"] === "string"
          ? result.problem["tier"]
          : charged.kind === "user"
            ? ""
            : "anonymous";
      this.refusals?.note(
        `${charged.kind}:${charged.id}`,
        caller.kind === "app" ? caller.app.id : null,
        tier,
        result.problem.code,
        this.clock.now(),
      );
    }
    return result;
  }

  /**
   * How long the call will wait: what it named (max_wait), else its tier's queue timeout; and
   * whether it is refused at once when expected to wait longer (`queue.predicted_wait`) — not
   * through a node's agent (the device API) that named no max_wait, which queues as before unless
   * `queue.predicted_wait_via_agents` is set.
   */
  private maxWaitOf(input: LeaseRequest, viaAgent: boolean): { maxWaitMs: number | null; refuseLongWait: boolean } {
    const maxWaitMs = input.maxWait === undefined ? null : Math.round(input.maxWait * 1000);
    const honest = this.policy.predictedWait !== false;
    const agentDefault = viaAgent && maxWaitMs === null && this.policy.predictedWaitViaAgents !== true;
    return { maxWaitMs, refuseLongWait: honest && !agentDefault };
  }

  async get(caller: Caller, id: string): Promise<LeaseView> {
    const lease = await this.visible(caller, id, false);
    return { lease, place: this.placeOf(lease), quota: await this.quotaOf(lease) };
  }

  /**
   * A page of the caller's leases, newest first: an app's own, a user's (charged to them), or all
   * for the admin; those that arrived before `before` (a seq) when given. `next`: the seq to list
   * the next page before (null on the last page).
   */
  async list(
    caller: Caller,
    filter: { status?: LeaseStatus | undefined; limit: number; before: number | null },
  ): Promise<{ leases: { lease: LeaseRecord; place: QueuePlace | null }[]; next: number | null }> {
    const rows = await this.store.read((tx) =>
      tx.leases.list({
        limit: filter.limit + 1,
        ...(filter.status ? { status: filter.status } : {}),
        ...(filter.before !== null ? { before: filter.before } : {}),
        ...(caller.kind === "app" ? { appId: caller.app.id } : {}),
        ...(caller.kind === "user" ? { identity: { kind: "user" as const, id: caller.user.id } } : {}),
      }),
    );
    const leases = rows.slice(0, filter.limit);
    const next = rows.length > filter.limit ? (leases[leases.length - 1]?.seq ?? null) : null;
    return { leases: leases.map((lease) => ({ lease, place: this.placeOf(lease) })), next };
  }

  async release(caller: Caller, id: string, failed: boolean, trace?: RequestTrace): Promise<Released> {
    await this.visible(caller, id, true);
    return this.lifecycle.release(id, failed, trace);
  }

  /**
   * Follows a lease: `listener` hears its current state at once, then each change; a terminal
   * update (granted, failed, ended) is the last. Returns how to stop listening.
   */
  async follow(caller: Caller, id: string, listener: (u: LeaseUpdate) => void): Promise<() => void> {
    const lease = await this.visible(caller, id, false);
    const quota = await this.quotaOf(lease);
    let done = false;
    const hear = (u: LeaseUpdate): void => {
      if (done) return;
      if (u.type !== "queued") done = true;
      listener(u);
      if (done) unsubscribe();
    };
    const unsubscribe = this.events.subscribe(id, (e) => {
      if (e.type === "queued")
        hear({
          type: "queued",
          place: { position: e.position, reason: e.reason, etaMs: e.etaMs, expectedMs: e.expectedMs ?? null },
        });
      else if (e.type === "failed") hear({ type: "failed", problem: e.problem });
      else hear({ type: e.type, lease: e.lease, quota: null });
    });
    // On a replica that does not lead, the queue place comes from the leader: ask for it.
    if (lease.status === "queued") this.lifecycle.watch(id);
    const current = (l: LeaseRecord, q: IdentityQuota | null): void => {
      if (l.status !== "queued") return hear(terminal(l, q));
      const place = this.lifecycle.position(l.id);
      if (place !== null) return hear({ type: "queued", place });
      // Granted or ended between the read and the subscription: read it again.
      void this.store
        .read((tx) => tx.leases.get(l.id))
        .then((fresh) => fresh && fresh.status !== "queued" && current(fresh, null))
        .catch(() =>
          hear({
            type: "failed",
            problem: problem("storage_unavailable", "The lease could not be read again; reconnect to follow it."),
          }),
        );
    };
    current(lease, quota);
    return () => {
      done = true;
      unsubscribe();
    };
  }

  private async visible(caller: Caller, id: string, forWrite: boolean): Promise<LeaseRecord> {
    const lease = this.lifecycle.liveLease(id) ?? (await this.store.read((tx) => tx.leases.get(id)));
    const mine =
      lease !== null &&
      (caller.kind === "admin" ||
        (caller.kind === "app" && lease.appId === caller.app.id) ||
        (caller.kind === "user" &&
          lease.identityKind === "user" &&
          lease.identityId === caller.user.id &&
          (!forWrite || lease.appId === null)));
    if (!lease || !mine) fail("not_found", `No lease ${id} visible to this caller.`);
    return lease;
  }

  private placeOf(lease: LeaseRecord): QueuePlace | null {
    return lease.status === "queued" ? this.lifecycle.position(lease.id) : null;
  }

  private quotaOf(lease: LeaseRecord): Promise<IdentityQuota> {
    return this.store.read((tx) =>
      this.accounts.quota(tx, { kind: lease.identityKind, id: lease.identityId }, this.clock.now(), false),
    );
  }
}

/** How a lease that is not queued ends a watch: granted while active, failed if it never got a GPU, else ended. */
function terminal(lease: LeaseRecord, quota: IdentityQuota | null): LeaseUpdate {
  if (lease.status === "active") return { type: "granted", lease, quota };
  if (lease.status === "failed" && lease.grantedAt === null && lease.problemCode !== null)
    return { type: "failed", problem: queueTimeoutProblemFrom(lease) };
  return { type: "ended", lease, quota };
}
