import {
  DEFAULT_POLICY,
  admittedInCurrentWindow,
  billingMonth,
  chargeMs,
  creditTotals,
  decideAdmission,
  expireGrants,
  includedGrant,
  placeHold,
  priceOf,
  quotaView,
  rollWindow,
  settle,
  settleHold,
  startWindow,
  tierOf,
  unreserve,
} from "../src/index.js";
import type {
  BillingPolicy,
  CreditGrant,
  GrantShare,
  Identity,
  LedgerState,
  Policy,
  WalletState,
} from "../src/index.js";
import { EMPTY_LEDGER } from "../src/index.js";

/**
 * A model of one user's billing as the server drives the core (docs/billing.md): each step loads the
 * wallet (this month's included credits, expiries), decides admission with the wallet's state,
 * places the hold, and at the lease's end settles the ledger and the hold — the server's
 * `chargeSplit` math written out here. Events are plain data, so a run can be replayed.
 */

export const USER: Identity = { kind: "user", id: "u1", tier: "pro" };

export type Event =
  | { kind: "admit"; durationS: number; xlarge: boolean; queue: boolean }
  | { kind: "grantQueued"; pick: number }
  | { kind: "release"; pick: number }
  | { kind: "expire"; pick: number }
  | { kind: "cancel"; pick: number }
  | { kind: "settleAgain"; pick: number }
  | { kind: "credits"; micros: number; expiresInMs: number | null; priority: number; purchased: boolean }
  | { kind: "wait"; ms: number }
  | { kind: "nextMonth"; offsetMs: number }
  | { kind: "optIn"; on: boolean };

export interface Setup {
  readonly start: number;
  readonly quotaMs: number;
  readonly capMicros: number;
  readonly optedIn: boolean;
  readonly includedMicros: number;
  readonly pricePerMinuteMicros: number;
  /** A purchased grant at the start (0: none). */
  readonly initialMicros: number;
}

export interface ModelLease {
  readonly id: string;
  status: "queued" | "active" | "ended";
  readonly durationMs: number;
  readonly cost: number;
  readonly reservedMs: number;
  readonly quotaMs: number;
  readonly overageMs: number;
  readonly holdMicros: number;
  readonly shares: GrantShare[];
  /** Quota left (ms) just before its admission. */
  readonly leftAtAdmission: number;
  readonly queuedAt: number;
  grantedAt: number | null;
  windowStartedAt: number | null;
  chargedMicros: number;
}

export interface LogEntry {
  readonly kind: "grant" | "hold" | "spend" | "release" | "expire";
  readonly grantId: string;
  readonly micros: number;
  readonly lease: string | null;
}

export interface Model {
  readonly policy: Policy;
  readonly setup: Setup;
  now: number;
  ledger: LedgerState;
  grants: CreditGrant[];
  optedIn: boolean;
  month: string;
  monthSpentMicros: number;
  spentByMonth: Record<string, number>;
  leases: ModelLease[];
  log: LogEntry[];
  refusals: Record<string, number>;
  /** The last admission's refusal (null: admitted), with its fields. */
  lastRefusal: { code: string; fields: Record<string, unknown> } | null;
  next: number;
}

export function policyOf(s: Setup): Policy {
  const billing: BillingPolicy = {
    currency: "USD",
    includedMicros: { pro: s.includedMicros },
    overage: {
      enabled: true,
      tiers: ["pro"],
      pricePerMinuteMicros: s.pricePerMinuteMicros,
      defaultCapMicros: s.capMicros,
    },
  };
  return { ...DEFAULT_POLICY, billing };
}

export function newModel(setup: Setup): Model {
  const m = newEmpty(setup);
  if (setup.initialMicros > 0)
    step(m, { kind: "credits", micros: setup.initialMicros, expiresInMs: null, priority: 5, purchased: true });
  return m;
}

function newEmpty(setup: Setup): Model {
  return {
    policy: policyOf(setup),
    setup,
    now: setup.start,
    ledger: EMPTY_LEDGER,
    grants: [],
    optedIn: setup.optedIn,
    month: billingMonth(setup.start).name,
    monthSpentMicros: 0,
    spentByMonth: {},
    leases: [],
    log: [],
    refusals: {},
    lastRefusal: null,
    next: 0,
  };
}

