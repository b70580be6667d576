import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { billingMonth, creditTotals, displayMoney, parseMoney, priceOf, settleHold } from "../src/index.js";
import type { Event, Model, Setup } from "./billing-model.js";
import { newModel, step, walletState } from "./billing-model.js";

/**
 * docs/billing.md as properties over random event sequences (admit, grant from the queue, release, expire,
 * cancel, settle again, credit grants, time passing, a new month, opting in and out), driving the
 * core functions the server uses.
 */

const DAY = 86_400_000;

const setup: fc.Arbitrary<Setup> = fc.record({
  // A day in 2026; months change within a run.
  start: fc.integer({ min: Date.UTC(2026, 0, 1), max: Date.UTC(2026, 11, 31) }),
  quotaMs: fc.integer({ min: 0, max: 200 }).map((s) => s * 1000),
  capMicros: fc.oneof(fc.integer({ min: 0, max: 400_000 }), fc.integer({ min: 0, max: 5_000_000 })),
  initialMicros: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 1_000_000 })),
  optedIn: fc.boolean(),
  includedMicros: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 500_000 })),
  // $0.10 a minute, and prices that never divide evenly.
  pricePerMinuteMicros: fc.constantFrom(100_000, 7, 1_000_003, 59_999),
});

const event: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("admit" as const),
      durationS: fc.integer({ min: 1, max: 300 }),
      xlarge: fc.boolean(),
      queue: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("grantQueued" as const), pick: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("expire" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("settleAgain" as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("credits" as const),
      micros: fc.integer({ min: 1, max: 3_000_000 }),
      expiresInMs: fc.option(fc.integer({ min: 1, max: 10 * DAY }), { nil: null }),
      priority: fc.integer({ min: 0, max: 1 }),
      purchased: fc.boolean(),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 8 * 3_600_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("nextMonth" as const), offsetMs: fc.integer({ min: 0, max: DAY }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("optIn" as const), on: fc.boolean() }) },
);

const run = fc.record({ setup, events: fc.array(event, { minLength: 1, maxLength: 60 }) });

function replay(s: Setup, events: readonly Event[], check?: (m: Model) => void): Model {
  const m = newModel(s);
  for (const e of events) {
    step(m, e);
    check?.(m);
  }
  return m;
}

/** Every field named like money (`…Micros`, `micros`, `…_micros`) anywhere in `value` is a safe integer. */
function moneyFields(value: unknown, path = "$"): string[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => moneyFields(v, `${path}[${i}]`));
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const bad =
      /micros$/i.test(k) && (typeof v !== "object" || v === null) && !Number.isSafeInteger(v)
        ? [`${path}.${k} = ${String(v)}`]
        : [];
    return [...bad, ...moneyFields(v, `${path}.${k}`)];
  });
}

function invariants(m: Model): void {
  const live = m.leases.filter((l) => l.status !== "ended");
  // Balance never negative; each grant: 0 ≤ held ≤ remaining ≤ amount.
  const totals = creditTotals(m.grants, m.now);
  expect(totals.balanceMicros).toBeGreaterThanOrEqual(0);
  expect(totals.availableMicros).toBeGreaterThanOrEqual(0);
  for (const g of m.grants) {
    expect(g.heldMicros).toBeGreaterThanOrEqual(0);
    expect(g.heldMicros).toBeLessThanOrEqual(g.remainingMicros);
    expect(g.remainingMicros).toBeLessThanOrEqual(g.amountMicros);
  }
  // What is held is exactly the live leases' holds.
  expect(totals.heldMicros).toBe(live.reduce((n, l) => n + l.holdMicros, 0));
  // Holds + spends (+ expiries) ≤ grants, exactly accounted per grant by its transactions.
  for (const g of m.grants) {
    const of = (kind: string) =>
      m.log.filter((x) => x.grantId === g.id && x.kind === kind).reduce((n, x) => n + x.micros, 0);
    expect(of("grant")).toBe(g.amountMicros);
    expect(g.remainingMicros).toBe(g.amountMicros - of("spend") - of("expire"));
    expect(g.heldMicros).toBe(
      of("hold") -
        of("spend") -
        of("release") -
        m.log
          .filter((x) => x.grantId === g.id && x.kind === "expire" && x.lease !== null)
          .reduce((n, x) => n + x.micros, 0),
    );
    expect(g.heldMicros + of("spend")).toBeLessThanOrEqual(g.amountMicros);
  }
  // A month's spend (and what is held for it) never passes the cap.
  expect(m.monthSpentMicros + totals.heldMicros).toBeLessThanOrEqual(m.setup.capMicros);
  for (const spent of Object.values(m.spentByMonth)) expect(spent).toBeLessThanOrEqual(m.setup.capMicros);
  // The split covers the reservation exactly; a charge never passes the hold.
  for (const l of m.leases) {
    expect(l.quotaMs + l.overageMs).toBe(l.reservedMs);
    expect(l.reservedMs).toBe(l.durationMs * l.cost);
    // Quota first: all that was left (or the whole call), the rest overage at the price, rounded up.
    expect(l.quotaMs).toBe(Math.min(l.reservedMs, l.leftAtAdmission));
    expect(l.holdMicros).toBe(priceOf(l.overageMs, m.setup.pricePerMinuteMicros));
    expect(l.chargedMicros).toBeLessThanOrEqual(l.holdMicros);
    expect(l.shares.reduce((n, s) => n + s.micros, 0)).toBe(l.holdMicros);
  }
  // The ledger reserves exactly the quota part of the leases in flight.
  expect(m.ledger.reservedMs).toBe(live.reduce((n, l) => n + l.quotaMs, 0));
  expect(moneyFields(m)).toEqual([]);
  expect(moneyFields(walletState(m))).toEqual([]);
}

