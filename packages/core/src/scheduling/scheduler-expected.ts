import type { Concurrency } from "./scheduler.js";
import type { ForecastQueue } from "./forecast.js";
import { forecastFrom } from "./forecast.js";
import type { HeldShares, HoldEstimates } from "./held-shares.js";
import type { EtaState } from "./scheduler-eta.js";
import { fluidExpectedMs } from "./scheduler-eta.js";
import type { QueueEntry } from "./scheduler-lanes.js";
import type { SchedulerOptions } from "./scheduler-types.js";

/**
 * The expected waits of a scheduler's queued requests (see PriorityScheduler.place): from a
 * forecast while the queue and pool are small, else from the bound's formula with expected holds.
 * The scheduler reports every change (`changed`), so a forecast is made once per change and time
 * however many queued requests are asked about.
 */
export class ExpectedWaits {
  private version = 0;
  private cache: { version: number; now: number; starts: Map<string, number> | null } | null = null;
  /** The engine's app counts and limits, as last handed to the scheduler (a forecast reads them). */
  concurrency: Concurrency | null = null;

  constructor(
    private readonly eta: EtaState,
    private readonly held: HeldShares,
    /** The forecast's size limit (queued + active) and which trials get a soonest wait. */
    private readonly options: Pick<SchedulerOptions, "forecastLimit" | "soonestQuantile" | "soonestUpToClass">,
    /** The scheduler's queued entries, in enqueue order. */
    private readonly entries: ReadonlyMap<string, QueueEntry>,
    /** A fresh scheduler with the same options, to play forward. */
    private readonly fresh: () => ForecastQueue,
  ) {}

  changed(): void {
    this.version++;
  }

  /**
   * The expected wait of a queued entry. From the forecast it is exactly when the forecast grants
   * it — which may be later than `boundMs` for a multi-slot call or one held back by its app's
   * limit (the bound's formula is a true bound for one-slot calls only; the caller then raises
   * the bound to it). `probe`: a trial's entry, whose forecast stops once it is granted and is not kept.
   */
  of(entry: QueueEntry, workAheadMs: number, boundMs: number, now: number, probe: boolean): number {
    const starts = probe ? this.forecast(now, entry.request.leaseId, this.held) : this.cached(now);
    if (starts === null) return fluidExpectedMs(this.eta, this.held, entry, workAheadMs, boundMs, now);
    const start = starts.get(entry.request.leaseId);
    // Never granted under the forecast's assumptions (an app held at a limit of 0): the bound.
    return start === undefined ? boundMs : Math.max(0, start - now);
  }

  /**
   * A trial's soonest likely wait (`soonest`), never above its expected wait, for a call of a low
   * class (options.soonestUpToClass): admission refuses it only when even that is too late. Null
   * for other classes, or when unknown.
   */
  soonestOf(
    entry: QueueEntry,
    workAheadMs: number,
    boundMs: number | null,
    expectedMs: number | null,
    now: number,
  ): number | null {
    const q = this.options.soonestQuantile;
    if (q === null || entry.request.priority > this.options.soonestUpToClass) return null;
    if (boundMs === null || expectedMs === null) return null;
    return Math.min(expectedMs, this.soonest(entry, workAheadMs, boundMs, now, q));
  }

  /**
   * A trial's soonest likely wait: as `of` for a probe, with every call holding the `quantile`-th
   * share its app was seen to hold (a low quantile: calls ending as early as they often do).
   */
  soonest(entry: QueueEntry, workAheadMs: number, boundMs: number, now: number, quantile: number): number {
    const held = this.held.at(quantile);
    const starts = this.forecast(now, entry.request.leaseId, held);
    if (starts === null) return fluidExpectedMs(this.eta, held, entry, workAheadMs, boundMs, now);
    const start = starts.get(entry.request.leaseId);
    return start === undefined ? boundMs : Math.max(0, start - now);
  }

  private cached(now: number): Map<string, number> | null {
    const c = this.cache;
    if (c !== null && c.version === this.version && c.now === now) return c.starts;
    const starts = this.forecast(now, null, this.held);
    this.cache = { version: this.version, now, starts };
    return starts;
  }

  /**
   * When each queued request would be granted if the schedule played out as expected; null when
   * the queue and pool are too large to copy (beyond `forecastLimit`), or the scheduler has not seen the
   * pool or the engine's app counts yet.
   */
  private forecast(now: number, stopAt: string | null, held: HoldEstimates): Map<string, number> | null {
    const concurrency = this.concurrency;
    if (concurrency === null || this.entries.size + this.eta.board.size > this.options.forecastLimit) return null;
    // A copy ranks each request as this scheduler does (a newcomer kept behind a promise included).
    const queued = [...this.entries.values()].map((e) => ({
      ...e.request,
      rankKey: e.key,
      promisedAt: e.promiseAt,
      promisedFrom: e.promiseFrom,
    }));
    return forecastFrom(this.eta.board, held, queued, concurrency, now, stopAt, this.fresh);
  }
}
