/**
 * How much of its reservation a call actually holds, learnt from calls that ended: per app, the
 * last `window` shares held ÷ reserved (a lease that ran to its deadline held 1; apps reserve 60 s
 * and often use a fraction), and a quantile of them. The expected ETA is computed from these; the
 * bound still assumes every call holds its whole reservation.
 *
 * Pure and deterministic: the same completions in the same order give the same estimates.
 */

export interface HeldShareOptions {
  /** Completed calls remembered per app (and ten times as many for the pool as a whole). */
  readonly window: number;
  /** The quantile of the shares taken as "expected" (0.5: the median). */
  readonly quantile: number;
  /** An app with fewer completed calls than this borrows the pool-wide figure. */
  readonly minSamples: number;
}

export const DEFAULT_HELD_SHARE_OPTIONS: HeldShareOptions = { window: 64, quantile: 0.5, minSamples: 4 };

/** The last shares seen, in arrival order (a ring) and sorted (for quantiles). */
class ShareWindow {
  private readonly ring: number[] = [];
  private next = 0;
  readonly sorted: number[] = [];

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.sorted.length;
  }

  add(share: number): void {
    if (this.ring.length < this.capacity) {
      this.ring.push(share);
    } else {
      const old = this.ring[this.next] as number;
      this.ring[this.next] = share;
      this.next = (this.next + 1) % this.capacity;
      this.sorted.splice(lowerBound(this.sorted, old), 1);
    }
    this.sorted.splice(lowerBound(this.sorted, share), 0, share);
  }
}

/** The first index whose value is not below `x`. */
function lowerBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The q-quantile of sorted[from..] (nearest rank). */
function quantileFrom(sorted: readonly number[], from: number, q: number): number {
  const n = sorted.length - from;
  const i = Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1));
  return sorted[from + i] as number;
}

/** What a forecast reads of what calls hold: the expected share, hold and end (see HeldShares). */
export type HoldEstimates = Pick<HeldShares, "share" | "expectedHoldMs" | "expectedEnd">;

export class HeldShares {
  readonly options: HeldShareOptions;
  private readonly apps = new Map<string, ShareWindow>();
  private readonly pool: ShareWindow;
  /** Each app's quantile, kept so that reading it is O(1). */
  private readonly cached = new Map<string | null, number>();

  constructor(options: Partial<HeldShareOptions> = {}) {
    this.options = { ...DEFAULT_HELD_SHARE_OPTIONS, ...options };
    const { window, quantile, minSamples } = this.options;
    if (!(Number.isInteger(window) && window >= 1)) throw new Error("window must be a positive integer");
    if (!(quantile > 0 && quantile <= 1)) throw new Error("quantile must be in (0, 1]");
    if (!(Number.isInteger(minSamples) && minSamples >= 1)) throw new Error("minSamples must be a positive integer");
    this.pool = new ShareWindow(window * 10);
  }

  /** Completed calls learnt from, pool-wide (up to ten windows). */
  get samples(): number {
    return this.pool.size;
  }

  /** A call of `appId` that reserved `reservedMs` held its slots `heldMs` (grant to end). */
  learn(appId: string | null, heldMs: number, reservedMs: number): void {
    if (!(reservedMs > 0) || !(heldMs >= 0)) return;
    const share = Math.min(1, heldMs / reservedMs);
    this.pool.add(share);
    this.cached.clear();
    if (appId === null) return;
    let own = this.apps.get(appId);
    if (!own) {
      own = new ShareWindow(this.options.window);
      this.apps.set(appId, own);
    }
    own.add(share);
  }

  /** The expected share of a call of `appId`: its app's quantile, else the pool's, else 1 (nothing learnt yet: the reservation). */
  share(appId: string | null, quantile = this.options.quantile): number {
    const own = quantile === this.options.quantile;
    const hit = own ? this.cached.get(appId) : undefined;
    if (hit !== undefined) return hit;
    const w = this.windowOf(appId);
    const share = w === null ? 1 : quantileFrom(w.sorted, 0, quantile);
    if (own) this.cached.set(appId, share);
    return share;
  }

  /** Expected milliseconds a call of `durationMs` holds its slots, once granted (whole ms, at most its duration). */
  expectedHoldMs(appId: string | null, durationMs: number, quantile = this.options.quantile): number {
    return Math.min(durationMs, Math.ceil(this.share(appId, quantile) * durationMs));
  }

  /**
   * The same estimates at another quantile of the same shares (an optimistic view: a low quantile
   * says how soon calls may well end, not how soon they are expected to).
   */
  at(quantile: number): HoldEstimates {
    if (!(quantile > 0 && quantile <= 1)) throw new Error("quantile must be in (0, 1]");
    return {
      share: (appId) => this.share(appId, quantile),
      expectedHoldMs: (appId, durationMs) => this.expectedHoldMs(appId, durationMs, quantile),
      expectedEnd: (appId, grantedAt, deadline, now) => this.expectedEnd(appId, grantedAt, deadline, now, quantile),
    };
  }

  /**
   * When a lease granted at `grantedAt` with deadline `deadline` is expected to end, seen at `now`:
   * the quantile of the app's shares longer than what it has already held; past all of them,
   * halfway from now to its deadline. Never before `now`, never after the deadline. An unknown
   * grant time counts the expected share of what is left to the deadline.
   */
  expectedEnd(
    appId: string | null,
    grantedAt: number | null,
    deadline: number,
    now: number,
    quantile = this.options.quantile,
  ): number {
    if (!Number.isFinite(deadline)) return deadline;
    if (deadline <= now) return now;
    if (grantedAt === null || grantedAt >= deadline)
      return Math.min(deadline, now + Math.ceil(this.share(appId, quantile) * (deadline - now)));
    const w = this.windowOf(appId);
    if (w === null) return deadline;
    const reserved = deadline - grantedAt;
    const held = Math.max(0, now - grantedAt) / reserved;
    // Shares strictly above what it has held already: those are the calls it may still be like.
    let from = lowerBound(w.sorted, held);
    while (from < w.size && (w.sorted[from] as number) <= held) from++;
    if (from >= w.size) return now + Math.ceil((deadline - now) / 2);
    const end = grantedAt + Math.ceil(quantileFrom(w.sorted, from, quantile) * reserved);
    return Math.min(deadline, Math.max(now, end));
  }

  private windowOf(appId: string | null): ShareWindow | null {
    const own = appId === null ? undefined : this.apps.get(appId);
    if (own !== undefined && own.size >= this.options.minSamples) return own;
    return this.pool.size >= this.options.minSamples ? this.pool : null;
  }
}
