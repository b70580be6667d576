import { describe, expect, it } from "vitest";
import {
  DEFAULT_POLICY,
  EMPTY_LEDGER,
  chargeMs,
  quotaOf,
  quotaView,
  reserve,
  rollWindow,
  settle,
  startWindow,
  tierOf,
  unreserve,
  admittedInCurrentWindow,
} from "../src/index.js";
import type { LedgerState } from "../src/index.js";
import { ANON_IP, FREE_USER, PRO_USER, S, T0, input, ledger } from "./helpers.js";

const W = DEFAULT_POLICY.windowMs;
const FREE = tierOf(DEFAULT_POLICY, "free");

describe("window", () => {
  it("has no window before the first grant, and rolling does nothing then", () => {
    const l = ledger({ reservedMs: 60 * S, runs: 1 });
    expect(rollWindow(l, T0 + 10 * W, W)).toBe(l);
  });

  it("starts at the first grant, not at admission or midnight", () => {
    const admitted = reserve(input({ identity: FREE_USER, now: T0 }));
    expect(admitted.ok).toBe(true);
    if (!admitted.ok) return;
    expect(admitted.ledger.windowStartedAt).toBeNull();
    const granted = startWindow(admitted.ledger, T0 + 5000);
    expect(granted.windowStartedAt).toBe(T0 + 5000);
    // a later grant in the same window does not move it
    expect(startWindow(granted, T0 + 3600 * S).windowStartedAt).toBe(T0 + 5000);
    expect(quotaView(granted, FREE, null, W).resetsAt).toBe(T0 + 5000 + W);
  });

  it("still counts one ms before the reset and resets exactly `window` later", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 200 * S, bonusMs: 30 * S, runs: 4, reservedMs: 0 });
    expect(rollWindow(l, T0 + W - 1, W)).toBe(l);
    expect(rollWindow(l, T0 + W, W)).toEqual({ windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 });
    expect(rollWindow(l, T0 + 3 * W + 7, W)).toEqual(EMPTY_LEDGER);
  });

  it("carries reservations of leases in flight over the reset", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 100 * S, reservedMs: 60 * S, runs: 2 });
    expect(rollWindow(l, T0 + W, W)).toEqual({
      windowStartedAt: null,
      usedMs: 0,
      reservedMs: 60 * S,
      bonusMs: 0,
      runs: 0,
    });
  });

  it("after the reset, the next grant starts a new window", () => {
    const rolled = rollWindow(ledger({ windowStartedAt: T0, usedMs: 210 * S }), T0 + W + 123, W);
    expect(startWindow(rolled, T0 + W + 123).windowStartedAt).toBe(T0 + W + 123);
  });

  it("a full free quota is usable again right at the boundary, not one ms before", () => {
    const full = ledger({ windowStartedAt: T0, usedMs: 210 * S });
    const before = reserve(input({ identity: FREE_USER, ledger: rollWindow(full, T0 + W - 1, W), now: T0 + W - 1 }));
    expect(before.ok).toBe(false);
    if (!before.ok) expect(before.retryAfterS).toBe(1);
    const at = reserve(input({ identity: FREE_USER, ledger: rollWindow(full, T0 + W, W), now: T0 + W }));
    expect(at.ok).toBe(true);
  });
});

describe("quotaOf / quotaView", () => {
  it("uses the override if set, plus the bonus", () => {
    expect(quotaOf(FREE, null, 0)).toBe(210 * S);
    expect(quotaOf(FREE, 500 * S, 0)).toBe(500 * S);
    expect(quotaOf(FREE, 500 * S, 20 * S)).toBe(520 * S);
    expect(quotaOf(FREE, 0, 0)).toBe(0);
  });

  it("left = quota − used − reserved, never negative", () => {
    const v = quotaView(
      ledger({ windowStartedAt: T0, usedMs: 100 * S, reservedMs: 50 * S, bonusMs: 10 * S }),
      FREE,
      null,
      W,
    );
    expect(v).toMatchObject({
      quotaMs: 220 * S,
      usedMs: 100 * S,
      reservedMs: 50 * S,
      leftMs: 70 * S,
      resetsAt: T0 + W,
      priority: 2,
    });
    expect(quotaView(ledger({ usedMs: 300 * S }), FREE, null, W).leftMs).toBe(0);
  });
});

