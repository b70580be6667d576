/**
 * A user's credits: grants, not a single balance (docs/billing.md). Each grant has an amount, what
 * is left of it, and what calls in flight hold of it; a call's hold is earmarked on grants in the
 * spending order when the call is admitted, and at settlement its spend comes out of exactly those
 * earmarks, the rest being released. So a hold, once placed, is always covered: a grant that
 * expires meanwhile loses only what nobody holds, and spends plus holds can never exceed what was
 * granted. Pure: time comes in as an argument, and every amount is whole micro-units.
 */

export type GrantCategory = "included" | "promotional" | "purchased";

/** The spending order among grants alike in priority and expiry: included credits first, bought ones last. */
const CATEGORY_ORDER: Readonly<Record<GrantCategory, number>> = { included: 0, promotional: 1, purchased: 2 };

export interface CreditGrant {
  readonly id: string;
  readonly category: GrantCategory;
  readonly amountMicros: number;
  /** What is left: not yet spent nor expired (holds included). */
  readonly remainingMicros: number;
  /** What calls in flight hold of `remainingMicros`. */
  readonly heldMicros: number;
  /** Lower is spent first. */
  readonly priority: number;
  readonly effectiveAt: number;
  /** Null: never expires. */
  readonly expiresAt: number | null;
  /** Where it came from: the tier's monthly credits, an operator, a payment. */
  readonly source: string;
  readonly createdAt: number;
}

/** Part of a hold (or a spend, or an expiry): this many micro-units of one grant. */
export interface GrantShare {
  readonly grantId: string;
  readonly micros: number;
}

export function isUsable(grant: CreditGrant, now: number): boolean {
  return grant.effectiveAt <= now && (grant.expiresAt === null || now < grant.expiresAt);
}

/**
 * The spending order: lower priority first, then the soonest expiry (never-expiring last), then
 * included, promotional, purchased, then the oldest.
 */
