import type { QueueEntry } from "./scheduler-lanes.js";
import { ranksBefore } from "./scheduler-lanes.js";
import type { RankNode } from "./scheduler-rank.js";
import { RankedSet } from "./scheduler-rank.js";

/** A node-bound request's place in one of the sets below (it sits in two, so the mark is apart from the entry). */
interface Mark extends RankNode<Mark> {
  readonly entry: QueueEntry;
}

function markOf(entry: QueueEntry): Mark {
  return { entry, rankLeft: null, rankRight: null, rankPriority: 0, rankCount: 0, rankTotal: 0, rankWeight: entry.rankWeight };
}

function marksBefore(a: Mark, b: Mark): boolean {
  return ranksBefore(a.entry, b.entry);
}

/**
 * The queued requests bound to a node, in rank order: all of them, and those of each node. A
 * request bound to node N can only be delayed by work that may run on N's slots: the work ahead
 * of it less that of requests bound to other nodes, which this gives in O(log n). Unbound
 * requests are in none of these sets, so they pay nothing for them.
 */
export class BoundWork {
  private readonly all = new RankedSet<Mark>(marksBefore);
  private readonly byNode = new Map<string, RankedSet<Mark>>();
  private readonly marks = new Map<QueueEntry, { readonly all: Mark; readonly own: Mark }>();

  add(entry: QueueEntry, node: string): void {
    let own = this.byNode.get(node);
    if (!own) {
      own = new RankedSet<Mark>(marksBefore);
      this.byNode.set(node, own);
    }
    const marks = { all: markOf(entry), own: markOf(entry) };
    this.all.insert(marks.all);
    own.insert(marks.own);
    this.marks.set(entry, marks);
  }

  remove(entry: QueueEntry, node: string): void {
    const marks = this.marks.get(entry);
    if (!marks) return;
    this.marks.delete(entry);
    this.all.remove(marks.all);
    const own = this.byNode.get(node) as RankedSet<Mark>;
    own.remove(marks.own);
    // Nodes come and go: keep no empty set behind for one that left.
    if (own.size === 0) this.byNode.delete(node);
  }

  /**
   * Slot-milliseconds of the requests ranked before `entry` — queued, or a preview not in the
   * queue — that are bound to a node other than `node`: work that can never use `node`'s slots.
   */
  otherNodesBefore(entry: QueueEntry, node: string): number {
    const own = this.byNode.get(node);
    const marks = this.marks.get(entry);
    if (marks) return (this.all.rank(marks.all)?.weightBefore ?? 0) - (own?.rank(marks.own)?.weightBefore ?? 0);
    const probe = markOf(entry);
    return this.all.rankOf(probe).weightBefore - (own?.rankOf(probe).weightBefore ?? 0);
  }
}
