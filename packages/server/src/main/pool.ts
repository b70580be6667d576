import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { ServerConfig } from "../config.js";
import { EngineRunner } from "../engine/runner.js";
import { LeaseEvents } from "../events.js";
import { Metrics } from "../metrics.js";
import { FollowerLeases } from "../replication/follower.js";
import { tellLeader } from "../replication/messages.js";
import { Replica } from "../replication/replica.js";
import { newOrderedId } from "../secrets.js";
import type { Storage } from "../storage/store.js";
import { Accounts } from "../use-cases/accounts/accounts.js";
import { LeaseAnnouncer } from "../use-cases/leases/announcer.js";
import type { LeaseTimerKind } from "../use-cases/leases/announcer.js";
import { LeaderLeases } from "../use-cases/leases/leader-leases.js";
import type { LeaseTracing } from "../use-cases/leases/lease-tracing.js";
import { LeaseWrites } from "../use-cases/leases/lease-writes.js";
import { PoolState } from "../use-cases/leases/pool-state.js";
import { NodeMembership } from "../use-cases/nodes/node-membership.js";
import { Recovery } from "../use-cases/recovery.js";
import { Timers } from "../use-cases/timers.js";

/** The pool's engine, assembled: what the HTTP side (main/server.ts) and the benchmarks use. */
export interface PoolParts {
  readonly replica: Replica;
  readonly state: PoolState;
  readonly accounts: Accounts;
  readonly events: LeaseEvents;
  readonly metrics: Metrics;
  /** Stops timers and listening; the storage is the caller's to close. */
  stop(): void;
}

/**
 * Wires the engine: the runner over the storage's (fenced) stager, the leader's memory and use
 * cases, node membership, recovery as the runner's rebuild, and the replica that decides whether
 * this process leads. Not started: call `replica.start()`.
 */
export function assemblePool(
  config: ServerConfig,
  storage: Storage,
  deps: {
    clock: Clock;
    log: Logger;
    /** False: the lease use cases record no metrics (the in-process benchmark, measured as before it had them). */
    recordMetrics?: boolean;
    /** Spans of each lease's life (main/lease-spans.ts); absent: none. */
    tracing?: LeaseTracing;
  },
): PoolParts {
  const { clock, log } = deps;
  const { store, coordination } = storage;
  const { policy } = config;
  const heartbeatTimeoutMs = config.nodes.heartbeatTimeoutMs;
  const events = new LeaseEvents();
  const state = new PoolState(policy, config.pool.devices);
  // Timers, the announcer's outbox, the runner's hooks and the metrics call parts built after them.
  const late = {} as { leader: LeaderLeases; nodes: NodeMembership; recovery: Recovery; replica: Replica };
  const metrics = new Metrics(
    {
      queueDepth: () => state.queueDepth,
      busySlots: () => state.busySlots,
      totalSlots: () => state.totalSlots,
      activeLeases: () => state.activeLeases,
      queuedByTier: () => {
        const byTier = new Map<string, number>();
        for (const l of state.live.values())
          if (l.status === "queued") byTier.set(l.tier, (byTier.get(l.tier) ?? 0) + 1);
        return byTier;
      },
      nodeSlots: () => {
        const byNode = new Map<string, { node: string; total: number; busy: number }>();
        for (const d of state.poolSnapshot()) {
          const n = byNode.get(d.spec.node) ?? { node: d.spec.node, total: 0, busy: 0 };
          n.total += d.holders.length;
          n.busy += d.holders.filter((h) => h !== null).length;
          byNode.set(n.node, n);
        }
        return [...byNode.values()];
      },
    },
    () => late.replica.isLeader,
  );
  const accounts = new Accounts(policy);
  // Only on a store nobody shares is this process's copy of a lease always the current one.
  const writes = new LeaseWrites(state, accounts, policy, !coordination.shared);

  const leaseTimers = new Timers<LeaseTimerKind>(
    clock,
    (id, kind) =>
      void late.leader
        .onTimer(id, kind)
        .catch((err: unknown) => log.error({ err, leaseId: id, due: kind }, "a lease timer failed")),
  );
  const nodeTimers = new Timers<"heartbeat">(
    clock,
    (name) =>
      void late.nodes
        .silent(name)
        .catch((err: unknown) => log.error({ err, node: name }, "handling a silent node failed")),
  );
  const recorded = deps.recordMetrics === false ? null : metrics;
  const announcer = new LeaseAnnouncer(
    state,
    leaseTimers,
    events,
    recorded,
    clock,
    policy,
    (a) => late.replica.announce(a),
    deps.tracing,
    (tx, a) => late.replica.announceWith(tx, a),
  );
  const runner = new EngineRunner({
    stager: coordination.leaderStager,
    rebuild: () => late.recovery.rebuild(),
    onLeadershipLost: (err) => late.replica.stepDown(err),
    log,
  });
  late.leader = new LeaderLeases(runner, state, writes, accounts, announcer, policy, clock, recorded, deps.tracing);
  late.nodes = new NodeMembership(runner, state, writes, announcer, nodeTimers, clock, log, heartbeatTimeoutMs);
  late.recovery = new Recovery(
    coordination.leaderStager,
    state,
    writes,
    announcer,
    late.nodes,
    late.leader,
    policy,
    clock,
    log,
    heartbeatTimeoutMs,
  );
  const replicaId = newOrderedId("r", clock.now());
  const follower = new FollowerLeases(
    store,
    accounts,
    policy,
    clock,
    events,
    (m) => tellLeader(coordination, m),
    log,
    replicaId,
  );
  late.replica = new Replica({
    store,
    coordination,
    runner,
    forget: () => {
      state.clear();
      announcer.clear();
      nodeTimers.clearAll();
    },
    leader: late.leader,
    state,
    follower,
    nodes: late.nodes,
    clock,
    log,
    id: replicaId,
  });
  return {
    replica: late.replica,
    state,
    accounts,
    events,
    metrics,
    stop() {
      late.replica.stop();
      runner.stop();
      leaseTimers.stop();
      nodeTimers.stop();
    },
  };
}
