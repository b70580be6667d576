import type { QueuedRequest } from "./scheduler.js";
import { IndexedHeap } from "./scheduler-heap.js";
import type { RankNode } from "./scheduler-rank.js";

/** A queued lease as the priority scheduler needs it. */
export interface PriorityRequest extends QueuedRequest {
  /**
   * The identity's quota left before this request's reservation, as a share of its quota (0–1).
   * More left ranks first within a priority class. Missing: 1 (a fresh quota).
   */
  readonly quotaLeftShare?: number;
  /**
   * The node whose devices alone may take this request: a lease asked for through a node's agent
   * serves an app on that host, so a GPU elsewhere is of no use to it. Null or missing: any device.
   */
  readonly node?: string | null;
  /**
   * When the engine will time the request out if it is still queued (its `max_wait`, else its
   * tier's queue timeout, from `queuedAt`). A forecast takes it out of the queue then, as the
   * engine will (docs/scheduling.md §5). Null or missing: it waits as long as it takes.
   */
  readonly giveUpAt?: number | null;
  /**
   * The key to rank by instead of the request's own (a copy of a scheduler ranks a request as the
   * original did, including a newcomer placed behind a call whose promise it would break).
   */
  readonly rankKey?: RankKey;
  /** With `rankKey`: the promise the original made it (a copy keeps promises as the original does). */
  readonly promisedAt?: number | null;
  /** With `promisedAt`: when the original made that promise. */
  readonly promisedFrom?: number;
}

/**
 * What a queued request is ranked by (see ranksBefore): its priority class less the aging steps
 * before it arrived, its quota-left step, its requested duration, its arrival. A request that
 * would break a queued call's promise if it went ahead of it ranks by that call's key instead
 * (just behind it: enqueue order breaks the tie).
 */
export interface RankKey {
  readonly rankClass: number;
  readonly shareStep: number;
  readonly durationMs: number;
  readonly queuedAt: number;
  readonly seq: number;
}

/** A queued request with its static sort key and its places in the scheduler's structures. */
export interface QueueEntry extends RankNode<QueueEntry> {
  readonly request: PriorityRequest;
  readonly key: RankKey;
  /** Enqueue order, the last tie-breaker. */
  readonly ord: number;
  /** When it was promised to start at the latest (the bound told at admission); null: no promise. */
  promiseAt: number | null;
  /** When the promise was made (its idle allowance runs from then to `promiseAt`). */
  promiseFrom: number;
  readonly lane: Lane;
  rankIndex: number;
  durationIndex: number;
}

/**
 * A queue entry, not yet in any structure. Every entry is made here — including the copies that
 * sit in the extra order-statistics sets of node-bound requests (a set keeps its tree fields on
 * the item, so an item in two sets needs two objects) — so that all of them have one object
 * shape and the treap code, shared by every set, stays monomorphic: with two shapes its inserts
 * ran about twice as slow.
 */
export function newEntry(request: PriorityRequest, key: RankKey, ord: number, lane: Lane): QueueEntry {
  return {
    request,
    key,
    ord,
    promiseAt: null,
    promiseFrom: 0,
    lane,
    rankIndex: -1,
    durationIndex: -1,
    rankLeft: null,
    rankRight: null,
    rankPriority: 0,
    rankCount: 0,
    rankTotal: 0,
    rankWeight: request.slots * request.durationMs,
    rankLoad: lane.group.placeable ? request.slots * request.durationMs : 0,
    rankTotalLoad: 0,
    rankMark: Number.POSITIVE_INFINITY,
    rankMinMark: Number.POSITIVE_INFINITY,
  };
}

/** A copy of `entry` with the same key and weight, for another set. */
export function copyEntry(entry: QueueEntry): QueueEntry {
  return newEntry(entry.request, entry.key, entry.ord, entry.lane);
}

/** The static order: class (with aging), then shorter duration, then quota left, then arrival. */
export function ranksBefore(a: QueueEntry, b: QueueEntry): boolean {
  const ka = a.key;
  const kb = b.key;
  if (ka.rankClass !== kb.rankClass) return ka.rankClass > kb.rankClass;
  if (ka.durationMs !== kb.durationMs) return ka.durationMs < kb.durationMs;
  if (ka.shareStep !== kb.shareStep) return ka.shareStep > kb.shareStep;
  if (ka.queuedAt !== kb.queuedAt) return ka.queuedAt < kb.queuedAt;
  if (ka.seq !== kb.seq) return ka.seq < kb.seq;
  return a.ord < b.ord;
}

/** Shortest requested duration first, then the static order. */
export function shorterBefore(a: QueueEntry, b: QueueEntry): boolean {
  if (a.request.durationMs !== b.request.durationMs) return a.request.durationMs < b.request.durationMs;
  return ranksBefore(a, b);
}