describe("billing over random event sequences (property)", () => {
  it("balance ≥ 0, holds + spends ≤ grants, month spend ≤ cap, quota_s + overage_s = reservation, money whole", () => {
    const seen = { split: 0, spend: 0, released: 0, expired: 0, capped: 0, exhausted: 0 };
    fc.assert(
      fc.property(run, ({ setup: s, events }) => {
        const m = replay(s, events, invariants);
        seen.split += m.leases.filter((l) => l.quotaMs > 0 && l.overageMs > 0).length;
        seen.spend += m.log.filter((x) => x.kind === "spend").length;
        seen.released += m.log.filter((x) => x.kind === "release").length;
        seen.expired += m.log.filter((x) => x.kind === "expire").length;
        seen.capped += m.refusals["spend_cap_reached"] ?? 0;
        seen.exhausted += m.refusals["credits_exhausted"] ?? 0;
      }),
      { numRuns: 400 },
    );
    // The runs did exercise every path.
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(0);
  });

  it("replaying the same events gives the same wallet, ledger and transactions", () => {
    fc.assert(
      fc.property(run, ({ setup: s, events }) => {
        expect(replay(s, events)).toEqual(replay(s, events));
      }),
      { numRuns: 150 },
    );
  });

  it("a 402 is never spurious: credits_exhausted only when the hold passes what is available, spend_cap_reached only past the cap", () => {
    let seen = 0;
    fc.assert(
      fc.property(run, ({ setup: s, events }) => {
        const m = newModel(s);
        for (const e of events) {
          step(m, e);
          if (e.kind !== "admit" || m.lastRefusal === null) continue;
          const f = m.lastRefusal.fields as Record<string, number>;
          const w = walletState(m); // the refusal changed nothing, so this is the wallet it saw
          if (m.lastRefusal.code === "credits_exhausted") {
            seen++;
            expect(f["available_micros"]).toBe(w.availableMicros);
            expect(f["needed_micros"]!).toBeGreaterThan(w.availableMicros);
          }
          if (m.lastRefusal.code === "spend_cap_reached") {
            seen++;
            expect(f["needed_micros"]!).toBeLessThanOrEqual(w.availableMicros);
            expect(f["spent_micros"]! + f["held_micros"]! + f["needed_micros"]!).toBeGreaterThan(s.capMicros);
            expect(f["cap_micros"]).toBe(s.capMicros);
          }
        }
      }),
      { numRuns: 200 },
    );
    expect(seen).toBeGreaterThan(0);
  });

  it("settlement is idempotent as the server does it: a second settle of an ended lease changes nothing", () => {
    fc.assert(
      fc.property(run, fc.nat(), ({ setup: s, events }, pick) => {
        const m = replay(s, events);
        if (!m.leases.some((l) => l.status === "ended")) return;
        const before = structuredClone({ grants: m.grants, log: m.log, spent: m.monthSpentMicros });
        step(m, { kind: "settleAgain", pick });
        expect({ grants: m.grants, log: m.log, spent: m.monthSpentMicros }).toEqual(before);
      }),
      { numRuns: 150 },
    );
  });
});

describe("money is whole micro-units (property)", () => {
  it("every decimal amount parseMoney accepts is an exact safe integer that displays back to itself", () => {
    const decimal = fc
      .tuple(fc.bigInt({ min: 0n, max: 999_999_999_999n }), fc.option(fc.integer({ min: 0, max: 999_999 })))
      .map(([units, frac]) => (frac === null ? `${units}` : `${units}.${String(frac).padStart(6, "0")}`));
    fc.assert(
      fc.property(decimal, (text) => {
        const p = parseMoney(text);
        if (!p.ok) return;
        expect(Number.isSafeInteger(p.micros), `${text} → ${p.micros}`).toBe(true);
        const [units, frac = ""] = text.split(".");
        expect(BigInt(p.micros)).toBe(BigInt(units!) * 1_000_000n + BigInt(frac.padEnd(6, "0")));
        expect(displayMoney(p.micros, "CHF").replace(/,/g, "")).toMatch(/^[0-9]+\.[0-9]{2,6} CHF$/);
      }),
      { numRuns: 500 },
    );
  });

  it("a price is a whole number of micro-units, never less than the exact price and less than one more", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 300_000 * 8 }), fc.integer({ min: 0, max: 10_000_000 }), (ms, price) => {
        const p = priceOf(ms, price);
        expect(Number.isSafeInteger(p)).toBe(true);
        expect(BigInt(p) * 60_000n).toBeGreaterThanOrEqual(BigInt(ms) * BigInt(price));
        expect((BigInt(p) - 1n) * 60_000n < BigInt(ms) * BigInt(price) || p === 0).toBe(true);
      }),
    );
  });

  it("settleHold on its own does not guard against a second settle (the lease's status must)", () => {
    const now = billingMonth(Date.UTC(2026, 5, 10)).startsAt + 1;
    const g = {
      id: "g",
      category: "purchased" as const,
      amountMicros: 100,
      remainingMicros: 100,
      heldMicros: 40,
      priority: 0,
      effectiveAt: 0,
      expiresAt: null,
      source: "t",
      createdAt: 0,
    };
    const once = settleHold([g], [{ grantId: "g", micros: 40 }], 30, now);
    expect(once.grants[0]).toMatchObject({ remainingMicros: 70, heldMicros: 0 });
    const twice = settleHold(once.grants, [{ grantId: "g", micros: 40 }], 30, now);
    // Documented here so a change to this contract is noticed: a second settle would take the money again.
    expect(twice.grants[0]!.heldMicros).toBeLessThan(0);
  });
});
