import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RankedSet } from "../src/scheduling/scheduler-rank.js";
import type { RankNode } from "../src/scheduling/scheduler-rank.js";

/**
 * The order-statistics treap's running minimum of `mark − load before` (what the promise checks
 * read in O(log n): over all items, over those before an item, the last below a threshold after a
 * probe) agrees with a walk over the items in order, through random inserts, removals, mark and
 * load changes.
 */

interface Item extends RankNode<Item> {
  readonly key: number;
}

function item(key: number, weight: number, mark: number): Item {
  return {
    key,
    rankLeft: null,
    rankRight: null,
    rankPriority: 0,
    rankCount: 0,
    rankTotal: 0,
    rankWeight: weight,
    rankLoad: weight,
    rankTotalLoad: 0,
    rankMark: mark,
    rankMinMark: Number.POSITIVE_INFINITY,
  };
}

type Op =
  | { kind: "insert"; key: number; weight: number; mark: number | null }
  | { kind: "remove"; at: number }
  | { kind: "mark"; at: number; mark: number | null }
  | { kind: "load"; at: number; load: number }
  | { kind: "remark"; shift: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("insert" as const),
    key: fc.integer({ min: 0, max: 60 }),
    weight: fc.integer({ min: 1, max: 100 }),
    mark: fc.option(fc.integer({ min: -200, max: 2_000 }), { nil: null }),
  }),
  fc.record({ kind: fc.constant("remove" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("mark" as const),
    at: fc.nat(),
    mark: fc.option(fc.integer({ min: -200, max: 2_000 }), { nil: null }),
  }),
  fc.record({
    kind: fc.constant("load" as const),
    at: fc.nat(),
    load: fc.integer({ min: 0, max: 100 }),
  }),
  fc.record({ kind: fc.constant("remark" as const), shift: fc.integer({ min: -50, max: 50 }) }),
);

describe("RankedSet marks", () => {
  it("agree with a walk in order: the last item after a probe below a threshold, the least mark before an item and of all", () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 80 }),
        fc.integer({ min: -100, max: 2_500 }),
        (ops, threshold) => {
          let ord = 0;
          const ords = new Map<Item, number>();
          const before = (a: Item, b: Item): boolean =>
            a.key !== b.key ? a.key < b.key : (ords.get(a) as number) < (ords.get(b) as number);
          const set = new RankedSet<Item>(before);
          const items: Item[] = [];
          const mark = (m: number | null): number => m ?? Number.POSITIVE_INFINITY;
          for (const op of ops) {
            if (op.kind === "insert") {
              const it = item(op.key, op.weight, mark(op.mark));
              ords.set(it, ord++);
              set.insert(it);
              items.push(it);
            } else if (op.kind === "remove" && items.length > 0) {
              const [it] = items.splice(op.at % items.length, 1);
              set.remove(it as Item);
            } else if (op.kind === "mark" && items.length > 0) {
              set.setMark(items[op.at % items.length] as Item, mark(op.mark));
            } else if (op.kind === "load" && items.length > 0) {
              set.setLoad(items[op.at % items.length] as Item, op.load);
            } else if (op.kind === "remark") {
              set.remark((it) => it.rankMark + op.shift);
            }
          }
          const inOrder = [...set.values()];
          expect(inOrder).toHaveLength(items.length);
          // Brute force: each item's mark less the load before it, and the weight before each.
          let w = 0;
          let load = 0;
          const slack = new Map<Item, number>();
          for (const it of inOrder) {
            slack.set(it, it.rankMark - load);
            expect(set.rank(it)?.weightBefore).toBe(w);
            load += it.rankLoad;
            w += it.rankWeight;
          }
          expect(set.minMark).toBe(Math.min(Number.POSITIVE_INFINITY, ...slack.values()));
          for (const probeKey of [-1, 0, 10, 30, 61]) {
            const probe = item(probeKey, 1, Number.POSITIVE_INFINITY);
            ords.set(probe, ord);
            const ahead = inOrder.filter((it) => before(it, probe)).reduce((sum, it) => sum + it.rankLoad, 0);
            expect(set.loadBefore(probe)).toBe(ahead);
            const after = inOrder.filter((it) => before(probe, it) && (slack.get(it) as number) < threshold);
            expect(set.lastMarkBelowAfter(probe, threshold)).toBe(after.length > 0 ? after[after.length - 1] : null);
            ords.delete(probe);
          }
          inOrder.forEach((it, i) => {
            const least = Math.min(Number.POSITIVE_INFINITY, ...inOrder.slice(0, i).map((x) => slack.get(x) as number));
            expect(set.minMarkBefore(it)).toBe(least);
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});