/** The requests of one app, one size and one node binding, by rank and by duration. */
export interface Lane {
  readonly app: string | null;
  readonly group: LaneGroup;
  readonly byRank: IndexedHeap<QueueEntry>;
  readonly byDuration: IndexedHeap<QueueEntry>;
  rankIndex: number;
  durationIndex: number;
}

/**
 * The lanes of one size and one node binding (null: unbound) whose app is not parked, by their
 * best request and by their shortest. Every request in a group can go on the same devices, so
 * "does some device fit this group" is one question per group, not per request.
 */
export interface LaneGroup {
  readonly slots: number;
  readonly node: string | null;
  readonly byRank: IndexedHeap<Lane>;
  readonly byDuration: IndexedHeap<Lane>;
  /** Lanes of the group, parked or not, empty or not (a node's group goes with its last lane). */
  lanes: number;
  /** Whether some device could ever take the group's requests (as of the last refit). */
  placeable: boolean;
  /** Whether dispatch looks at the group: it is placeable and has a lane in its heaps. */
  listed: boolean;
  /** Place in the heap of listed bound groups (-1: not there). */
  topIndex: number;
}

/** The best request of a listed group. */
export function bestOf(group: LaneGroup): QueueEntry {
  return (group.byRank.peek() as Lane).byRank.peek() as QueueEntry;
}

/** The shortest request of a listed group. */
export function shortestOf(group: LaneGroup): QueueEntry {
  return (group.byDuration.peek() as Lane).byDuration.peek() as QueueEntry;
}

/**
 * The queue split into lanes, one per (app, size, node binding), and lanes into groups, one per
 * (size, node binding): a two-level heap. Each group keeps its lanes' best requests in one heap
 * and their shortest in another, so "the best request of group g" and "the shortest request of
 * group g" are O(1) and every change is O(log n).
 *
 * An app at its concurrency limit is *parked*: its lanes leave the group heaps in O(lanes · log
 * lanes), so none of its requests is looked at — or blocks anyone — until it is unparked. A group
 * no device could ever take (bound to a node with no devices, or larger than any GPU) is likewise
 * left out of what dispatch looks at until a refit finds it placeable.
 *
 * Dispatch looks at *listed* groups: the unbound ones (one per size, a handful) one by one, and
 * the bound ones — there may be a few per node of a large pool — through a heap by best request
 * (the head of the queue) and by node (only nodes with a free slot can take anything).
 *
 * Unbound lanes and groups stay once made (there are apps × sizes of them), so a busy app does not
 * churn them; a node's lanes and groups are dropped when they empty, since nodes come and go.
 */
export class LaneIndex {
  private readonly lanes = new Map<string | null, Map<LaneGroup, Lane>>();
  /** node binding → size → group. */
  private readonly groups = new Map<string | null, Map<number, LaneGroup>>();
  private readonly parked = new Set<string>();
  /** Listed unbound groups. */
  readonly unbound = new Set<LaneGroup>();
  /** node → its listed groups. */
  readonly bound = new Map<string, Set<LaneGroup>>();
  /** Listed bound groups, by their best request. */
  private readonly boundTops = new IndexedHeap<LaneGroup>(
    (a, b) => ranksBefore(bestOf(a), bestOf(b)),
    (g) => g.topIndex,
    (g, i) => {
      g.topIndex = i;
    },
  );

  /** `placeable`: whether some device could ever take `slots` (on `node`, when bound). */
  constructor(private readonly placeable: (slots: number, node: string | null) => boolean) {}

  laneFor(app: string | null, slots: number, node: string | null): Lane {
    const group = this.groupFor(slots, node);
    let byGroup = this.lanes.get(app);
    let lane = byGroup?.get(group);
    if (lane) return lane;
    lane = {
      app,
      group,
      byRank: new IndexedHeap<QueueEntry>(
        ranksBefore,
        (e) => e.rankIndex,
        (e, i) => {
          e.rankIndex = i;
        },
      ),
      byDuration: new IndexedHeap<QueueEntry>(
        shorterBefore,
        (e) => e.durationIndex,
        (e, i) => {
          e.durationIndex = i;
        },
      ),
      rankIndex: -1,
      durationIndex: -1,
    };
    if (!byGroup) {
      byGroup = new Map();
      this.lanes.set(app, byGroup);
    }
    byGroup.set(group, lane);
    group.lanes++;
    return lane;
  }

  add(entry: QueueEntry): void {
    entry.lane.byRank.push(entry);
    entry.lane.byDuration.push(entry);
    if (!this.isParked(entry.lane.app)) this.place(entry.lane);
  }

  remove(entry: QueueEntry): void {
    const lane = entry.lane;
    lane.byRank.remove(entry);
    lane.byDuration.remove(entry);
    if (lane.byRank.size === 0) {
      this.unplace(lane);
      if (lane.group.node !== null) this.drop(lane);
    } else if (lane.group.byRank.has(lane)) {
      lane.group.byRank.update(lane);
      lane.group.byDuration.update(lane);
      this.relist(lane.group);
    }
  }

