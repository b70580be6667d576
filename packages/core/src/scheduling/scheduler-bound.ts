import type { QueueEntry } from "./scheduler-lanes.js";
import { copyEntry, ranksBefore } from "./scheduler-lanes.js";
import { RankedSet } from "./scheduler-rank.js";

/**
 * The queued requests bound to a node, in rank order: all of them, and those of each node. A
 * request bound to node N can only be delayed by work that may run on N's slots: the work ahead
 * of it less that of requests bound to other nodes, which this gives in O(log n). Unbound
 * requests are in none of these sets, so they pay nothing for them.
 *
 * The sets hold copies of the entries (see newEntry), keyed by the queued entry.
 */
export class BoundWork {
  private readonly all = new RankedSet<QueueEntry>(ranksBefore);
  private readonly byNode = new Map<string, RankedSet<QueueEntry>>();
  private readonly copies = new Map<QueueEntry, { readonly all: QueueEntry; readonly own: QueueEntry }>();

  add(entry: QueueEntry, node: string): void {
    let own = this.byNode.get(node);
    if (!own) {
      own = new RankedSet<QueueEntry>(ranksBefore);
      this.byNode.set(node, own);
    }
    const copies = { all: copyEntry(entry), own: copyEntry(entry) };
    this.all.insert(copies.all);
    own.insert(copies.own);
    this.copies.set(entry, copies);
  }

  remove(entry: QueueEntry, node: string): void {
    const copies = this.copies.get(entry);
    if (!copies) return;
    this.copies.delete(entry);
    this.all.remove(copies.all);
    const own = this.byNode.get(node) as RankedSet<QueueEntry>;
    own.remove(copies.own);
    // Nodes come and go: keep no empty set behind for one that left.
    if (own.size === 0) this.byNode.delete(node);
  }

  /**
   * Slot-milliseconds of the requests ranked before `entry` — queued, or a preview not in the
   * queue — that are bound to a node other than `node`: work that can never use `node`'s slots.
   */
  otherNodesBefore(entry: QueueEntry, node: string): number {
    const own = this.byNode.get(node);
    const copies = this.copies.get(entry);
    if (copies) return (this.all.rank(copies.all)?.weightBefore ?? 0) - (own?.rank(copies.own)?.weightBefore ?? 0);
    return this.all.rankOf(entry).weightBefore - (own?.rankOf(entry).weightBefore ?? 0);
  }
}