describe("reserve", () => {
  it("reserves duration × cost and counts a run", () => {
    const r = reserve(
      input({
        identity: FREE_USER,
        ledger: ledger({ reservedMs: 10 * S, runs: 1 }),
        durationMs: 50 * S,
        size: "xlarge",
      }),
    );
    expect(r).toEqual({
      ok: true,
      reservedMs: 100 * S,
      split: { quotaMs: 100 * S, overageMs: 0, holdMicros: 0 },
      ledger: ledger({ reservedMs: 110 * S, runs: 2 }),
    });
  });

  it("admits exactly up to the quota and refuses one ms past it", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 100 * S, reservedMs: 50 * S });
    expect(reserve(input({ identity: FREE_USER, ledger: l, durationMs: 60 * S })).ok).toBe(true);
    const over = reserve(input({ identity: FREE_USER, ledger: l, durationMs: 60 * S + 1 }));
    expect(over.ok).toBe(false);
    if (!over.ok) expect(over.problem.code).toBe("quota_exceeded");
  });

  it("respects a per-user override and bonus", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 210 * S, bonusMs: 60 * S });
    expect(reserve(input({ identity: FREE_USER, ledger: l, durationMs: 60 * S })).ok).toBe(true);
    expect(
      reserve(
        input({ identity: FREE_USER, ledger: ledger({ usedMs: 210 * S }), overrideMs: 300 * S, durationMs: 90 * S }),
      ).ok,
    ).toBe(true);
  });

  it("allows the max duration itself, but not more", () => {
    expect(reserve(input({ identity: PRO_USER, durationMs: 300 * S })).ok).toBe(true);
    const r = reserve(input({ identity: PRO_USER, durationMs: 300 * S + 1 }));
    expect(!r.ok && r.problem.code).toBe("duration_too_long");
  });

  it("retries at the reset when finished usage alone is the obstacle", () => {
    const r = reserve(
      input({
        identity: ANON_IP,
        ledger: ledger({ windowStartedAt: T0 - 1000, usedMs: 90 * S, reservedMs: 20 * S }),
        durationMs: 60 * S,
        earliestInFlightEnd: T0 + 5 * S,
      }),
    );
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.retryAfterS).toBe(Math.ceil((W - 1000) / 1000));
  });

  it("does not mutate its input ledger", () => {
    const l = ledger({ reservedMs: 5 * S });
    const copy = { ...l };
    reserve(input({ identity: FREE_USER, ledger: l }));
    expect(l).toEqual(copy);
  });
});

describe("chargeMs", () => {
  it.each([
    [60 * S, 0, 1, 0],
    [60 * S, 1, 1, 1 * S],
    [60 * S, 999, 1, 1 * S],
    [60 * S, 1000, 1, 1 * S],
    [60 * S, 1001, 1, 2 * S],
    [60 * S, 59_001, 1, 60 * S],
    [60 * S, 90_000, 1, 60 * S],
    [120 * S, 1, 2, 2 * S],
    [120 * S, 1001, 2, 4 * S],
    [120 * S, 30_000, 2, 60 * S],
    [120 * S, 3_600_000, 2, 120 * S],
    [60 * S, -5, 1, 0],
  ])("reserved %i, held %i ms, cost %i → %i", (reserved, held, cost, expected) => {
    expect(chargeMs(reserved, held, cost)).toBe(expected);
  });

  it("never charges above the reservation", () => {
    for (let held = 0; held < 200_000; held += 777) {
      expect(chargeMs(100 * S, held, 2)).toBeLessThanOrEqual(100 * S);
    }
  });
});