/** What the server's Wallets.load does: the month's included credits, expiries, the month's spend. */
function load(m: Model): void {
  const month = billingMonth(m.now).name;
  if (month !== m.month) {
    m.month = month;
    m.monthSpentMicros = 0;
  }
  if (m.setup.includedMicros > 0) {
    const g = includedGrant(USER.id, USER.tier, m.setup.includedMicros, m.now);
    if (!m.grants.some((x) => x.id === g.id)) {
      m.grants = [...m.grants, g];
      m.log.push({ kind: "grant", grantId: g.id, micros: g.amountMicros, lease: null });
    }
  }
  const expiry = expireGrants(m.grants, m.now);
  m.grants = expiry.grants;
  for (const e of expiry.expired) m.log.push({ kind: "expire", grantId: e.grantId, micros: e.micros, lease: null });
}

export function walletState(m: Model): WalletState {
  const totals = creditTotals(m.grants, m.now);
  return {
    optedIn: m.optedIn,
    availableMicros: totals.availableMicros,
    capMicros: m.setup.capMicros,
    monthSpentMicros: m.monthSpentMicros,
    monthHeldMicros: totals.heldMicros,
    monthEndsAt: billingMonth(m.now).endsAt,
  };
}

/** The server's chargeSplit: the quota part first; the rest at the price, never more than the hold. */
export function chargeSplit(l: ModelLease, chargedMs: number, price: number) {
  const quotaMs = Math.min(chargedMs, l.quotaMs);
  const overageMs = chargedMs - quotaMs;
  const micros = overageMs >= l.overageMs ? l.holdMicros : Math.min(l.holdMicros, priceOf(overageMs, price));
  return { quotaMs, overageMs, micros };
}

function rolled(m: Model): LedgerState {
  return rollWindow(m.ledger, m.now, m.policy.windowMs);
}

/** Settles a lease's hold once: the server reaches it only for a lease that was live (its status guards). */
function settleWallet(m: Model, l: ModelLease, micros: number): void {
  if (l.status === "ended") return;
  load(m);
  const out = settleHold(m.grants, l.shares, micros, m.now);
  m.grants = out.grants;
  const spent = out.spent.reduce((n, s) => n + s.micros, 0);
  m.monthSpentMicros += spent;
  m.spentByMonth[m.month] = (m.spentByMonth[m.month] ?? 0) + spent;
  for (const [kind, list] of [
    ["spend", out.spent],
    ["release", out.released],
    ["expire", out.expired],
  ] as const)
    for (const s of list) m.log.push({ kind, grantId: s.grantId, micros: s.micros, lease: l.id });
  l.chargedMicros = micros;
  l.status = "ended";
}

function pick(m: Model, status: ModelLease["status"], n: number): ModelLease | undefined {
  const of = m.leases.filter((l) => l.status === status);
  return of.length === 0 ? undefined : of[n % of.length];
}

