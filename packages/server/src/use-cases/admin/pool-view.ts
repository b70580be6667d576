import { Pool } from "@gpupool/core";
import type { DeviceSpec, WaitReason } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { LeaseRecord, NodeRecord, Store } from "../../storage/store.js";
import type { PoolState } from "../leases/pool-state.js";

export type NodeState = "up" | "registered" | "lost" | "new";

export interface PoolView {
  /** "leader": the scheduler's own memory; "database": rebuilt from the store by a replica that does not lead. */
  readonly source: "leader" | "database";
  readonly nodes: readonly {
    name: string;
    kind: "configured" | "agent";
    state: NodeState;
    heartbeatAt: number | null;
    agentUrl: string | null;
  }[];
  readonly devices: readonly { spec: DeviceSpec; holders: (string | null)[] }[];
  readonly slots: { readonly total: number; readonly busy: number };
  readonly active: readonly LeaseRecord[];
  /** The first in line, at most QUEUE_LISTED; `queued` counts them all. */
  readonly queue: readonly QueueEntry[];
  readonly queued: QueueCounts;
}

/** Position is the place in the priority order (leader), or in arrival order (database: the order is the leader's). */
export interface QueueEntry {
  readonly lease: string;
  readonly position: number;
  readonly reason: WaitReason | null;
  readonly identity: string;
  readonly app: string | null;
  readonly slots: number;
}

export interface QueueCounts {
  readonly total: number;
  readonly listed: number;
  readonly byReason: Readonly<Record<string, number>>;
  readonly byKind: Readonly<Record<string, number>>;
}

/** Queue entries a pool view lists: an event with ten thousand queued stays a few tens of kilobytes. */
export const QUEUE_LISTED = 200;
/** Queued leases a replica that does not lead reads to count and order the line. */
const MAX_QUEUED_READ = 100_000;

function countQueue(all: readonly QueueEntry[], listed: number): QueueCounts {
  const byReason: Record<string, number> = {};
  const byKind: Record<string, number> = {};
  for (const e of all) {
    if (e.reason !== null) byReason[e.reason] = (byReason[e.reason] ?? 0) + 1;
    const kind = e.identity.slice(0, Math.max(0, e.identity.indexOf(":")));
    byKind[kind] = (byKind[kind] ?? 0) + 1;
  }
  return { total: all.length, listed: Math.min(listed, all.length), byReason, byKind };
}

/** Active (and, on a replica that does not lead, queued) leases listed at most: every slot's holder of a large pool. */
const MAX_LISTED = 10_000;

/** The leader's active leases, newest first (as the database lists them). */
function activeOf(state: PoolState): LeaseRecord[] {
  const active: LeaseRecord[] = [];
  for (const l of state.live.values()) if (l.status === "active") active.push(l);
  return active.sort((a, b) => b.seq - a.seq).slice(0, MAX_LISTED);
}

/** The queue as a replica that does not lead knows it: the database's arrival order (lists are newest first). */
function arrivalOrder(queued: readonly LeaseRecord[]): QueueEntry[] {
  return [...queued].reverse().map((l, i) => ({
    lease: l.id,
    position: i + 1,
    reason: null,
    identity: `${l.identityKind}:${l.identityId}`,
    app: l.appId,
    slots: l.slots,
  }));
}

function nodeState(up: boolean, n: NodeRecord): NodeState {
  if (up) return "up";
  if (n.devices !== null) return "registered";
  return n.agentUrl !== null ? "lost" : "new";
}

/**
 * The pool as an operator sees it: nodes, devices with their slots' holders, active leases and
 * the queue. The leader answers from its scheduler. A replica that does not lead has none of that
 * in memory, so it rebuilds what the database records — the devices of the configuration and of
 * agents heard from within the heartbeat timeout, occupied by the active leases — rather than
 * show its own empty view as the pool's. Only the queue's priority order is the leader's alone.
 */
export class PoolViewer {
  constructor(
    private readonly store: Store,
    /** Whether this replica runs the scheduler (then `state` is the pool's own memory). */
    private readonly leading: () => boolean,
    private readonly state: PoolState,
    private readonly configured: readonly DeviceSpec[],
    private readonly heartbeatTimeoutMs: number,
    private readonly clock: Clock,
  ) {}

  async view(): Promise<PoolView> {
    const now = this.clock.now();
    const leading = this.leading();
    const { store, state, configured, heartbeatTimeoutMs } = this;
    // The leader knows its active leases (every slot's holder) in memory; others read the database.
    const { nodes, active, queued } = await store.transaction(async (tx) => ({
      nodes: await tx.nodes.list(),
      active: leading ? activeOf(state) : await tx.leases.list({ status: "active", limit: MAX_LISTED }),
      queued: leading ? [] : await tx.leases.list({ status: "queued", limit: MAX_QUEUED_READ }),
    }));
    const fresh = (n: NodeRecord) =>
      n.devices !== null && n.heartbeatAt !== null && n.heartbeatAt + heartbeatTimeoutMs > now;
    const up = leading ? new Set(state.liveNodes()) : new Set(nodes.filter(fresh).map((n) => n.name));
    const configuredNodes = [...new Set(configured.map((d) => d.node))].map((name) => ({
      name,
      kind: "configured" as const,
      state: "up" as const,
      heartbeatAt: null,
      agentUrl: null,
    }));
    const agents = nodes.map((n) => ({
      name: n.name,
      kind: "agent" as const,
      // up: registered and heartbeating; lost: it stopped heartbeating (its agent must register
      // again); new: its agent never registered.
      state: nodeState(up.has(n.name), n),
      heartbeatAt: n.heartbeatAt,
      agentUrl: n.agentUrl,
    }));
    const base = { nodes: [...configuredNodes, ...agents], active };
    if (leading) {
      const line = state.queueSnapshot();
      return {
        ...base,
        source: "leader",
        devices: state.poolSnapshot(),
        slots: { total: state.totalSlots, busy: state.busySlots },
        queue: line.slice(0, QUEUE_LISTED),
        queued: countQueue(line, QUEUE_LISTED),
      };
    }
    const pool = new Pool(configured);
    for (const n of nodes) if (up.has(n.name)) for (const d of n.devices ?? []) pool.addDevice(d);
    for (const l of active)
      if (l.node !== null && l.deviceIndex !== null && l.slotIndexes !== null)
        pool.occupy(l.id, l.node, l.deviceIndex, l.slotIndexes);
    const line = arrivalOrder(queued);
    return {
      ...base,
      source: "database",
      devices: pool.snapshot(),
      slots: { total: pool.totalSlots, busy: pool.busySlots },
      queue: line.slice(0, QUEUE_LISTED),
      queued: countQueue(line, QUEUE_LISTED),
    };
  }

  /**
   * A page of the line from position `after` + 1: at most `limit` entries, whether more follow, and
   * how many wait in all.
   */
  async line(after: number, limit: number): Promise<{ total: number; entries: readonly QueueEntry[]; more: boolean }> {
    const line = this.leading()
      ? this.state.queueSnapshot()
      : arrivalOrder(
          await this.store.transaction((tx) => tx.leases.list({ status: "queued", limit: MAX_QUEUED_READ })),
        );
    const rest = line.filter((e) => e.position > after);
    return { total: line.length, entries: rest.slice(0, limit), more: rest.length > limit };
  }
}
