import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_POLICY,
  EMPTY_LEDGER,
  FifoScheduler,
  Pool,
  chargeMs,
  identityKey,
  quotaOf,
  reserve,
  rollWindow,
  settle,
  startWindow,
  tierOf,
  unreserve,
} from "../src/index.js";
import type { Concurrency, Identity, LedgerState, Policy } from "../src/index.js";

/** A small model of the server's lease lifecycle, driving only the pure core functions. */

const IDENTITIES: readonly Identity[] = [
  { kind: "ip", id: "203.0.113.7", tier: "anonymous" },
  { kind: "app", id: "appA", tier: "anonymous" },
  { kind: "user", id: "alice", tier: "free" },
  { kind: "user", id: "bob", tier: "pro" },
];
const APPS: readonly (string | null)[] = ["appA", "appB", null];
const APP_LIMITS: Readonly<Record<string, number | null>> = { appA: 1, appB: null };
const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);

type Size = "large" | "xlarge";
type Event =
  | { readonly t: "admit"; readonly who: number; readonly size: Size; readonly durationS: number; readonly app: number }
  | { readonly t: "release"; readonly pick: number; readonly heldMs: number }
  | { readonly t: "expire"; readonly pick: number }
  | { readonly t: "cancel"; readonly pick: number }
  | { readonly t: "advance"; readonly ms: number };

type LeaseState = "queued" | "active" | "released" | "expired" | "cancelled";

interface LeaseRecord {
  readonly id: string;
  readonly identity: string;
  readonly tier: string;
  readonly appId: string | null;
  readonly slots: number;
  readonly cost: number;
  readonly durationMs: number;
  readonly reservedMs: number;
  readonly queuedAt: number;
  state: LeaseState;
  grantedAt: number | null;
  deadline: number | null;
  grantWindowStartedAt: number | null;
  endedAt: number | null;
  chargedMs: number | null;
  refundedMs: number | null;
}

class Sim implements Concurrency {
  now = T0;
  readonly ledgers = new Map<string, LedgerState>();
  readonly leases = new Map<string, LeaseRecord>();
  readonly log: string[] = [];
  readonly pool: Pool;
  readonly scheduler = new FifoScheduler();
  private readonly activeByApp = new Map<string, number>();
  private seq = 0;

  constructor(
    gpus: number,
    readonly policy: Policy,
  ) {
    this.pool = new Pool(
      Array.from({ length: gpus }, (_, i) => ({
        node: `n${i % 2}`,
        index: i,
        uuid: `GPU-${i}`,
        name: "L4",
        memoryMb: 24_576,
        slots: 2,
      })),
    );
  }

  active(appId: string): number {
    return this.activeByApp.get(appId) ?? 0;
  }
  limit(appId: string): number | null {
    return APP_LIMITS[appId] ?? null;
  }

  ledger(key: string): LedgerState {
    return rollWindow(this.ledgers.get(key) ?? EMPTY_LEDGER, this.now, this.policy.windowMs);
  }

  list(state: LeaseState): LeaseRecord[] {
    return [...this.leases.values()].filter((l) => l.state === state);
  }

  apply(e: Event): void {
    switch (e.t) {
      case "admit":
        return this.admit(
          IDENTITIES[e.who % IDENTITIES.length]!,
          e.size,
          e.durationS * 1000,
          APPS[e.app % APPS.length] ?? null,
        );
      case "release": {
        const active = this.list("active");
        const lease = active[e.pick % Math.max(1, active.length)];
        if (!lease) return;
        this.advanceTo(Math.max(this.now, (lease.grantedAt ?? 0) + e.heldMs));
        if (lease.state === "active") this.finish(lease, "released");
        return;
      }
      case "expire": {
        const active = this.list("active");
        const lease = active[e.pick % Math.max(1, active.length)];
        if (!lease) return;
        this.advanceTo(Math.max(this.now, lease.deadline ?? 0));
        expect(lease.state).toBe("expired");
        return;
      }
      case "cancel": {
        const queued = this.list("queued");
        const lease = queued[e.pick % Math.max(1, queued.length)];
        if (lease) this.cancel(lease);
        return;
      }
      case "advance":
        return this.advanceTo(this.now + e.ms);
    }
  }