export function spendingOrder(a: CreditGrant, b: CreditGrant): number {
  if (a.priority !== b.priority) return a.priority - b.priority;
  const ae = a.expiresAt ?? Number.POSITIVE_INFINITY;
  const be = b.expiresAt ?? Number.POSITIVE_INFINITY;
  if (ae !== be) return ae < be ? -1 : 1;
  const c = CATEGORY_ORDER[a.category] - CATEGORY_ORDER[b.category];
  if (c !== 0) return c;
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export interface CreditTotals {
  /** Left of effective, unexpired grants. */
  readonly balanceMicros: number;
  /** Held by calls in flight (on any grant). */
  readonly heldMicros: number;
  /** What a new hold may take: the unheld part of effective, unexpired grants. */
  readonly availableMicros: number;
}

export function creditTotals(grants: readonly CreditGrant[], now: number): CreditTotals {
  let balance = 0;
  let held = 0;
  let available = 0;
  for (const g of grants) {
    held += g.heldMicros;
    if (!isUsable(g, now)) continue;
    balance += g.remainingMicros;
    available += g.remainingMicros - g.heldMicros;
  }
  return { balanceMicros: balance, heldMicros: held, availableMicros: available };
}

/**
 * Earmarks `micros` on usable grants in spending order. Null when they do not have that much
 * unheld: nothing is held then. The grants come back as records of the caller's own type (a store's
 * rows stay rows), the changed ones copied.
 */
export function placeHold<G extends CreditGrant>(
  grants: readonly G[],
  micros: number,
  now: number,
): { readonly grants: G[]; readonly shares: GrantShare[] } | null {
  if (micros === 0) return { grants: [...grants], shares: [] };
  const order = grants.filter((g) => isUsable(g, now) && g.remainingMicros > g.heldMicros);
  if (order.length > 1) order.sort(spendingOrder);
  const shares: GrantShare[] = [];
  let left = micros;
  for (const g of order) {
    if (left === 0) break;
    const part = Math.min(left, g.remainingMicros - g.heldMicros);
    shares.push({ grantId: g.id, micros: part });
    left -= part;
  }
  if (left > 0) return null;
  return {
    grants: grants.map((g) => {
      const share = shares.find((s) => s.grantId === g.id);
      return share === undefined ? g : { ...g, heldMicros: g.heldMicros + share.micros };
    }),
    shares,
  };
}

/**
 * Settles a hold: `spendMicros` (at most the hold) comes out of its earmarks in the order they were
 * made; the rest is released. What is released of a grant that expired meanwhile expires with it.
 * The grants come back as records of the caller's own type, the changed ones copied.
 */
export function settleHold<G extends CreditGrant>(
  grants: readonly G[],
  hold: readonly GrantShare[],
  spendMicros: number,
  now: number,
): {
  readonly grants: G[];
  readonly spent: GrantShare[];
  readonly released: GrantShare[];
  readonly expired: GrantShare[];
} {
  const total = hold.reduce((sum, s) => sum + s.micros, 0);
  if (spendMicros < 0 || spendMicros > total) throw new Error(`a spend of ${spendMicros} against a hold of ${total}`);
  const spent: GrantShare[] = [];
  const released: GrantShare[] = [];
  const expired: GrantShare[] = [];
  const change = new Map<string, { spend: number; release: number }>();
  let left = spendMicros;
  for (const s of hold) {
    const spend = Math.min(left, s.micros);
    left -= spend;
    change.set(s.grantId, { spend, release: s.micros - spend });
    if (spend > 0) spent.push({ grantId: s.grantId, micros: spend });
  }
  const next = grants.map((g) => {
    const c = change.get(g.id);
    if (c === undefined) return g;
    const gone = isUsable(g, now) || g.effectiveAt > now ? 0 : c.release;
    if (c.release > 0) (gone > 0 ? expired : released).push({ grantId: g.id, micros: c.release });
    return {
      ...g,
      heldMicros: g.heldMicros - c.spend - c.release,
      remainingMicros: g.remainingMicros - c.spend - gone,
    };
  });
  return { grants: next, spent, released, expired };
}

/** Grants past their expiry lose what nobody holds (what is held expires when its hold is settled). */
export function expireGrants<G extends CreditGrant>(
  grants: readonly G[],
  now: number,
): { readonly grants: G[]; readonly expired: GrantShare[] } {
  const expired: GrantShare[] = [];
  const next = grants.map((g) => {
    if (g.expiresAt === null || now < g.expiresAt || g.remainingMicros === g.heldMicros) return g;
    expired.push({ grantId: g.id, micros: g.remainingMicros - g.heldMicros });
    return { ...g, remainingMicros: g.heldMicros };
  });
  return { grants: next, expired };
}

/** The billing month `now` is in (calendar months in UTC): its name and bounds. */
export function billingMonth(now: number): {
  readonly name: string;
  readonly startsAt: number;
  readonly endsAt: number;
} {
  const d = new Date(now);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  return { name: `${y}-${String(m + 1).padStart(2, "0")}`, startsAt: Date.UTC(y, m, 1), endsAt: Date.UTC(y, m + 1, 1) };
}

/** The id of a user's included grant of a billing month (`billingMonth(now).name`). */
export function includedGrantId(userId: string, month: string): string {
  return `inc_${month}_${userId}`;
}

/**
 * A tier's included credits for the billing month of `now`: one grant per user and month, its id
 * derived from both (so granting it twice, from two replicas or a retry, is one grant), effective
 * at the month's start and expiring at its end.
 */
export function includedGrant(userId: string, tier: string, amountMicros: number, now: number): CreditGrant {
  const month = billingMonth(now);
  return {
    id: includedGrantId(userId, month.name),
    category: "included",
    amountMicros,
    remainingMicros: amountMicros,
    heldMicros: 0,
    priority: 0,
    effectiveAt: month.startsAt,
    expiresAt: month.endsAt,
    source: `monthly credits of the ${tier} tier, ${month.name}`,
    createdAt: now,
  };
}
