import type { Placement } from "../leases/admission.js";
import { decideAdmission, quotaLeftShare } from "../leases/admission.js";
import type { Identity } from "../identity/identity.js";
import { identityKey } from "../identity/identity.js";
import type { Policy, SizePolicy, TierPolicy } from "../policy.js";
import { queueTimeoutOf, tierOf } from "../policy.js";
import type { DeviceSpec } from "../scheduling/pool.js";
import { Pool } from "../scheduling/pool.js";
import type { PriorityRequest, QueuePlace } from "../scheduling/priority-scheduler.js";
import type { LedgerState } from "../accounts/ledger.js";
import {
  EMPTY_LEDGER,
  admittedInCurrentWindow,
  chargeMs,
  rollWindow,
  settle,
  startWindow,
  unreserve,
} from "../accounts/ledger.js";
import type { Concurrency } from "../scheduling/scheduler.js";
import { IndexedHeap } from "../scheduling/scheduler-heap.js";
import { queueFor } from "./scheduler-replay-queue.js";
import type { SimulationOptions } from "./simulation-options.js";
import { DEFAULT_SIMULATION_OPTIONS } from "./simulation-options.js";
import { usableIdleSlots } from "../scheduling/scheduler-idle.js";
import type { SimulationPolicyName, SimulationResult, TraceRecord } from "./scheduler-trace.js";
import { requestedDurationMs, tierForPerson } from "./scheduler-trace.js";
import { newTierAcc, round, tierFigures } from "./figures.js";
import type { TierAcc } from "./figures.js";

export * from "../scheduling/scheduler-idle.js";
export * from "./simulation-options.js";
export * from "./scheduler-trace.js";

interface SimLease {
  readonly id: string;
  readonly person: string;
  readonly key: string;
  readonly tier: string;
  readonly appId: string;
  readonly slots: number;
  readonly cost: number;
  readonly durationMs: number;
  readonly execMs: number;
  readonly reservedMs: number;
  readonly queuedAt: number;
  readonly windowAtAdmission: number | null;
  /** The expected wait and its bound at admission, for a call that had to wait (else null). */
  readonly expectedMs: number | null;
  readonly boundMs: number | null;
  grantedAt: number | null;
  windowStartedAt: number | null;
  state: "queued" | "active" | "done";
}

/** Event kinds, in the order they run when simultaneous. */
const Kind = { End: 0, Timeout: 1 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];

interface SimEvent {
  readonly at: number;
  readonly kind: Kind;
  readonly seq: number;
  readonly lease: SimLease;
  index: number;
}

function sizeOf(policy: Policy, name: string): SizePolicy {
  const size = policy.sizes[name];
  if (!size) throw new Error(`the policy has no size ${name}`);
  return size;
}

/**
 * Replays a trace through the server's own core: quota admission (reserve), window start at the
 * first grant (startWindow), settlement at release (chargeMs, settle), refunds at queue timeout
 * (unreserve), window resets (rollWindow), slots (Pool) and the queue (PriorityScheduler or
 * FifoScheduler) — on a virtual clock. Pure and deterministic: same records and options, same result.
 *
 * Events at the same instant run in this order: lease ends, then queue timeouts, then arrivals
 * (in trace order); the queue is dispatched after each, as the server does.
 */
function placementOf(trial: { kind: "now" } | { kind: "wait"; place: QueuePlace | null }, queued: number): Placement {
  return trial.kind === "now" ? { kind: "now" } : { kind: "wait", place: trial.place, queued };
}

