import type { DeviceSpec, Placement, PriorityRequest, QueuePlace } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { EngineRunner } from "../engine/runner.js";
import type { Coordination, LeaseRecord, NodeRecord, Store, Tx } from "../storage/store.js";
import type { Announcement } from "../use-cases/leases/announcer.js";
import type { LeaderLeases } from "../use-cases/leases/leader-leases.js";
import type { PlacementView } from "../use-cases/leases/diagnose.js";
import type { AdmitInput, AdmitResult, LeaseLifecycle, Released } from "../use-cases/leases/leases.js";
import type { RequestTrace } from "../use-cases/leases/lease-tracing.js";
import type { PoolState } from "../use-cases/leases/pool-state.js";
import type { NodeMembership, NodeRegistration } from "../use-cases/nodes/node-membership.js";
import type { PoolMembership } from "../use-cases/nodes/node-agents.js";
import type { FollowerLeases } from "./follower.js";
import { EVENTS_CHANNEL, LEADER_CHANNEL, parseMessage, tellLeader } from "./messages.js";
import type { LeaderMessage, LeaseBroadcast } from "./messages.js";

/** NOTIFY payloads are at most 8,000 bytes (Coordination.publish allows 7,000): what a batch of announcements may take, in characters (JSON of ASCII text; a lease's own text may not be). */
const MAX_BATCH_CHARS = 3_000;
/** An announcement larger than this goes without its lease. */
const MAX_ITEM_CHARS = 2_500;

export interface ReplicaParts {
  readonly store: Store;
  readonly coordination: Coordination;
  readonly runner: EngineRunner;
  /** Drops the leader's memory and timers (this replica stops leading). */
  readonly forget: () => void;
  readonly leader: LeaderLeases;
  /** The leader's memory (read only for diagnose's placement trial). */
  readonly state: PoolState;
  readonly follower: FollowerLeases;
  readonly nodes: NodeMembership;
  readonly clock: Clock;
  readonly log: Logger;
  /** This replica's id in broadcasts (its own are not relayed back to it). */
  readonly id: string;
}

/**
 * Replication, as a driver beside HTTP: which replica runs the scheduler, and what the others
 * forward to it. The use cases know nothing of it: the routes get this object as their
 * `LeaseLifecycle` and `PoolMembership`, and it calls the leader's use cases when this replica
 * leads (always, on a store nobody shares), and the follower's otherwise. It also carries the
 * leader's announcements to the other replicas and their requests to the leader.
 */
export class Replica implements LeaseLifecycle, PoolMembership, PlacementView {
  private leading: boolean;
  private stopped = false;
  private readonly unsubscribe: (() => Promise<void>)[] = [];
  /** Announcements of this turn of the event loop, not sent yet (see announce). */
  private readonly outgoing: Announcement[] = [];

  constructor(private readonly parts: ReplicaParts) {
    this.leading = false;
  }

  /** True when this replica runs the scheduler. */
  get isLeader(): boolean {
    return this.leading;
  }

  admit(input: AdmitInput): Promise<AdmitResult> {
    return this.leading ? this.parts.leader.admit(input) : this.parts.follower.admit(input);
  }

  release(leaseId: string, failed: boolean, trace?: RequestTrace): Promise<Released> {
    return this.leading
      ? this.parts.leader.release(leaseId, failed, trace)
      : this.parts.follower.release(leaseId, failed);
  }

  position(leaseId: string): QueuePlace | null {
    return this.leading ? this.parts.leader.position(leaseId) : this.parts.follower.position(leaseId);
  }

  watch(leaseId: string): void {
    if (!this.leading) this.parts.follower.watch(leaseId);
  }

  liveLease(leaseId: string): LeaseRecord | null {
    return this.leading ? this.parts.leader.liveLease(leaseId) : null;
  }

  /**
   * An app's concurrency limit changed (the admin use case calls this): settles once the leader's
   * scheduler applies it here, or the leader has been told; never rejects (a failure is logged).
   */
  appLimitChanged(appId: string, limit: number | null): Promise<void> {
    const done = this.leading
      ? this.parts.leader.setAppLimit(appId, limit)
      : this.tellLeader({ op: "limit", app: appId, limit });
    return done.catch((err: unknown) =>
      this.parts.log.warn(
        { err, app: appId },
        "applying an app's concurrency limit failed; it applies at the next rebuild",
      ),
    );
  }

  async register(
    node: NodeRecord,
    devices: readonly DeviceSpec[],
    agentUrl: string | null,
    presented: string | null,
  ): Promise<NodeRegistration> {
    if (this.leading) return this.parts.nodes.register(node, devices, agentUrl, presented);
    const now = this.parts.clock.now();
    const refused = await this.parts.store.transaction((tx) =>
      this.parts.nodes.claim(tx, node, devices, agentUrl, presented, now),
    );
    if (refused !== null) return { kind: "refused", problem: refused };
    await this.tellLeader({ op: "node", name: node.name });
    return { kind: "registered", at: now };
  }

