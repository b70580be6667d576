import type { Logger } from "pino";
import type { RefusalCount, RefusalHour, Store } from "../../storage/store.js";

/** Above this many distinct keys in memory, counts are written at once rather than at the next tick. */
const MAX_PENDING = 5_000;

/**
 * Admissions refused (quota, credits, cap, no GPU…) counted per day, identity, app and code for
 * the usage summary (docs/billing.md). A refusal changes nothing in the database by contract, and a
 * flood of them must not become a flood of writes: they are counted in memory and added to the
 * day's rows every few seconds (and before a summary is read, and at shutdown) in one transaction.
 * A crash loses at most the counts since the last write.
 */
export class RefusalLog {
  private pending = new Map<string, RefusalCount>();
  /** The same refusals by hour and code only (the operator's refusals over time). */
  private hours = new Map<string, RefusalHour>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly log: Logger | null,
  ) {}

  note(identity: string, appId: string | null, tier: string, code: string, now: number): void {
    const day = new Date(now).toISOString().slice(0, 10);
    const key = `${day}\u0000${identity}\u0000${appId ?? ""}\u0000${code}`;
    const before = this.pending.get(key);
    this.pending.set(
      key,
      before === undefined
        ? { day, identity, appId: appId ?? "", tier, code, count: 1 }
        : { ...before, count: before.count + 1 },
    );
    const hour = new Date(now).toISOString().slice(0, 13);
    const hourKey = `${hour}\u0000${code}`;
    this.hours.set(hourKey, { hour, code, count: (this.hours.get(hourKey)?.count ?? 0) + 1 });
    if (this.pending.size >= MAX_PENDING) void this.flush();
  }

  /** Writes what was counted; on failure the counts stay for the next try. */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (this.pending.size === 0 && this.hours.size === 0) return;
      const batch = [...this.pending.values()];
      const hours = [...this.hours.values()];
      this.pending = new Map();
      this.hours = new Map();
      try {
        await this.store.transaction(async (tx) => {
          await tx.usage.addRefusals(batch);
          await tx.dashboard.addRefusalHours(hours);
        });
      } catch (err) {
        for (const h of hours) {
          const key = `${h.hour}\u0000${h.code}`;
          this.hours.set(key, { ...h, count: (this.hours.get(key)?.count ?? 0) + h.count });
        }
        this.log?.warn({ err }, "refusal counts not written yet; kept for the next try");
        for (const c of batch) {
          const key = `${c.day}\u0000${c.identity}\u0000${c.appId}\u0000${c.code}`;
          const now = this.pending.get(key);
          this.pending.set(key, now === undefined ? c : { ...now, count: now.count + c.count });
        }
      }
    });
    return this.writing;
  }
}
