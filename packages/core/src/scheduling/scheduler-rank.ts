/** The fields an item carries to sit in a RankedSet (kept on the item: one allocation per item). */
export interface RankNode<T> {
  rankLeft: T | null;
  rankRight: T | null;
  /** Heap priority of the treap; 0 while the item is in no set. */
  rankPriority: number;
  /** Items in this subtree. */
  rankCount: number;
  /** Sum of the items' weights in this subtree. */
  rankTotal: number;
  readonly rankWeight: number;
  /**
   * A second weight, which may change while the item is in the set (`setLoad`): what the marks are
   * measured against (promises: the slot-time of a call some device could take, else 0).
   */
  rankLoad: number;
  /** Sum of the items' loads in this subtree. */
  rankTotalLoad: number;
  /**
   * A value the set keeps a running minimum of, less the load before each item (promises:
   * slot-time by the promise, see scheduler-promise.ts); +Infinity for an item that has none.
   * Set it before the item is inserted, or through `setMark`.
   */
  rankMark: number;
  /** Over this subtree: min of `rankMark − load of the subtree's items before it`. */
  rankMinMark: number;
}

/**
 * An ordered set with order statistics: insert, remove, and "how many items (and how much
 * weight) come before this one" in O(log n) expected time. A treap: a binary search tree on the
 * items' order that is also a max-heap on a per-node priority, which keeps it balanced on average
 * whatever the insertion order.
 *
 * The priorities come from a fixed-seed xorshift generator, not from Math.random, so the same
 * sequence of operations always builds the same tree (the core stays deterministic).
 *
 * `before` must be a strict total order: no two items in the set may compare equal.
 */