  heard(name: string, at: number): void {
    if (this.leading) return this.parts.nodes.heard(name, at);
    this.tellLeader({ op: "heartbeat", name, at }).catch((err: unknown) =>
      this.parts.log.warn({ err }, "could not pass a heartbeat to the leader"),
    );
  }

  /**
   * The leader's announcement, for the other replicas' watchers (nothing to do on a store nobody
   * shares). Those of one turn of the event loop go out together, as few NOTIFYs as fit their
   * payload (under load, the grants of a whole commit group in one or two).
   */
  announce(a: Announcement): void {
    if (!this.parts.coordination.shared) return;
    // A lease too large to travel (it never is in practice) goes without: the receivers read it.
    const item = JSON.stringify(a).length > MAX_ITEM_CHARS ? withoutLease(a) : a;
    this.outgoing.push(item);
    if (this.outgoing.length === 1) setImmediate(() => this.flushAnnouncements());
  }

  /**
   * The leader's announcement sent with the transaction `tx` that makes it true: delivered at its
   * COMMIT (none if it rolls back), in the statement of its writes, so no NOTIFY of its own. False
   * when it cannot go so (a store nobody shares: nothing to tell; a transaction that carries no word).
   */
  async announceWith(tx: Tx, a: Announcement): Promise<boolean> {
    if (!this.parts.coordination.shared || tx.publish === undefined) return false;
    const item = JSON.stringify(a).length > MAX_ITEM_CHARS ? withoutLease(a) : a;
    await tx.publish(EVENTS_CHANNEL, JSON.stringify({ ...item, from: this.parts.id }));
    return true;
  }

  private flushAnnouncements(): void {
    const items = this.outgoing.splice(0);
    const send = (batch: Announcement[]): void => {
      const payload =
        batch.length === 1
          ? JSON.stringify({ ...batch[0], from: this.parts.id })
          : JSON.stringify({ type: "batch", items: batch, from: this.parts.id });
      this.parts.coordination
        .publish(EVENTS_CHANNEL, payload)
        .catch((err: unknown) => this.parts.log.warn({ err }, "broadcasting a lease event failed"));
    };
    let batch: Announcement[] = [];
    let size = 0;
    for (const item of items) {
      const n = JSON.stringify(item).length + 1;
      if (batch.length > 0 && size + n > MAX_BATCH_CHARS) {
        send(batch);
        batch = [];
        size = 0;
      }
      batch.push(item);
      size += n;
    }
    if (batch.length > 0) send(batch);
  }