export function simulate(
  records: readonly TraceRecord[],
  policyName: SimulationPolicyName,
  overrides: Partial<SimulationOptions> = {},
): SimulationResult {
  const options: SimulationOptions = { ...DEFAULT_SIMULATION_OPTIONS, ...overrides };
  const { policy } = options;
  if (!(options.gpus >= 1) || !Number.isInteger(options.gpus)) throw new Error("gpus must be a positive whole number");
  if (!(options.speedup > 0)) throw new Error("speedup must be positive");
  const devices: DeviceSpec[] = Array.from({ length: options.gpus }, (_, i) => ({
    node: `sim-${Math.floor(i / 8)}`,
    index: i % 8,
    uuid: `GPU-sim-${i}`,
    name: "Simulated GPU",
    memoryMb: 81_920,
    slots: options.slotsPerGpu,
  }));
  const pool = new Pool(devices);
  const queue = queueFor(policyName, policy, options.scheduler);
  const large = sizeOf(policy, "large");
  const xlarge = options.xlargeImages === null ? large : sizeOf(policy, "xlarge");

  const appActive = new Map<string, number>();
  const concurrency: Concurrency = {
    active: (app) => appActive.get(app) ?? 0,
    limit: () => options.appMaxConcurrency,
  };
  const ledgers = new Map<string, LedgerState>();
  const queued = new Map<string, SimLease>();
  const events = new IndexedHeap<SimEvent>(
    (a, b) => a.at < b.at || (a.at === b.at && (a.kind < b.kind || (a.kind === b.kind && a.seq < b.seq))),
    (e) => e.index,
    (e, i) => {
      e.index = i;
    },
  );
  let eventSeq = 0;
  const schedule = (at: number, kind: Kind, lease: SimLease): void =>
    events.push({ at, kind, seq: eventSeq++, lease, index: -1 });

  const tiers = new Map<string, TierAcc>();
  const tierAcc = (name: string): TierAcc => {
    let t = tiers.get(name);
    if (!t) {
      t = newTierAcc();
      tiers.set(name, t);
    }
    return t;
  };
  const heldByPerson = new Map<string, number>();
  const demandByHour = new Map<number, number>();
  const tierOfPerson = new Map<string, string>();

  let admitted = 0;
  let granted = 0;
  let expired = 0;
  let busySlotMs = 0;
  let idleSlotMs = 0;
  let usableIdle = 0;
  let heldIdle = 0;
  let heldIdleSlotMs = 0;
  let idleWithQueueSlotMs = 0;
  let queuedTimeMs = 0;
  let lastAt = 0;
  let longest = 0;

  const first = records[0]?.arrivalMs ?? 0;
  const virtualAt = (r: TraceRecord): number => first + Math.round((r.arrivalMs - first) / options.speedup);
  // Stable sort by virtual arrival, so unsorted input replays in time order and ties keep trace order.
  const order = records.map((r, i) => ({ r, i, at: virtualAt(r) })).sort((a, b) => a.at - b.at || a.i - b.i);
  const start = order[0]?.at ?? 0;
  lastAt = start;

  const advance = (to: number): void => {
    const dt = to - lastAt;
    if (dt > 0) {
      busySlotMs += pool.busySlots * dt;
      idleSlotMs += usableIdle * dt;
      heldIdleSlotMs += heldIdle * dt;
      if (queued.size > 0) {
        idleWithQueueSlotMs += pool.freeSlots * dt;
        queuedTimeMs += dt;
      }
      lastAt = to;
    }
  };

  const ledgerAt = (key: string, now: number): LedgerState =>
    rollWindow(ledgers.get(key) ?? EMPTY_LEDGER, now, policy.windowMs);

  const dispatch = (now: number): void => {
    queue.dispatch(
      pool,
      concurrency,
      (grant) => {
        const lease = queued.get(grant.leaseId);
        if (!lease) throw new Error(`granted an unknown lease ${grant.leaseId}`);
        queued.delete(lease.id);
        appActive.set(lease.appId, (appActive.get(lease.appId) ?? 0) + 1);
        const ledger = startWindow(ledgerAt(lease.key, now), now);
        ledgers.set(lease.key, ledger);
        lease.state = "active";
        lease.grantedAt = now;
        lease.windowStartedAt = ledger.windowStartedAt;
        granted++;
        const wait = now - lease.queuedAt;
        const t = tierAcc(lease.tier);
        t.granted++;
        t.waits.push(wait);
        if (wait > t.longest) t.longest = wait;
        if (wait > longest) longest = wait;
        if (lease.expectedMs !== null) t.etaErrors.push(Math.abs(lease.expectedMs - wait));
        if (lease.boundMs !== null && wait > lease.boundMs) t.boundExceeded++;
        if (lease.execMs > lease.durationMs) expired++;
        schedule(now + Math.min(lease.execMs, lease.durationMs), Kind.End, lease);
      },
      now,
    );
    measureIdle(now);
  };

  const measureIdle = (now: number): void => {
    const hold = queue.hold();
    usableIdle = queued.size === 0 ? 0 : usableIdleSlots(pool, queued.values(), concurrency, hold, now);
    heldIdle = 0;
    if (hold !== null) {
      const device = pool.snapshot().find((d) => d.spec.node === hold.node && d.spec.index === hold.index);
      heldIdle = device ? device.holders.filter((h) => h === null).length : 0;
    }
  };

  const end = (lease: SimLease, now: number): void => {
    pool.release(lease.id);
    queue.released(lease.id, now);
    appActive.set(lease.appId, Math.max(0, (appActive.get(lease.appId) ?? 0) - 1));
    const grantedAt = lease.grantedAt ?? now;
    const heldMs = now - grantedAt;
    const charged = lease.execMs > lease.durationMs ? lease.reservedMs : chargeMs(lease.reservedMs, heldMs, lease.cost);
    ledgers.set(lease.key, settle(ledgerAt(lease.key, now), lease.reservedMs, charged, lease.windowStartedAt));
    heldByPerson.set(lease.person, (heldByPerson.get(lease.person) ?? 0) + heldMs * lease.slots);
    lease.state = "done";
  };

  const timeout = (lease: SimLease, now: number): void => {
    if (lease.state !== "queued") return;
    queue.remove(lease.id);
    queued.delete(lease.id);
    const ledger = ledgerAt(lease.key, now);
    ledgers.set(
      lease.key,
      unreserve(
        ledger,
        lease.reservedMs,
        admittedInCurrentWindow(lease.queuedAt, lease.windowAtAdmission, ledger, now, policy.windowMs),
      ),
    );
    lease.state = "done";
    const t = tierAcc(lease.tier);
    t.queueTimeouts++;
    if (lease.expectedMs !== null && lease.expectedMs <= now - lease.queuedAt) t.timedOutExpectedInTime++;
    t.waits.push(now - lease.queuedAt);
  };

  const arrive = (r: TraceRecord, i: number, now: number): void => {
    let tierName = tierOfPerson.get(r.person);
    if (tierName === undefined) {
      tierName = tierForPerson(r.person, options.proPercent, options.freePercent);
      tierOfPerson.set(r.person, tierName);
    }
    if (!heldByPerson.has(r.person)) heldByPerson.set(r.person, 0);
    const tier: TierPolicy = tierOf(policy, tierName);
    const t = tierAcc(tierName);
    t.requests++;
    const identity: Identity = { kind: tierName === "anonymous" ? "ip" : "user", id: r.person, tier: tierName };
    const key = identityKey(identity);
    const size =
      options.xlargeImages !== null && r.imagesPerPrompt !== null && r.imagesPerPrompt >= options.xlargeImages
        ? xlarge
        : large;
    const durationMs = requestedDurationMs(r.execMs, options.durationStepMs, tier.maxDurationMs);
    const ledger = ledgerAt(key, now);
    const account = { identity, tier, overrideMs: null, ledger, inFlightEnd: null };
    const request: PriorityRequest = {
      leaseId: `r${i}`,
      appId: r.app,
      identity: key,
      slots: size.slots,
      priority: tier.priority,
      durationMs,
      seq: i,
      queuedAt: now,
      quotaLeftShare: quotaLeftShare(policy, account),
      giveUpAt: now + queueTimeoutOf(policy, tier),
    };
    // The server's admission: the same decision, on where this pool's queue would put the call.
    const placement: Placement = !pool.couldEverFit(size.slots)
      ? { kind: "never", onlyAgents: false }
      : placementOf(queue.trial(request, pool, concurrency, now), queue.size);
    const decision = decideAdmission(
      policy,
      account,
      {
        durationMs,
        size,
        queue: true,
        via: identity.kind === "ip" ? "ip-token" : "user-token",
        node: null,
        now,
        ...(options.honest ? { maxWaitMs: null } : {}),
      },
      placement,
    );
    if (decision.kind === "refused") {
      if (decision.problem.code === "no_gpu_available") t.noGpuAvailable++;
      else t.quotaDenials++;
      if (decision.problem["reason"] === "predicted_wait") t.predictedWait++;
      return;
    }
    const place = placement.kind === "wait" ? placement.place : null;
    const lease: SimLease = {
      id: `r${i}`,
      person: r.person,
      key,
      tier: tierName,
      appId: r.app,
      slots: size.slots,
      cost: size.cost,
      durationMs,
      execMs: r.execMs,
      reservedMs: decision.reservedMs,
      queuedAt: now,
      windowAtAdmission: decision.ledger.windowStartedAt,
      expectedMs: place?.etaMs == null ? null : (place.expectedMs ?? place.etaMs),
      boundMs: place?.etaMs ?? null,
      grantedAt: null,
      windowStartedAt: null,
      state: "queued",
    };
    ledgers.set(key, decision.ledger);
    queued.set(lease.id, lease);
    queue.enqueue(request);
    dispatch(now);
    admitted++;
    const hour = Math.floor((now - start) / 3_600_000);
    demandByHour.set(hour, (demandByHour.get(hour) ?? 0) + Math.min(r.execMs, durationMs) * size.slots);
    if (lease.state === "queued") {
      t.waited++;
      schedule(now + queueTimeoutOf(policy, tier), Kind.Timeout, lease);
    }
  };

  let next = 0;
  for (;;) {
    const ev = events.peek();
    const arrival = order[next];
    if (ev === undefined && arrival === undefined) break;
    // Lease ends and timeouts at the same instant as an arrival go first.
    if (ev !== undefined && (arrival === undefined || ev.at <= arrival.at)) {
      events.pop();
      advance(ev.at);
      if (ev.kind === Kind.End) end(ev.lease, ev.at);
      else timeout(ev.lease, ev.at);
      dispatch(ev.at);
    } else if (arrival !== undefined) {
      next++;
      advance(arrival.at);
      arrive(arrival.r, arrival.i, arrival.at);
    }
  }

  const slots = pool.totalSlots;
  const spanMs = Math.max(1, lastAt - start);
  const people = [...heldByPerson.values()];
  const sum = people.reduce((a, b) => a + b, 0);
  const sumSq = people.reduce((a, b) => a + b * b, 0);
  const { tierOut, totals } = tierFigures(tiers);
  const peakDemand = Math.max(0, ...demandByHour.values());
  return {
    policy: policyName,
    gpus: options.gpus,
    slots,
    speedup: options.speedup,
    requests: records.length,
    admitted,
    granted,
    expired,
    ...totals,
    spanS: round(spanMs / 1000),
    utilization: round(busySlotMs / (slots * spanMs), 4),
    idleWhileWaitingSlotS: round(idleSlotMs / 1000),
    heldIdleSlotS: round(heldIdleSlotMs / 1000),
    idleWithQueueSlotS: round(idleWithQueueSlotMs / 1000),
    utilizationWhileQueued: queuedTimeMs === 0 ? 1 : round(1 - idleWithQueueSlotMs / (slots * queuedTimeMs), 4),
    peakHourDemand: round(peakDemand / (slots * 3_600_000), 3),
    jainFairness: sumSq === 0 ? 1 : round((sum * sum) / (people.length * sumSq), 4),
    longestWaitS: round(longest / 1000),
    tiers: tierOut,
  };
}