export class RankedSet<T extends RankNode<T>> {
  private root: T | null = null;
  private seed = 0x9e3779b9;

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.root === null ? 0 : this.root.rankCount;
  }

  /** Min over every item of `rankMark − load before it` (+Infinity when none has a mark). */
  get minMark(): number {
    return this.root === null ? Number.POSITIVE_INFINITY : this.root.rankMinMark;
  }

  /** Sum of the weights of every item. */
  get totalWeight(): number {
    return this.root === null ? 0 : this.root.rankTotal;
  }

  has(item: T): boolean {
    return item.rankPriority !== 0;
  }

  insert(item: T): void {
    if (item.rankPriority !== 0) throw new Error("item is already in the set");
    item.rankPriority = this.nextPriority();
    item.rankLeft = null;
    item.rankRight = null;
    item.rankCount = 1;
    item.rankTotal = item.rankWeight;
    item.rankTotalLoad = item.rankLoad;
    item.rankMinMark = item.rankMark;
    this.root = this.insertAt(this.root, item);
  }

  remove(item: T): boolean {
    if (item.rankPriority === 0) return false;
    this.root = this.removeAt(this.root, item);
    item.rankPriority = 0;
    item.rankLeft = null;
    item.rankRight = null;
    return true;
  }

  /** Items strictly before `item` and their total weight; null when `item` is not in the set. */
  rank(item: T): { before: number; weightBefore: number } | null {
    if (item.rankPriority === 0) return null;
    let before = 0;
    let weightBefore = 0;
    let node = this.root;
    while (node !== null) {
      if (node === item) {
        before += node.rankLeft?.rankCount ?? 0;
        weightBefore += node.rankLeft?.rankTotal ?? 0;
        return { before, weightBefore };
      }
      if (this.before(item, node)) {
        node = node.rankLeft;
      } else {
        before += (node.rankLeft?.rankCount ?? 0) + 1;
        weightBefore += (node.rankLeft?.rankTotal ?? 0) + node.rankWeight;
        node = node.rankRight;
      }
    }
    throw new Error("ranked set out of order: an item in the set was not found by its key");
  }

  /** The load of the items strictly before a value that need not be in the set. O(log n). */
  loadBefore(probe: T): number {
    let load = 0;
    let node = this.root;
    while (node !== null) {
      if (this.before(probe, node)) {
        node = node.rankLeft;
      } else {
        load += (node.rankLeft?.rankTotalLoad ?? 0) + node.rankLoad;
        node = node.rankRight;
      }
    }
    return load;
  }

  /** Items strictly before a value that need not be in the set (where it would be inserted). */
  rankOf(probe: T): { before: number; weightBefore: number } {
    let before = 0;
    let weightBefore = 0;
    let node = this.root;
    while (node !== null) {
      if (this.before(probe, node)) {
        node = node.rankLeft;
      } else {
        before += (node.rankLeft?.rankCount ?? 0) + 1;
        weightBefore += (node.rankLeft?.rankTotal ?? 0) + node.rankWeight;
        node = node.rankRight;
      }
    }
    return { before, weightBefore };
  }

  /** Min of `rankMark − load before it` over the items strictly before `item` (in the set); +Infinity when none. O(log n). */
  minMarkBefore(item: T): number {
    let best = Number.POSITIVE_INFINITY;
    let off = 0;
    let node = this.root;
    while (node !== null) {
      const l = node.rankLeft;
      if (node !== item && this.before(item, node)) {
        node = l;
        continue;
      }
      const lt = l === null ? 0 : l.rankTotalLoad;
      if (l !== null && l.rankMinMark - off < best) best = l.rankMinMark - off;
      if (node === item) return best;
      if (node.rankMark - off - lt < best) best = node.rankMark - off - lt;
      off += lt + node.rankLoad;
      node = node.rankRight;
    }
    return best;
  }

  /**
   * The last item (in order) that comes after `probe` (which need not be in the set) and has
   * `rankMark − load before it < threshold`, or null. O(log n): subtrees whose minimum is not
   * below the threshold are skipped whole.
   */
  lastMarkBelowAfter(probe: T, threshold: number): T | null {
    return this.lastBelow(this.root, 0, probe, threshold, false);
  }

  /** Sets an item's mark (in the set or not) and the minima above it. O(log n). */
  setMark(item: T, mark: number): void {
    this.update(item, () => {
      item.rankMark = mark;
    });
  }

  /** Sets an item's load (in the set or not) and the sums and minima above it. O(log n). */
  setLoad(item: T, load: number): void {
    this.update(item, () => {
      item.rankLoad = load;
    });
  }

  private update(item: T, change: () => void): void {
    if (item.rankPriority === 0) {
      change();
      return;
    }
    const path: T[] = [];
    let node = this.root;
    while (node !== null && node !== item) {
      path.push(node);
      node = this.before(item, node) ? node.rankLeft : node.rankRight;
    }
    if (node === null) throw new Error("ranked set out of order: an item in the set was not found by its key");
    change();
    this.pull(item);
    for (let i = path.length - 1; i >= 0; i--) this.pull(path[i] as T);
  }

  /** Gives every item the mark `mark(item)` at once (after a change that moves them all). O(n). */
  remark(mark: (item: T) => number): void {
    const visit = (node: T | null): void => {
      if (node === null) return;
      visit(node.rankLeft);
      visit(node.rankRight);
      node.rankMark = mark(node);
      this.pull(node);
    };
    visit(this.root);
  }

  /** Items in order. */
  *values(): Generator<T> {
    const stack: T[] = [];
    let node = this.root;
    while (node !== null || stack.length > 0) {
      while (node !== null) {
        stack.push(node);
        node = node.rankLeft;
      }
      const top = stack.pop() as T;
      yield top;
      node = top.rankRight;
    }
  }

  private lastBelow(node: T | null, off: number, probe: T, threshold: number, allAfter: boolean): T | null {
    if (node === null || node.rankMinMark - off >= threshold) return null;
    const lt = node.rankLeft === null ? 0 : node.rankLeft.rankTotalLoad;
    const after = allAfter || this.before(probe, node);
    // Everything right of an item after the probe is after it too; left of one before it, before it.
    const right = this.lastBelow(node.rankRight, off + lt + node.rankLoad, probe, threshold, after);
    if (right !== null) return right;
    if (!after) return null;
    if (node.rankMark - off - lt < threshold) return node;
    return this.lastBelow(node.rankLeft, off, probe, threshold, allAfter);
  }

  private nextPriority(): number {
    // xorshift32: a full-period generator over the non-zero 32-bit integers (never 0, the "not in a set" mark).
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }

  private pull(node: T): void {
    const l = node.rankLeft;
    const r = node.rankRight;
    node.rankCount = 1 + (l === null ? 0 : l.rankCount) + (r === null ? 0 : r.rankCount);
    node.rankTotal = node.rankWeight + (l === null ? 0 : l.rankTotal) + (r === null ? 0 : r.rankTotal);
    const lt = l === null ? 0 : l.rankTotalLoad;
    node.rankTotalLoad = node.rankLoad + lt + (r === null ? 0 : r.rankTotalLoad);
    let min = l === null ? Number.POSITIVE_INFINITY : l.rankMinMark;
    if (node.rankMark - lt < min) min = node.rankMark - lt;
    if (r !== null && r.rankMinMark - lt - node.rankLoad < min) min = r.rankMinMark - lt - node.rankLoad;
    node.rankMinMark = min;
  }

  private insertAt(root: T | null, node: T): T {
    if (root === null) return node;
    if (node.rankPriority > root.rankPriority) {
      this.split(root, node);
      this.pull(node);
      return node;
    }
    if (this.before(node, root)) root.rankLeft = this.insertAt(root.rankLeft, node);
    else root.rankRight = this.insertAt(root.rankRight, node);
    this.pull(root);
    return root;
  }

  /** Splits `root` around `key` into key.rankLeft (items before it) and key.rankRight (the rest). */
  private split(root: T | null, key: T): void {
    let left: T | null = null;
    let right: T | null = null;
    // Iterative split: hang each visited node on the right spine of `left` or the left spine of `right`.
    let leftTail: T | null = null;
    let rightTail: T | null = null;
    const path: T[] = [];
    let node = root;
    while (node !== null) {
      path.push(node);
      if (this.before(node, key)) {
        if (leftTail === null) left = node;
        else leftTail.rankRight = node;
        leftTail = node;
        node = node.rankRight;
      } else {
        if (rightTail === null) right = node;
        else rightTail.rankLeft = node;
        rightTail = node;
        node = node.rankLeft;
      }
    }
    if (leftTail !== null) leftTail.rankRight = null;
    if (rightTail !== null) rightTail.rankLeft = null;
    for (let i = path.length - 1; i >= 0; i--) this.pull(path[i] as T);
    key.rankLeft = left;
    key.rankRight = right;
  }

  private merge(a: T | null, b: T | null): T | null {
    if (a === null) return b;
    if (b === null) return a;
    if (a.rankPriority > b.rankPriority) {
      a.rankRight = this.merge(a.rankRight, b);
      this.pull(a);
      return a;
    }
    b.rankLeft = this.merge(a, b.rankLeft);
    this.pull(b);
    return b;
  }

  private removeAt(root: T | null, item: T): T | null {
    if (root === null) throw new Error("ranked set out of order: removing an item not found by its key");
    if (root === item) return this.merge(root.rankLeft, root.rankRight);
    if (this.before(item, root)) root.rankLeft = this.removeAt(root.rankLeft, item);
    else root.rankRight = this.removeAt(root.rankRight, item);
    this.pull(root);
    return root;
  }
}