export function step(m: Model, e: Event): void {
  switch (e.kind) {
    case "wait":
      m.now += e.ms;
      return;
    case "nextMonth":
      m.now = billingMonth(m.now).endsAt + e.offsetMs;
      load(m);
      return;
    case "optIn":
      m.optedIn = e.on;
      return;
    case "credits": {
      load(m);
      const g: CreditGrant = {
        id: `cg${m.next++}`,
        category: e.purchased ? "purchased" : "promotional",
        amountMicros: e.micros,
        remainingMicros: e.micros,
        heldMicros: 0,
        priority: e.priority,
        effectiveAt: m.now,
        expiresAt: e.expiresInMs === null ? null : m.now + e.expiresInMs,
        source: "model",
        createdAt: m.now,
      };
      m.grants = [...m.grants, g];
      m.log.push({ kind: "grant", grantId: g.id, micros: g.amountMicros, lease: null });
      return;
    }
    case "admit": {
      load(m);
      const size = DEFAULT_POLICY.sizes[e.xlarge ? "xlarge" : "large"]!;
      const tier = { ...tierOf(m.policy, "pro") };
      const left = quotaView(rolled(m), tier, m.setup.quotaMs, m.policy.windowMs).leftMs;
      const decision = decideAdmission(
        m.policy,
        {
          identity: USER,
          tier,
          overrideMs: m.setup.quotaMs,
          ledger: rolled(m),
          inFlightEnd: null,
          wallet: walletState(m),
        },
        { durationMs: e.durationS * 1000, size, queue: true, via: "user-token", node: null, now: m.now },
        e.queue ? { kind: "wait", place: null, queued: 0 } : { kind: "now" },
      );
      if (decision.kind === "refused") {
        m.refusals[decision.problem.code] = (m.refusals[decision.problem.code] ?? 0) + 1;
        m.lastRefusal = { code: decision.problem.code, fields: { ...decision.problem } };
        return;
      }
      m.lastRefusal = null;
      const id = `ls${m.next++}`;
      const placed = placeHold(m.grants, decision.split.holdMicros, m.now);
      if (placed === null)
        throw new Error(`admission allowed a hold of ${decision.split.holdMicros} the wallet cannot place`);
      checkSpendingOrder(placed.grants, placed.shares, m.now);
      m.grants = placed.grants;
      for (const s of placed.shares) m.log.push({ kind: "hold", grantId: s.grantId, micros: s.micros, lease: id });
      m.ledger = decision.ledger;
      const l: ModelLease = {
        id,
        status: "queued",
        durationMs: e.durationS * 1000,
        cost: size.cost,
        reservedMs: decision.reservedMs,
        quotaMs: decision.split.quotaMs,
        overageMs: decision.split.overageMs,
        holdMicros: decision.split.holdMicros,
        shares: placed.shares,
        leftAtAdmission: left,
        queuedAt: m.now,
        grantedAt: null,
        windowStartedAt: m.ledger.windowStartedAt,
        chargedMicros: 0,
      };
      m.leases.push(l);
      if (decision.outcome === "granted") grantLease(m, l);
      return;
    }
    case "grantQueued": {
      const l = pick(m, "queued", e.pick);
      if (l) grantLease(m, l);
      return;
    }
    case "cancel": {
      const l = pick(m, "queued", e.pick);
      if (!l) return;
      const ledger = rolled(m);
      const counted = admittedInCurrentWindow(l.queuedAt, l.windowStartedAt, ledger, m.now, m.policy.windowMs);
      m.ledger = unreserve(ledger, l.quotaMs, counted);
      settleWallet(m, l, 0);
      return;
    }
    case "release":
    case "expire": {
      const l = pick(m, "active", e.pick);
      if (!l) return;
      const deadline = (l.grantedAt ?? m.now) + l.durationMs;
      if (e.kind === "expire") m.now = Math.max(m.now, deadline);
      const heldMs = Math.max(0, Math.min(m.now, deadline) - (l.grantedAt ?? m.now));
      const charged = e.kind === "expire" ? l.reservedMs : chargeMs(l.reservedMs, heldMs, l.cost);
      const paid = chargeSplit(l, charged, m.setup.pricePerMinuteMicros);
      m.ledger = settle(rolled(m), l.quotaMs, paid.quotaMs, l.windowStartedAt);
      settleWallet(m, l, paid.micros);
      return;
    }
    case "settleAgain": {
      const l = pick(m, "ended", e.pick);
      if (l) settleWallet(m, l, l.holdMicros);
      return;
    }
  }
}

function grantLease(m: Model, l: ModelLease): void {
  m.ledger = startWindow(rolled(m), m.now);
  l.status = "active";
  l.grantedAt = m.now;
  l.windowStartedAt = m.ledger.windowStartedAt;
}

const CATEGORY = { included: 0, promotional: 1, purchased: 2 } as const;

/** The spending order of docs/billing.md, written out: priority, soonest expiry (none last), category, oldest. */
function before(a: CreditGrant, b: CreditGrant): number {
  return (
    a.priority - b.priority ||
    (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity) ||
    CATEGORY[a.category] - CATEGORY[b.category] ||
    a.createdAt - b.createdAt ||
    (a.id < b.id ? -1 : 1)
  );
}

/** A hold takes grants whole in the spending order: after it, every usable grant before the last one it touches is all held. */
function checkSpendingOrder(after: readonly CreditGrant[], shares: readonly GrantShare[], now: number): void {
  if (shares.length === 0) return;
  const usable = after.filter((g) => g.effectiveAt <= now && (g.expiresAt === null || now < g.expiresAt)).sort(before);
  const last = usable.findIndex((g) => g.id === shares[shares.length - 1]!.grantId);
  for (const g of usable.slice(0, last))
    if (g.remainingMicros !== g.heldMicros) throw new Error(`hold skipped ${g.id}, earlier in the spending order`);
}