describe("settle", () => {
  it("moves the charge from reserved to used within the grant's window", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 10 * S, reservedMs: 90 * S, runs: 2 });
    expect(settle(l, 60 * S, 7 * S, T0)).toEqual(
      ledger({ windowStartedAt: T0, usedMs: 17 * S, reservedMs: 30 * S, runs: 2 }),
    );
  });

  it("into a rolled-over window: releases the reservation but does not count the charge", () => {
    const l = ledger({ windowStartedAt: T0, usedMs: 10 * S, reservedMs: 60 * S });
    const rolled = rollWindow(l, T0 + W + 5, W);
    expect(settle(rolled, 60 * S, 60 * S, T0)).toEqual(ledger({ reservedMs: 0, usedMs: 0 }));
    // and after a new window has started with another grant
    const renewed = startWindow(rolled, T0 + W + 5);
    expect(settle(renewed, 60 * S, 60 * S, T0)).toEqual(
      ledger({ windowStartedAt: T0 + W + 5, usedMs: 0, reservedMs: 0 }),
    );
  });

  it("a lease never granted in a window (null) does not count", () => {
    expect(settle(ledger({ windowStartedAt: T0, reservedMs: 5 * S }), 5 * S, 5 * S, null).usedMs).toBe(0);
  });

  it("never drives reservedMs negative", () => {
    expect(settle(ledger({ windowStartedAt: T0, reservedMs: 5 * S }), 60 * S, 1 * S, T0).reservedMs).toBe(0);
  });
});

describe("unreserve", () => {
  it("gives back the reservation and the run", () => {
    expect(unreserve(ledger({ windowStartedAt: T0, usedMs: 3 * S, reservedMs: 100 * S, runs: 3 }), 60 * S)).toEqual(
      ledger({ windowStartedAt: T0, usedMs: 3 * S, reservedMs: 40 * S, runs: 2 }),
    );
  });

  it("clamps at zero", () => {
    expect(unreserve(EMPTY_LEDGER, 60 * S)).toEqual(EMPTY_LEDGER);
  });

  it("round-trips reserve exactly", () => {
    const before = ledger({ windowStartedAt: T0, usedMs: 20 * S, reservedMs: 30 * S, runs: 1 });
    const r = reserve(input({ identity: FREE_USER, ledger: before, durationMs: 45 * S }));
    expect(r.ok).toBe(true);
    if (r.ok) expect(unreserve(r.ledger, r.reservedMs)).toEqual(before);
  });

  it("cancelling a lease admitted in the previous window does not hand out an extra run in the new one", () => {
    // maxRuns 2 per window. L1 is admitted and granted (window starts), L2 admitted and left queued.
    const policy = { ...DEFAULT_POLICY, tiers: { ...DEFAULT_POLICY.tiers, free: { ...FREE, maxRuns: 2 } } };
    const admit = (l: LedgerState, now: number): { ledger: LedgerState; reservedMs: number } => {
      const r = reserve(input({ policy, identity: FREE_USER, ledger: rollWindow(l, now, W), now, durationMs: 10 * S }));
      if (!r.ok) throw new Error(`refused: ${r.problem.code}`);
      return r;
    };
    let l: LedgerState = EMPTY_LEDGER;
    const l1 = admit(l, T0);
    l = startWindow(l1.ledger, T0);
    l = settle(l, l1.reservedMs, 1 * S, T0);
    const l2 = admit(l, T0 + S);
    l = l2.ledger;
    // the window resets while L2 is still queued; two runs are admitted in the new window
    const t1 = T0 + W;
    l = admit(l, t1).ledger;
    l = admit(l, t1).ledger;
    // L2 (a run of the previous window) is cancelled now
    const rolled = rollWindow(l, t1, W);
    expect(admittedInCurrentWindow(T0 + S, T0, rolled, t1, W)).toBe(false);
    l = unreserve(rolled, l2.reservedMs, admittedInCurrentWindow(T0 + S, T0, rolled, t1, W));
    const third = reserve(input({ policy, identity: FREE_USER, ledger: l, now: t1, durationMs: 10 * S }));
    expect(third.ok, "a third admission in a window limited to 2 runs").toBe(false);
  });
});
