/** A tier's rules, normalized (milliseconds). */
export interface TierPolicy {
  readonly name: string;
  readonly quotaMs: number;
  /** Queue priority class: higher is served first. */
  readonly priority: number;
  readonly maxDurationMs: number;
  /** Optional cap on grants per window; null = unlimited. */
  readonly maxRuns: number | null;
  /** How long a call of this tier may wait for a slot (ms); absent: the policy's `queueTimeoutMs`. */
  readonly queueTimeoutMs?: number;
}

export interface SizePolicy {
  readonly name: string;
  /** Slots of one GPU the size occupies. */
  readonly slots: number;
  /** Quota multiplier: a call reserves duration × cost. */
  readonly cost: number;
}

export interface Policy {
  readonly windowMs: number;
  readonly defaultDurationMs: number;
  readonly defaultSize: string;
  readonly tiers: Readonly<Record<string, TierPolicy>>;
  readonly sizes: Readonly<Record<string, SizePolicy>>;
  readonly queueTimeoutMs: number;
  readonly queueMaxLength: number;
  /** Credits and overage (docs/billing.md); absent: none (see NO_BILLING). */
  readonly billing?: BillingPolicy;
  /**
   * Honest admission (see AdmissionRequest.maxWaitMs): a call expected to wait longer than it may
   * is refused at once. False: every call that may wait is queued until its timeout, as before.
   * Absent: true.
   */
  readonly predictedWait?: boolean;
  /**
   * The share of what a call may wait that it must be expected to leave unused when nothing
   * promises it a start in time (the lowest class excepted): a call expected to start in the last
   * part of its wait is refused at once too. Absent: PREDICTED_WAIT_HEADROOM (a tenth); 0: refused
   * only when expected to wait longer than it may.
   */
  readonly predictedWaitHeadroom?: number;
  /**
   * Calls through a node's agent (the device API) that name no max_wait: refused at once when
   * expected to outwait the queue timeout (true), or queued as before (absent or false).
   */
  readonly predictedWaitViaAgents?: boolean;
}

export const ANONYMOUS_TIER = "anonymous";

export const DEFAULT_POLICY: Policy = {
  windowMs: 24 * 3_600_000,
  defaultDurationMs: 60_000,
  defaultSize: "large",
  tiers: {
    anonymous: { name: "anonymous", quotaMs: 120_000, priority: 1, maxDurationMs: 120_000, maxRuns: null },
    free: { name: "free", quotaMs: 210_000, priority: 2, maxDurationMs: 120_000, maxRuns: null },
    pro: { name: "pro", quotaMs: 1_500_000, priority: 3, maxDurationMs: 300_000, maxRuns: null },
    team: { name: "team", quotaMs: 1_500_000, priority: 3, maxDurationMs: 300_000, maxRuns: null },
    enterprise: { name: "enterprise", quotaMs: 2_700_000, priority: 3, maxDurationMs: 300_000, maxRuns: null },
  },
  sizes: {
    large: { name: "large", slots: 1, cost: 1 },
    xlarge: { name: "xlarge", slots: 2, cost: 2 },
  },
  queueTimeoutMs: 60_000,
  queueMaxLength: 10_000,
};

/** How long a call of `tier` may wait in the queue: the tier's own timeout, else the policy's. */
export function queueTimeoutOf(
  policy: Pick<Policy, "queueTimeoutMs">,
  tier: Pick<TierPolicy, "queueTimeoutMs"> | undefined,
): number {
  return tier?.queueTimeoutMs ?? policy.queueTimeoutMs;
}

export function tierOf(policy: Policy, name: string): TierPolicy {
  const tier = policy.tiers[name];
  if (!tier) throw new Error(`unknown tier ${name}`);
  return tier;
}

/**
 * The tier a person could move to for more GPU time: the one with the smallest quota above
 * theirs (ties: the higher priority), excluding anonymous. Null when theirs is the largest.
 */
export function nextTierUp(policy: Policy, current: string): TierPolicy | null {
  const mine = policy.tiers[current];
  if (!mine) return null;
  let best: TierPolicy | null = null;
  for (const tier of Object.values(policy.tiers)) {
    if (tier.name === ANONYMOUS_TIER || tier.quotaMs <= mine.quotaMs) continue;
    if (!best || tier.quotaMs < best.quotaMs || (tier.quotaMs === best.quotaMs && tier.priority > best.priority))
      best = tier;
  }
  return best;
}

/** The tier a signed-in person gets by default: the smallest non-anonymous tier. */
export function signedInTier(policy: Policy): TierPolicy | null {
  let best: TierPolicy | null = null;
  for (const tier of Object.values(policy.tiers)) {
    if (tier.name === ANONYMOUS_TIER) continue;
    if (!best || tier.quotaMs < best.quotaMs) best = tier;
  }
  return best;
}

/** The operator's billing settings, normalized (money in micro-units). */
export interface BillingPolicy {
  readonly currency: string;
  /** Included credits per month, by tier. */
  readonly includedMicros: Readonly<Record<string, number>>;
  readonly overage: {
    readonly enabled: boolean;
    readonly tiers: readonly string[];
    /** For cost ×1: an xlarge minute costs twice this. */
    readonly pricePerMinuteMicros: number;
    /** The cap of a user who opts in without choosing one. */
    readonly defaultCapMicros: number;
  };
}

/** No `billing:` in the config: no included credits, no overage. */
export const NO_BILLING: BillingPolicy = {
  currency: "USD",
  includedMicros: {},
  overage: { enabled: false, tiers: [], pricePerMinuteMicros: 0, defaultCapMicros: 0 },
};
