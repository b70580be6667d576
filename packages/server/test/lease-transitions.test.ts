import { EMPTY_LEDGER, rollWindow } from "@gpupool/core";
import type { LedgerState } from "@gpupool/core";
import { describe, expect, it } from "vitest";
import { admissionAnswer } from "../src/replication/follower.js";
import { admitted, endActive, endQueued, grant } from "../src/use-cases/leases/lease-transitions.js";
import type { LeaseRecord } from "../src/storage/store.js";

const S = 1000;
const T0 = Date.UTC(2026, 10, 24, 12, 0, 0);
const WINDOW = 86_400 * S;
const device = { node: "sim-0", index: 1, uuid: "GPU-x", name: "Sim", slots: [0, 1] };
const large = { name: "large", slots: 1, cost: 1 };
const xlarge = { name: "xlarge", slots: 2, cost: 2 };

function queued(durationMs: number, size = large, ledger: LedgerState = EMPTY_LEDGER): LeaseRecord {
  return {
    ...admitted({
      id: "ls_1",
      appId: "a_1",
      identity: { kind: "user", id: "u_1", tier: "free" },
      size,
      durationMs,
      reservedMs: durationMs * size.cost,
      now: T0,
      windowStartedAt: ledger.windowStartedAt,
    }),
    seq: 1,
  };
}

describe("lease transitions", () => {
  it("an admitted lease is queued, holds its reservation, and has no device or deadline", () => {
    const l = queued(60 * S, xlarge);
    expect(l).toMatchObject({
      status: "queued",
      reservedMs: 120 * S,
      slots: 2,
      cost: 2,
      node: null,
      slotIndexes: null,
      deadline: null,
      grantedAt: null,
      chargedMs: 0,
    });
  });

  it("grant starts the deadline and, on a first grant, the identity's window", () => {
    const { lease, ledger } = grant(queued(60 * S), device, { ...EMPTY_LEDGER, reservedMs: 60 * S }, T0 + 5 * S);
    expect(lease).toMatchObject({
      status: "active",
      node: "sim-0",
      deviceIndex: 1,
      slotIndexes: [0, 1],
      grantedAt: T0 + 5 * S,
      deadline: T0 + 65 * S,
      windowStartedAt: T0 + 5 * S,
    });
    expect(ledger.windowStartedAt).toBe(T0 + 5 * S);
    // A window already running is kept.
    const later = grant(queued(60 * S), device, { ...EMPTY_LEDGER, windowStartedAt: T0 - 100 * S }, T0);
    expect(later.ledger.windowStartedAt).toBe(T0 - 100 * S);
    expect(later.lease.windowStartedAt).toBe(T0 - 100 * S);
  });

  it("release charges held seconds rounded up × cost, refunds the rest, and never counts queue time", () => {
    const active = grant(queued(60 * S, xlarge), device, { ...EMPTY_LEDGER, reservedMs: 120 * S }, T0 + 30 * S);
    const { lease, ledger } = endActive(active.lease, active.ledger, "released", T0 + 30 * S + 2_001, null, false, 0);
    expect(lease).toMatchObject({
      status: "released",
      heldMs: 2_001,
      chargedMs: 6 * S,
      refundedMs: 114 * S,
      failed: false,
    });
    expect(ledger).toMatchObject({ usedMs: 6 * S, reservedMs: 0 });
  });

  it("a release after the deadline is charged up to the deadline, and an expiry the whole reservation", () => {
    const active = grant(queued(10 * S), device, { ...EMPTY_LEDGER, reservedMs: 10 * S }, T0);
    expect(endActive(active.lease, active.ledger, "released", T0 + 15 * S, null, false, 0).lease).toMatchObject({
      heldMs: 10 * S,
      chargedMs: 10 * S,
      refundedMs: 0,
    });
    const expired = endActive(active.lease, active.ledger, "expired", T0 + 10 * S, null, false, 0);
    expect(expired.lease).toMatchObject({ status: "expired", heldMs: 10 * S, chargedMs: 10 * S, refundedMs: 0 });
    expect(expired.ledger.usedMs).toBe(10 * S);
  });

  it("a failed call records failed and its problem, and is charged for the time held", () => {
    const active = grant(queued(60 * S), device, { ...EMPTY_LEDGER, reservedMs: 60 * S }, T0);
    const why = { type: "t", title: "t", status: 503, detail: "node lost", code: "no_gpu_available" as const };
    const { lease } = endActive(active.lease, active.ledger, "failed", T0 + 3 * S, why, false, 0);
    expect(lease).toMatchObject({
      status: "failed",
      failed: true,
      chargedMs: 3 * S,
      problemCode: "no_gpu_available",
      problemDetail: "node lost",
    });
  });

  it("a charge earned in a window that has since reset does not count against the new one", () => {
    const active = grant(queued(60 * S), device, { ...EMPTY_LEDGER, reservedMs: 60 * S }, T0);
    const after = T0 + WINDOW + 10 * S; // the window reset while the lease was held
    const { lease, ledger } = endActive(
      active.lease,
      rollWindow(active.ledger, after, WINDOW),
      "released",
      after,
      null,
      false,
      0,
    );
    expect(lease.chargedMs).toBe(60 * S); // capped by the deadline: the whole minute was held
    expect(ledger).toMatchObject({ usedMs: 0, reservedMs: 0, windowStartedAt: null });
  });

  it("a queued lease that ends gets everything back, and its run only if counted in the current window", () => {
    const ledger = { ...EMPTY_LEDGER, windowStartedAt: T0 - 10 * S, reservedMs: 60 * S, runs: 2 };
    const l = queued(60 * S, large, ledger);
    const same = endQueued(l, ledger, "cancelled", T0 + 5 * S, null, WINDOW);
    expect(same.lease).toMatchObject({ status: "cancelled", chargedMs: 0, refundedMs: 60 * S, heldMs: 0 });
    expect(same.ledger).toMatchObject({ reservedMs: 0, runs: 1 });
    const rolled = rollWindow({ ...ledger, runs: 0 }, T0 + WINDOW, WINDOW);
    const other = endQueued(l, { ...rolled, runs: 3 }, "failed", T0 + WINDOW, null, WINDOW);
    expect(other.ledger.runs).toBe(3);
    expect(other.lease.failed).toBe(true);
  });

  it("a follower answers granted for a lease the leader granted, even one already over when read back; refused only when it never got a GPU", () => {
    const ledger = { ...EMPTY_LEDGER, reservedMs: 1 * S };
    const waiting = queued(1 * S);
    const active = grant(waiting, device, ledger, T0);
    // A 1 s lease, read back by a slow follower after its deadline: expired, but it was granted.
    const over = endActive(active.lease, active.ledger, "expired", T0 + 1 * S, null, false, 0);
    const turnedDown = endQueued(
      waiting,
      ledger,
      "failed",
      T0,
      { type: "", title: "", status: 503, code: "no_gpu_available", detail: "busy" },
      WINDOW,
    );
    expect(admissionAnswer(active.lease)).toBe("granted");
    expect(admissionAnswer(over.lease)).toBe("granted");
    expect(admissionAnswer(waiting)).toBe("queued");
    expect(admissionAnswer(turnedDown.lease)).toBe("refused");
  });
});