  isParked(app: string | null): boolean {
    return app !== null && this.parked.has(app);
  }

  parkedApps(): Iterable<string> {
    return this.parked;
  }

  park(app: string): void {
    if (this.parked.has(app)) return;
    this.parked.add(app);
    for (const lane of this.lanes.get(app)?.values() ?? []) this.unplace(lane);
  }

  unpark(app: string): void {
    if (!this.parked.delete(app)) return;
    for (const lane of this.lanes.get(app)?.values() ?? []) if (lane.byRank.size > 0) this.place(lane);
  }

  /** The best request of any listed group: the head of the queue. */
  head(): QueueEntry | null {
    let head: QueueEntry | null = null;
    for (const group of this.unbound) {
      const best = bestOf(group);
      if (head === null || ranksBefore(best, head)) head = best;
    }
    const top = this.boundTops.peek();
    if (top !== undefined) {
      const best = bestOf(top);
      if (head === null || ranksBefore(best, head)) head = best;
    }
    return head;
  }

  /** Re-asks which groups are placeable, after the devices changed. O(groups). */
  refit(): void {
    for (const bySize of this.groups.values()) {
      for (const group of bySize.values()) {
        const placeable = this.placeable(group.slots, group.node);
        if (placeable === group.placeable) continue;
        group.placeable = placeable;
        if (!placeable) this.unlist(group);
        else if (group.byRank.size > 0) this.relist(group);
      }
    }
  }

  private groupFor(slots: number, node: string | null): LaneGroup {
    let bySize = this.groups.get(node);
    let group = bySize?.get(slots);
    if (group) return group;
    group = {
      slots,
      node,
      byRank: new IndexedHeap<Lane>(
        (a, b) => ranksBefore(a.byRank.peek() as QueueEntry, b.byRank.peek() as QueueEntry),
        (l) => l.rankIndex,
        (l, i) => {
          l.rankIndex = i;
        },
      ),
      byDuration: new IndexedHeap<Lane>(
        (a, b) => shorterBefore(a.byDuration.peek() as QueueEntry, b.byDuration.peek() as QueueEntry),
        (l) => l.durationIndex,
        (l, i) => {
          l.durationIndex = i;
        },
      ),
      lanes: 0,
      placeable: this.placeable(slots, node),
      listed: false,
      topIndex: -1,
    };
    if (!bySize) {
      bySize = new Map();
      this.groups.set(node, bySize);
    }
    bySize.set(slots, group);
    return group;
  }

  /** Puts a non-empty lane in (or back in order in) the heaps of its group. */
  private place(lane: Lane): void {
    const group = lane.group;
    if (group.byRank.has(lane)) {
      group.byRank.update(lane);
      group.byDuration.update(lane);
    } else {
      group.byRank.push(lane);
      group.byDuration.push(lane);
    }
    this.relist(group);
  }

  /** Takes a lane out of its group's heaps (emptied or parked). */
  private unplace(lane: Lane): void {
    const group = lane.group;
    if (!group.byRank.remove(lane)) return;
    group.byDuration.remove(lane);
    if (group.byRank.size === 0) this.unlist(group);
    else this.relist(group);
  }

  /** Lists a placeable group that has lanes in its heaps, or re-orders it after its best request changed. */
  private relist(group: LaneGroup): void {
    if (!group.placeable) return;
    if (group.listed) {
      if (group.node !== null) this.boundTops.update(group);
      return;
    }
    group.listed = true;
    if (group.node === null) {
      this.unbound.add(group);
      return;
    }
    this.boundTops.push(group);
    const ofNode = this.bound.get(group.node);
    if (ofNode) ofNode.add(group);
    else this.bound.set(group.node, new Set([group]));
  }

  private unlist(group: LaneGroup): void {
    if (!group.listed) return;
    group.listed = false;
    if (group.node === null) {
      this.unbound.delete(group);
      return;
    }
    this.boundTops.remove(group);
    const ofNode = this.bound.get(group.node) as Set<LaneGroup>;
    ofNode.delete(group);
    if (ofNode.size === 0) this.bound.delete(group.node);
  }

  /** Forgets an empty lane of a node, and its group with its last lane. */
  private drop(lane: Lane): void {
    const group = lane.group;
    const byGroup = this.lanes.get(lane.app) as Map<LaneGroup, Lane>;
    byGroup.delete(group);
    if (byGroup.size === 0) this.lanes.delete(lane.app);
    if (--group.lanes > 0) return;
    const bySize = this.groups.get(group.node) as Map<number, LaneGroup>;
    bySize.delete(group.slots);
    if (bySize.size === 0) this.groups.delete(group.node);
  }
}