  admit(identity: Identity, sizeName: Size, durationMs: number, appId: string | null): void {
    const key = identityKey(identity);
    const tier = tierOf(this.policy, identity.tier);
    const size = this.policy.sizes[sizeName]!;
    const deadlines = this.list("active")
      .filter((l) => l.identity === key)
      .map((l) => l.deadline ?? 0);
    const r = reserve({
      policy: this.policy,
      identity,
      tier,
      overrideMs: null,
      ledger: this.ledger(key),
      durationMs,
      size,
      now: this.now,
      earliestInFlightEnd: deadlines.length ? Math.min(...deadlines) : null,
      via: identity.kind === "app" ? "app-key" : "ip-token",
    });
    if (!r.ok) {
      this.log.push(`${this.now} refuse ${key} ${r.problem.code} ${r.retryAfterS}`);
      return;
    }
    this.ledgers.set(key, r.ledger);
    const id = `L${++this.seq}`;
    this.leases.set(id, {
      id,
      identity: key,
      tier: tier.name,
      appId,
      slots: size.slots,
      cost: size.cost,
      durationMs,
      reservedMs: r.reservedMs,
      queuedAt: this.now,
      state: "queued",
      grantedAt: null,
      deadline: null,
      grantWindowStartedAt: null,
      endedAt: null,
      chargedMs: null,
      refundedMs: null,
    });
    this.scheduler.enqueue({
      leaseId: id,
      appId,
      identity: key,
      slots: size.slots,
      priority: tier.priority,
      durationMs,
      seq: this.seq,
      queuedAt: this.now,
    });
    this.log.push(`${this.now} admit ${id}`);
    this.dispatch();
  }

  dispatch(): void {
    this.scheduler.dispatch(this.pool, this, (grant, request) => {
      const lease = this.leases.get(request.leaseId)!;
      expect(lease.state).toBe("queued");
      const ledger = startWindow(this.ledger(lease.identity), this.now);
      this.ledgers.set(lease.identity, ledger);
      lease.state = "active";
      lease.grantedAt = this.now;
      lease.deadline = this.now + lease.durationMs;
      lease.grantWindowStartedAt = ledger.windowStartedAt;
      if (lease.appId !== null) this.activeByApp.set(lease.appId, this.active(lease.appId) + 1);
      this.log.push(
        `${this.now} grant ${grant.leaseId} ${grant.assignment.node}#${grant.assignment.index}:${grant.assignment.slots.join(",")}`,
      );
    });
  }

  /** Moves the clock, expiring every active lease whose deadline comes first, in deadline order. */
  advanceTo(target: number): void {
    for (;;) {
      let next: LeaseRecord | null = null;
      for (const l of this.leases.values()) {
        if (l.state === "active" && (l.deadline ?? 0) <= target && (!next || (l.deadline ?? 0) < (next.deadline ?? 0)))
          next = l;
      }
      if (!next) break;
      this.now = Math.max(this.now, next.deadline ?? 0);
      this.finish(next, "expired");
    }
    this.now = target;
  }

  finish(lease: LeaseRecord, how: "released" | "expired"): void {
    const held = this.now - (lease.grantedAt ?? this.now);
    const charged = chargeMs(lease.reservedMs, held, lease.cost);
    this.ledgers.set(
      lease.identity,
      settle(this.ledger(lease.identity), lease.reservedMs, charged, lease.grantWindowStartedAt),
    );
    expect(this.pool.release(lease.id)).toBe(true);
    if (lease.appId !== null) this.activeByApp.set(lease.appId, this.active(lease.appId) - 1);
    lease.state = how;
    lease.endedAt = this.now;
    lease.chargedMs = charged;
    lease.refundedMs = lease.reservedMs - charged;
    this.log.push(`${this.now} ${how} ${lease.id} ${charged}`);
    this.dispatch();
  }