  /**
   * Starts serving: on a store nobody shares this replica leads at once (after rebuilding its
   * memory); on a shared one it listens to the other replicas and campaigns for the lead. The
   * first replica to start leads at once; a later one serves as a follower while it waits.
   */
  async start(): Promise<void> {
    const { coordination, runner } = this.parts;
    if (!coordination.shared) {
      // Nobody else can lead a store nobody shares, and never takes the lead away.
      await coordination.lead(() => undefined);
      await runner.refresh();
      this.leading = true;
      return;
    }
    await this.listen();
    let leads!: () => void;
    const leading = new Promise<void>((resolve) => (leads = resolve));
    void this.campaign(leads);
    await Promise.race([leading, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off().catch(() => undefined);
  }

  /** This replica lost the lead (its session with the database ended): another takes over. */
  stepDown(why: Error): void {
    if (!this.leading) return;
    this.leading = false;
    this.parts.runner.reset();
    this.parts.forget();
    if (!this.stopped)
      this.parts.log.warn({ err: why, replica: this.parts.id }, "this replica lost the lead; another takes over");
  }

  private tellLeader(m: LeaderMessage): Promise<void> {
    return tellLeader(this.parts.coordination, m);
  }

  /** Where a call would go now, for diagnose: only the leader knows (its scheduler's trial). */
  placement(request: PriorityRequest, now: number): Placement | null {
    return this.leading ? this.parts.state.placement(request, now) : null;
  }

  private async listen(): Promise<void> {
    const { coordination, runner, log, id } = this.parts;
    this.unsubscribe.push(
      await coordination.subscribe(EVENTS_CHANNEL, (payload) => {
        const b = parseMessage<(LeaseBroadcast | { type: "batch"; items?: unknown }) & { from?: string }>(
          payload,
          "type",
        );
        if (b === null || b.from === id) return;
        const items = b.type === "batch" ? (Array.isArray(b.items) ? (b.items as LeaseBroadcast[]) : []) : [b];
        for (const item of items) this.onBroadcast(item);
      }),
      await coordination.subscribe(
        LEADER_CHANNEL,
        (payload) => {
          const m = parseMessage<LeaderMessage>(payload, "op");
          if (m !== null && this.leading) this.onLeaderMessage(m);
        },
        // Work announced while the listening connection was down was missed: rebuild from the database.
        () => {
          if (!this.leading) return;
          log.warn("notifications resumed after a lost connection; re-reading the pool state");
          runner.refresh().catch((err: unknown) => log.error({ err }, "re-reading the pool state failed"));
        },
      ),
    );
  }

  /** Waits for the leadership, then takes over: rebuilds the pool's memory from the database. `leads` is called each time it does. */
  private async campaign(leads: () => void): Promise<void> {
    const { coordination, runner, log, id } = this.parts;
    while (!this.stopped) {
      let lost!: (err: Error) => void;
      const lostOnce = new Promise<Error>((resolve) => (lost = resolve));
      try {
        await coordination.lead((err) => lost(err));
        if (this.stopped) return;
        await runner.refresh();
        this.leading = true;
        leads();
        log.info({ replica: id }, "this replica now leads the pool");
        // What other replicas admitted while this one rebuilt: their word came before it led.
        void this.catchUp();
      } catch (err) {
        if (this.stopped) return;
        log.error({ err }, "taking the lead failed; trying again");
        await new Promise((resolve) => setTimeout(resolve, 1_000).unref());
        continue;
      }
      this.stepDown(await lostOnce);
    }
  }

  /**
   * Re-reads the live set once this replica leads, and places every queued lease its memory
   * lacks (see LeaderLeases.catchUp); retried while it leads until it succeeds.
   */
  private async catchUp(): Promise<void> {
    const { leader, log, id } = this.parts;
    for (let delayMs = 500; this.leading && !this.stopped; delayMs = Math.min(10_000, delayMs * 2)) {
      try {
        let adopted = 0;
        for (let more = true; more && this.leading;) {
          const batch = await leader.catchUp();
          adopted += batch.adopted;
          more = batch.more;
        }
        if (adopted > 0) log.info({ replica: id, adopted }, "placed leases admitted while this replica took the lead");
        return;
      } catch (err) {
        if (!this.leading || this.stopped) return;
        log.warn({ err, retryInMs: delayMs }, "re-reading the live leases after taking the lead failed; trying again");
        await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
      }
    }
  }

  /**
   * A lease's change another replica announced. A lease another replica ended (and said how, in
   * the transaction that ended it) is freed here when this replica leads; every replica relays
   * what it hears to its own watchers.
   */
  private onBroadcast(b: LeaseBroadcast): void {
    const { leader, follower, log } = this.parts;
    if (typeof b.id !== "string") return;
    if (this.leading && b.type === "ended" && b.lease !== undefined)
      return void leader
        .endedElsewhere(b.lease)
        .catch((err: unknown) => log.error({ err, leaseId: b.id }, "freeing a lease ended by another replica failed"));
    follower.heard(b).catch((err: unknown) => log.warn({ err }, "relaying a lease event failed"));
  }

  /** Work another replica handed to the leader. */
  private onLeaderMessage(m: LeaderMessage): void {
    const { leader, nodes, log } = this.parts;
    const failed = (what: string, fields: Record<string, unknown>) => (err: unknown) =>
      log.error({ err, ...fields }, what);
    switch (m.op) {
      case "admitted":
        return void leader
          .adopt(
            m.id,
            m.queue,
            typeof m.max_wait_ms === "number" ? m.max_wait_ms : null,
            m.refuse_long_wait === true,
            m.lease !== undefined && m.lease.id === m.id && typeof m.share === "number"
              ? { lease: m.lease, share: m.share }
              : null,
          )
          .catch(failed("placing a lease admitted by another replica failed", { leaseId: m.id }));
      case "ended":
        return void leader
          .forget(m.id)
          .catch(failed("freeing a lease ended by another replica failed", { leaseId: m.id }));
      case "watch":
        return leader.watchRemote(m.id);
      case "node":
        return void nodes
          .adopt(m.name)
          .catch(failed("adding a node registered through another replica failed", { node: m.name }));
      case "heartbeat":
        return nodes.heard(m.name, m.at);
      case "limit":
        return void leader
          .setAppLimit(m.app, m.limit)
          .catch(failed("applying an app's concurrency limit failed", { app: m.app }));
    }
  }
}

/** An announcement without the lease it carries. */
function withoutLease(a: Announcement): Announcement {
  if (a.type === "queued" || a.lease === undefined) return a;
  const { lease, ...rest } = a;
  void lease;
  return rest;
}
