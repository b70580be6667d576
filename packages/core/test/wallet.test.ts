import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  billingMonth,
  creditTotals,
  displayMoney,
  expireGrants,
  gpuMsFor,
  includedGrant,
  parseMoney,
  placeHold,
  priceOf,
  settleHold,
  spendingOrder,
} from "../src/index.js";
import type { CreditGrant, GrantCategory, GrantShare } from "../src/index.js";

const T0 = Date.UTC(2026, 11, 5, 12);

function grant(id: string, o: Partial<CreditGrant> = {}): CreditGrant {
  const amount = o.amountMicros ?? 1_000_000;
  return {
    id,
    category: "purchased",
    amountMicros: amount,
    remainingMicros: amount,
    heldMicros: 0,
    priority: 0,
    effectiveAt: T0 - 1,
    expiresAt: null,
    source: "test",
    createdAt: T0 - 1,
    ...o,
  };
}

describe("money", () => {
  it("parses decimal strings into whole micro-units, and refuses everything else with a reason", () => {
    expect(parseMoney("10.00")).toEqual({ ok: true, micros: 10_000_000 });
    expect(parseMoney("0.000001")).toEqual({ ok: true, micros: 1 });
    expect(parseMoney("5")).toEqual({ ok: true, micros: 5_000_000 });
    for (const bad of ["-1", "1e3", "1,000", " 1", "1.", ".5", "0x10", "", "NaN", "1.0000001", "99999999999999"]) {
      expect(parseMoney(bad).ok, bad).toBe(false);
    }
    expect(parseMoney("0", { positive: true })).toMatchObject({ ok: false, message: "must be more than 0" });
    expect(parseMoney("-2.00")).toMatchObject({ ok: false, message: "must not be negative" });
    expect(parseMoney("1.1234567")).toMatchObject({ ok: false, message: expect.stringMatching(/6 decimal places/) });
  });

  it("displays amounts for people, with two decimals unless it needs more", () => {
    expect(displayMoney(1_250_000, "USD")).toBe("$1.25");
    expect(displayMoney(167, "USD")).toBe("$0.000167");
    expect(displayMoney(-2_000_000, "USD")).toBe("-$2.00");
    expect(displayMoney(1_234_567_890_000, "USD")).toBe("$1,234,567.89");
    expect(displayMoney(3_500_000, "CHF")).toBe("3.50 CHF");
  });

  it("parse and display agree, and a price is always a whole number of micro-units, rounded up (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e15 }), (micros) => {
        const shown = displayMoney(micros, "USD").replace("$", "").replaceAll(",", "");
        expect(parseMoney(shown)).toEqual({ ok: true, micros });
      }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 7 * 86_400_000 }), fc.integer({ min: 1, max: 1e9 }), (ms, price) => {
        const p = priceOf(ms, price);
        expect(Number.isSafeInteger(p)).toBe(true);
        // Never less than the exact price, and less than one micro-unit more (checked in integers).
        const exact = BigInt(ms) * BigInt(price);
        expect(BigInt(p) * 60_000n >= exact).toBe(true);
        expect(BigInt(p) * 60_000n - exact < 60_000n).toBe(true);
        // What a price buys never exceeds what was paid for.
        expect(priceOf(gpuMsFor(p, price), price)).toBeLessThanOrEqual(p);
      }),
    );
  });

  it("$1 per 10 GPU-minutes: an overage minute costs $0.10, an xlarge second at cost ×2 two sixtieths of it", () => {
    expect(priceOf(60_000, 100_000)).toBe(100_000);
    expect(priceOf(2_000, 100_000)).toBe(3_334);
  });
});