  cancel(lease: LeaseRecord): void {
    expect(this.scheduler.remove(lease.id)).toBe(true);
    this.ledgers.set(lease.identity, unreserve(this.ledger(lease.identity), lease.reservedMs));
    lease.state = "cancelled";
    lease.endedAt = this.now;
    lease.chargedMs = 0;
    lease.refundedMs = lease.reservedMs;
    this.log.push(`${this.now} cancel ${lease.id}`);
    this.dispatch();
  }

  checkInvariants(): void {
    const live = [...this.leases.values()].filter((l) => l.state === "queued" || l.state === "active");
    const finished = [...this.leases.values()].filter((l) => l.state !== "queued" && l.state !== "active");
    // (a) quota per identity
    for (const identity of IDENTITIES) {
      const key = identityKey(identity);
      const stored = this.ledgers.get(key) ?? EMPTY_LEDGER;
      const rolled = this.ledger(key);
      const quota = quotaOf(tierOf(this.policy, identity.tier), null, rolled.bonusMs);
      for (const l of [stored, rolled]) {
        expect(l.usedMs + l.reservedMs, `${key} used+reserved`).toBeLessThanOrEqual(
          quotaOf(tierOf(this.policy, identity.tier), null, l.bonusMs),
        );
      }
      expect(rolled.usedMs + rolled.reservedMs).toBeLessThanOrEqual(quota);
      const reservedLive = live.filter((l) => l.identity === key).reduce((s, l) => s + l.reservedMs, 0);
      expect(rolled.reservedMs, `${key} reserved = live reservations`).toBe(reservedLive);
      const usedInWindow =
        rolled.windowStartedAt === null
          ? 0
          : finished
              .filter((l) => l.identity === key && l.grantWindowStartedAt === rolled.windowStartedAt)
              .reduce((s, l) => s + (l.chargedMs ?? 0), 0);
      expect(rolled.usedMs, `${key} used = charges settled in this window`).toBe(usedInWindow);
    }
    // (b) slots
    const active = live.filter((l) => l.state === "active");
    const held = new Map<string, number>();
    for (const device of this.pool.snapshot()) {
      for (const h of device.holders) if (h !== null) held.set(h, (held.get(h) ?? 0) + 1);
    }
    expect([...held.keys()].sort()).toEqual(active.map((l) => l.id).sort());
    for (const l of active) {
      const a = this.pool.assignmentOf(l.id);
      expect(a).not.toBeNull();
      expect(a?.slots.length).toBe(l.slots);
      expect(held.get(l.id)).toBe(l.slots);
      const device = this.pool.snapshot().find((d) => d.spec.node === a?.node && d.spec.index === a.index);
      for (const s of a?.slots ?? []) expect(device?.holders[s]).toBe(l.id);
    }
    const busy = active.reduce((s, l) => s + l.slots, 0);
    expect(this.pool.busySlots).toBe(busy);
    expect(this.pool.busySlots).toBeLessThanOrEqual(this.pool.totalSlots);
    // queue and concurrency
    const queued = live.filter((l) => l.state === "queued");
    expect(this.scheduler.size).toBe(queued.length);
    for (const l of queued) expect(this.pool.assignmentOf(l.id)).toBeNull();
    for (const [app, limit] of Object.entries(APP_LIMITS)) {
      const n = active.filter((l) => l.appId === app).length;
      expect(this.active(app)).toBe(n);
      if (limit !== null) expect(n).toBeLessThanOrEqual(limit);
    }
    // (c) finished leases
    for (const l of finished) {
      const charged = l.chargedMs ?? -1;
      expect(charged).toBeGreaterThanOrEqual(0);
      expect(charged).toBeLessThanOrEqual(l.reservedMs);
      expect(charged + (l.refundedMs ?? -1)).toBe(l.reservedMs);
      if (l.state === "cancelled") {
        expect(l.grantedAt).toBeNull();
        expect(charged).toBe(0);
      } else {
        // only time held counts, never time queued
        const heldMs = (l.endedAt ?? 0) - (l.grantedAt ?? 0);
        expect(heldMs).toBeLessThanOrEqual(l.durationMs);
        expect(charged).toBeLessThanOrEqual(Math.ceil(heldMs / 1000) * 1000 * l.cost);
        if (l.state === "expired") expect(charged).toBe(l.reservedMs);
      }
    }
  }

