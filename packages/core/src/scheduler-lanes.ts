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
}

/** A queued request with its static sort key and its places in the scheduler's structures. */
export interface QueueEntry extends RankNode<QueueEntry> {
  readonly request: PriorityRequest;
  /** Priority class minus the aging steps elapsed before arrival: higher is served first. */
  readonly rankClass: number;
  /** Quota left, in steps: higher is served first. */
  readonly shareStep: number;
  /** Enqueue order, the last tie-breaker. */
  readonly ord: number;
  readonly lane: Lane;
  rankIndex: number;
  durationIndex: number;
}

/** The static order: class (with aging), then quota left, then shorter duration, then arrival. */
export function ranksBefore(a: QueueEntry, b: QueueEntry): boolean {
  if (a.rankClass !== b.rankClass) return a.rankClass > b.rankClass;
  if (a.shareStep !== b.shareStep) return a.shareStep > b.shareStep;
  const ra = a.request;
  const rb = b.request;
  if (ra.durationMs !== rb.durationMs) return ra.durationMs < rb.durationMs;
  if (ra.queuedAt !== rb.queuedAt) return ra.queuedAt < rb.queuedAt;
  if (ra.seq !== rb.seq) return ra.seq < rb.seq;
  return a.ord < b.ord;
}

/** Shortest requested duration first, then the static order. */
export function shorterBefore(a: QueueEntry, b: QueueEntry): boolean {
  if (a.request.durationMs !== b.request.durationMs) return a.request.durationMs < b.request.durationMs;
  return ranksBefore(a, b);
}

/** The requests of one app and one size, by rank and by duration. */
export interface Lane {
  readonly app: string | null;
  readonly slots: number;
  readonly byRank: IndexedHeap<QueueEntry>;
  readonly byDuration: IndexedHeap<QueueEntry>;
  rankIndex: number;
  durationIndex: number;
}

/** Lanes of one slot count that are not parked, by their best request and by their shortest. */
interface SizeTops {
  readonly byRank: IndexedHeap<Lane>;
  readonly byDuration: IndexedHeap<Lane>;
}

/**
 * The queue split into lanes, one per (app, size): a two-level heap. Each size keeps the lanes'
 * best requests in one heap and their shortest in another, so "the best request of size s" and
 * "the shortest request of size s" are O(1) and every change is O(log n).
 *
 * An app at its concurrency limit is *parked*: its lanes leave the size heaps in O(sizes · log
 * lanes), so none of its requests is looked at — or blocks anyone — until it is unparked.
 */
export class LaneIndex {
  private readonly lanes = new Map<string | null, Map<number, Lane>>();
  private readonly tops = new Map<number, SizeTops>();
  private readonly parked = new Set<string>();
  /** Sizes with lanes, ascending (a handful). */
  sizes: readonly number[] = [];

  laneFor(app: string | null, slots: number): Lane {
    let bySize = this.lanes.get(app);
    let lane = bySize?.get(slots);
    if (lane) return lane;
    lane = {
      app,
      slots,
      byRank: new IndexedHeap<QueueEntry>(ranksBefore, (e) => e.rankIndex, (e, i) => {
        e.rankIndex = i;
      }),
      byDuration: new IndexedHeap<QueueEntry>(shorterBefore, (e) => e.durationIndex, (e, i) => {
        e.durationIndex = i;
      }),
      rankIndex: -1,
      durationIndex: -1,
    };
    if (!bySize) {
      bySize = new Map();
      this.lanes.set(app, bySize);
    }
    // Lanes stay once made (there are apps × sizes of them), so a busy app does not churn them.
    bySize.set(slots, lane);
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
    const tops = this.tops.get(lane.slots);
    if (!tops) return;
    if (lane.byRank.size === 0) {
      tops.byRank.remove(lane);
      tops.byDuration.remove(lane);
    } else if (tops.byRank.has(lane)) {
      tops.byRank.update(lane);
      tops.byDuration.update(lane);
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
    for (const lane of this.lanes.get(app)?.values() ?? []) {
      const tops = this.tops.get(lane.slots);
      tops?.byRank.remove(lane);
      tops?.byDuration.remove(lane);
    }
  }

  unpark(app: string): void {
    if (!this.parked.delete(app)) return;
    for (const lane of this.lanes.get(app)?.values() ?? []) if (lane.byRank.size > 0) this.place(lane);
  }

  /** The best request of any size whose app is not parked. */
  best(): QueueEntry | null {
    let best: QueueEntry | null = null;
    for (const s of this.sizes) {
      const e = this.bestOfSize(s);
      if (e !== undefined && (best === null || ranksBefore(e, best))) best = e;
    }
    return best;
  }

  bestOfSize(slots: number): QueueEntry | undefined {
    return this.tops.get(slots)?.byRank.peek()?.byRank.peek();
  }

  shortestOfSize(slots: number): QueueEntry | undefined {
    return this.tops.get(slots)?.byDuration.peek()?.byDuration.peek();
  }

  /** Puts a non-empty lane in (or back in order in) the heaps of its size. */
  private place(lane: Lane): void {
    let tops = this.tops.get(lane.slots);
    if (!tops) {
      tops = {
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
      };
      this.tops.set(lane.slots, tops);
      this.sizes = [...this.tops.keys()].sort((a, b) => a - b);
    }
    if (tops.byRank.has(lane)) tops.byRank.update(lane);
    else tops.byRank.push(lane);
    if (tops.byDuration.has(lane)) tops.byDuration.update(lane);
    else tops.byDuration.push(lane);
  }
}
