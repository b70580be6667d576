/**
 * A binary min-heap whose items know their own place in it, so that removing or re-ordering an
 * arbitrary item costs O(log n) instead of a linear search. Each item may sit in several heaps
 * at once: every heap is given its own accessors for the slot it stores the index in.
 *
 * The index is -1 while the item is in no heap of this kind.
 */
export class IndexedHeap<T> {
  private readonly items: T[] = [];

  constructor(
    /** Strict order: true when `a` must come out before `b`. */
    private readonly before: (a: T, b: T) => boolean,
    private readonly getIndex: (item: T) => number,
    private readonly setIndex: (item: T, index: number) => void,
  ) {}

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  has(item: T): boolean {
    const i = this.getIndex(item);
    return i >= 0 && i < this.items.length && this.items[i] === item;
  }

  push(item: T): void {
    if (this.has(item)) throw new Error("item is already in the heap");
    this.items.push(item);
    this.setIndex(item, this.items.length - 1);
    this.up(this.items.length - 1);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top !== undefined) this.remove(top);
    return top;
  }

  /** Removes `item`; false when it was not in this heap. */
  remove(item: T): boolean {
    if (!this.has(item)) return false;
    const i = this.getIndex(item);
    const last = this.items.pop() as T;
    this.setIndex(item, -1);
    if (i < this.items.length) {
      this.items[i] = last;
      this.setIndex(last, i);
      this.restore(i);
    }
    return true;
  }

  /** Re-places `item` after its key changed (either way). */
  update(item: T): void {
    if (!this.has(item)) throw new Error("item is not in the heap");
    this.restore(this.getIndex(item));
  }

  /** Items in heap (not sorted) order. */
  values(): readonly T[] {
    return this.items;
  }

  private restore(i: number): void {
    if (!this.up(i)) this.down(i);
  }

  private up(start: number): boolean {
    const items = this.items;
    let i = start;
    const item = items[i] as T;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent] as T;
      if (!this.before(item, p)) break;
      items[i] = p;
      this.setIndex(p, i);
      i = parent;
    }
    if (i === start) return false;
    items[i] = item;
    this.setIndex(item, i);
    return true;
  }

  private down(start: number): void {
    const items = this.items;
    const n = items.length;
    let i = start;
    const item = items[i] as T;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && this.before(items[r] as T, items[l] as T)) c = r;
      const child = items[c] as T;
      if (!this.before(child, item)) break;
      items[i] = child;
      this.setIndex(child, i);
      i = c;
    }
    if (i !== start) {
      items[i] = item;
      this.setIndex(item, i);
    }
  }
}