  record(): unknown {
    return {
      now: this.now,
      ledgers: Object.fromEntries(this.ledgers),
      leases: [...this.leases.values()].map((l) => ({ ...l })),
      log: this.log,
    };
  }
}

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant("admit" as const),
      who: fc.nat(),
      size: fc.constantFrom<Size>("large", "xlarge"),
      durationS: fc.oneof(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 300 })),
      app: fc.nat(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("release" as const),
      pick: fc.nat(),
      heldMs: fc.integer({ min: 0, max: 300_000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("expire" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("cancel" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 120_000 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("advance" as const),
      ms: fc.integer({ min: 3_600_000, max: 30 * 3_600_000 }),
    }),
  },
);

const scenarioArb = fc.record({
  gpus: fc.integer({ min: 1, max: 3 }),
  // the default 24 h window, and short ones so that leases often outlive the window they were granted in
  windowMs: fc.constantFrom(DEFAULT_POLICY.windowMs, 15 * 60_000, 2 * 60_000),
  events: fc.array(eventArb, { minLength: 5, maxLength: 60, size: "max" }),
});

function simulate(gpus: number, windowMs: number, events: readonly Event[], check: boolean): Sim {
  const sim = new Sim(gpus, { ...DEFAULT_POLICY, windowMs });
  for (const e of events) {
    sim.apply(e);
    if (check) sim.checkInvariants();
  }
  return sim;
}

describe("properties of the core lease lifecycle", () => {
  it("keeps quota, slot and charge invariants after every event", () => {
    fc.assert(
      fc.property(scenarioArb, ({ gpus, windowMs, events }) => {
        simulate(gpus, windowMs, events, true);
      }),
      { numRuns: 200 },
    );
  });

  it("is deterministic: the same events give the same ledgers and lease records", () => {
    fc.assert(
      fc.property(scenarioArb, ({ gpus, windowMs, events }) => {
        const a = simulate(gpus, windowMs, events, false).record();
        const b = simulate(gpus, windowMs, events, false).record();
        expect(b).toEqual(a);
      }),
      { numRuns: 200 },
    );
  });

  it("never charges queue time: queued long, released right after grant → at most 1 s × cost", () => {
    fc.assert(
      fc.property(
        fc.record({
          blockerS: fc.integer({ min: 1, max: 300 }),
          waitMs: fc.integer({ min: 0, max: 400_000 }),
          size: fc.constantFrom<Size>("large", "xlarge"),
          durationS: fc.integer({ min: 1, max: 100 }),
          heldMs: fc.integer({ min: 0, max: 1000 }),
        }),
        ({ blockerS, waitMs, size, durationS, heldMs }) => {
          const sim = new Sim(1, DEFAULT_POLICY);
          sim.admit(IDENTITIES[3]!, "xlarge", blockerS * 1000, null); // bob holds the only GPU
          sim.admit(IDENTITIES[2]!, size, durationS * 1000, null); // alice waits
          const blocker = sim.leases.get("L1")!;
          const waiter = sim.leases.get("L2")!;
          expect(waiter.state).toBe("queued");
          // the blocker is released after waitMs, or expires at its deadline if that comes first
          sim.advanceTo(T0 + Math.min(waitMs, blockerS * 1000));
          if (blocker.state === "active") sim.finish(blocker, "released");
          expect(waiter.state).toBe("active");
          const queuedMs = (waiter.grantedAt ?? 0) - waiter.queuedAt;
          expect(queuedMs).toBe(Math.min(waitMs, blockerS * 1000));
          sim.advanceTo((waiter.grantedAt ?? 0) + heldMs);
          if (waiter.state === "active") sim.finish(waiter, "released");
          const cost = size === "xlarge" ? 2 : 1;
          expect(waiter.chargedMs).toBeLessThanOrEqual(1000 * cost);
          expect(waiter.chargedMs).toBe(heldMs === 0 ? 0 : Math.min(1000 * cost, waiter.reservedMs));
          expect(sim.ledger("user:alice").usedMs).toBe(waiter.chargedMs);
          sim.checkInvariants();
        },
      ),
      { numRuns: 200 },
    );
  });
});