describe("grants", () => {
  it("are spent in order: priority, soonest expiry (none last), included before promotional before purchased, oldest", () => {
    const gs = [
      grant("bought", { category: "purchased" }),
      grant("promo", { category: "promotional" }),
      grant("included", { category: "included" }),
      grant("expiring", { category: "purchased", expiresAt: T0 + 1000 }),
      grant("first", { category: "purchased", priority: -1 }),
      grant("older-promo", { category: "promotional", createdAt: T0 - 100 }),
    ];
    expect([...gs].sort(spendingOrder).map((g) => g.id)).toEqual([
      "first",
      "expiring",
      "included",
      "older-promo",
      "promo",
      "bought",
    ]);
  });

  it("a hold is earmarked in spending order, and a settlement spends from exactly those earmarks", () => {
    const gs = [grant("a", { amountMicros: 300, category: "included" }), grant("b", { amountMicros: 500 })];
    const held = placeHold(gs, 400, T0);
    expect(held?.shares).toEqual([
      { grantId: "a", micros: 300 },
      { grantId: "b", micros: 100 },
    ]);
    expect(creditTotals(held!.grants, T0)).toEqual({ balanceMicros: 800, heldMicros: 400, availableMicros: 400 });
    const settled = settleHold(held!.grants, held!.shares, 350, T0);
    expect(settled.spent).toEqual([
      { grantId: "a", micros: 300 },
      { grantId: "b", micros: 50 },
    ]);
    expect(settled.released).toEqual([{ grantId: "b", micros: 50 }]);
    expect(creditTotals(settled.grants, T0)).toEqual({ balanceMicros: 450, heldMicros: 0, availableMicros: 450 });
    expect(placeHold(settled.grants, 451, T0)).toBeNull();
  });

  it("a grant that expires while held loses only what nobody holds; the held part is spent or expires at settlement", () => {
    const gs = [grant("month", { amountMicros: 1_000, category: "included", expiresAt: T0 + 10 })];
    const held = placeHold(gs, 600, T0)!;
    const expired = expireGrants(held.grants, T0 + 10);
    expect(expired.expired).toEqual([{ grantId: "month", micros: 400 }]);
    expect(creditTotals(expired.grants, T0 + 10)).toEqual({ balanceMicros: 0, heldMicros: 600, availableMicros: 0 });
    const settled = settleHold(expired.grants, held.shares, 200, T0 + 20);
    expect(settled).toMatchObject({
      spent: [{ grantId: "month", micros: 200 }],
      released: [],
      expired: [{ grantId: "month", micros: 400 }],
    });
    expect(settled.grants[0]).toMatchObject({ remainingMicros: 0, heldMicros: 0 });
  });

  it("included credits are one grant per user and month, expiring at the month's end", () => {
    const g = includedGrant("u_1", "pro", 2_000_000, Date.UTC(2026, 11, 31, 23, 59));
    expect(g).toMatchObject({
      id: "inc_2026-12_u_1",
      category: "included",
      effectiveAt: Date.UTC(2026, 11, 1),
      expiresAt: Date.UTC(2027, 0, 1),
    });
    expect(includedGrant("u_1", "pro", 2_000_000, Date.UTC(2026, 11, 1)).id).toBe(g.id);
    expect(billingMonth(Date.UTC(2027, 0, 1)).name).toBe("2027-01");
  });
});

type Op = { t: "hold"; micros: number } | { t: "settle"; pick: number; share: number } | { t: "advance"; ms: number };

const categories: GrantCategory[] = ["included", "promotional", "purchased"];
const grantArb = fc.record({
  amount: fc.integer({ min: 0, max: 5_000 }),
  category: fc.constantFrom(...categories),
  priority: fc.integer({ min: 0, max: 2 }),
  expiresIn: fc.option(fc.integer({ min: 1, max: 50 }), { nil: null }),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant("hold" as const), micros: fc.integer({ min: 0, max: 3_000 }) }),
  fc.record({ t: fc.constant("settle" as const), pick: fc.nat(), share: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 20 }) }),
);

describe("wallet invariants (property)", () => {
  it("never negative, holds + spends never above what was granted, a refused hold changes nothing, and the same events give the same wallet", () => {
    fc.assert(
      fc.property(
        fc.array(grantArb, { minLength: 0, maxLength: 5 }),
        fc.array(opArb, { maxLength: 60 }),
        (specs, ops) => {
          const run = () => {
            let now = T0;
            let grants: CreditGrant[] = specs.map((s, i) =>
              grant(`g${i}`, {
                amountMicros: s.amount,
                category: s.category,
                priority: s.priority,
                expiresAt: s.expiresIn === null ? null : T0 + s.expiresIn,
              }),
            );
            const granted = grants.reduce((sum, g) => sum + g.amountMicros, 0);
            const holds: GrantShare[][] = [];
            let spent = 0;
            let expired = 0;
            for (const op of ops) {
              if (op.t === "advance") {
                now += op.ms;
                const e = expireGrants(grants, now);
                grants = e.grants;
                expired += e.expired.reduce((sum, s) => sum + s.micros, 0);
              } else if (op.t === "hold") {
                const before = creditTotals(grants, now);
                const h = placeHold(grants, op.micros, now);
                if (h === null) {
                  expect(op.micros).toBeGreaterThan(before.availableMicros);
                } else {
                  expect(op.micros).toBeLessThanOrEqual(before.availableMicros);
                  grants = h.grants;
                  holds.push(h.shares);
                }
              } else if (holds.length > 0) {
                const [hold] = holds.splice(op.pick % holds.length, 1);
                const total = hold!.reduce((sum, s) => sum + s.micros, 0);
                const s = settleHold(grants, hold!, Math.floor(total * op.share), now);
                grants = s.grants;
                spent += s.spent.reduce((sum, x) => sum + x.micros, 0);
                expired += s.expired.reduce((sum, x) => sum + x.micros, 0);
              }
              for (const g of grants) {
                expect(g.heldMicros).toBeGreaterThanOrEqual(0);
                expect(g.remainingMicros).toBeGreaterThanOrEqual(g.heldMicros);
                expect(g.remainingMicros).toBeLessThanOrEqual(g.amountMicros);
              }
              const remaining = grants.reduce((sum, g) => sum + g.remainingMicros, 0);
              // Every micro-unit granted is left, spent or expired: nothing appears or vanishes.
              expect(remaining + spent + expired).toBe(granted);
              expect(creditTotals(grants, now).availableMicros).toBeGreaterThanOrEqual(0);
            }
            return grants;
          };
          expect(run()).toEqual(run());
        },
      ),
    );
  });
});
