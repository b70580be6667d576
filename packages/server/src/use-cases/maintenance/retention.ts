import type { Logger } from "pino";
import type { RetentionConfig } from "../../config-retention.js";
import type { Store, Tx } from "../../storage/store.js";

/** The tables retention deletes from (the metric's `table` label). */
export const RETENTION_TABLES = [
  "leases",
  "usage_records",
  "ledgers",
  "sessions",
  "dashboard_sessions",
  "dashboard_codes",
] as const;
export type RetentionTable = (typeof RETENTION_TABLES)[number];

export type RetentionCounts = Record<RetentionTable, number>;

export interface RetentionDeps {
  /** Whether this replica leads: only the leader deletes (checked before every batch). */
  readonly leads: () => boolean;
  /** Rows deleted from a table (the metric). */
  readonly deleted?: (table: RetentionTable, rows: number) => void;
  readonly log?: Logger;
  /** How the pause between batches is waited (tests count the batches). */
  readonly pause?: (ms: number) => Promise<void>;
}

const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Deletes what has ended longer ago than the configuration keeps it (`retention:`): ended leases
 * (once their usage record — the bill — exists), usage records (never by default), edge and
 * dashboard sessions and sign-in codes, and ledgers that hold nothing. In batches of at most
 * `batchRows` rows, one short transaction each with a pause after it, so no batch holds locks long
 * or keeps admissions waiting (on PostgreSQL a batch passes rows others hold by: SKIP LOCKED).
 *
 * What it never changes: a queued or active lease, a usage record younger than its retention or
 * whose lease is still kept, and any identity's quota — a ledger goes only when it reads as no
 * ledger at all (its window ended and it holds no reservation and no live lease, or it never
 * counted anything), so `GET /v1/quota` answers the same before and after.
 *
 * Run by the leader only (one replica deleting is enough, and the others' batches would only skip
 * each other's rows); a run stops between batches when leadership is lost or `stop` is called.
 */
export class Retention {
  private running: Promise<RetentionCounts> | null = null;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly config: RetentionConfig,
    /** The quota window (policy.windowMs): a ledger's window ends this long after it started. */
    private readonly windowMs: number,
    private readonly deps: RetentionDeps,
  ) {}

  /** One pass over every table as of `now`; a pass already running is joined, not doubled. */
  run(now: number): Promise<RetentionCounts> {
    this.running ??= this.pass(now).finally(() => (this.running = null));
    return this.running;
  }

  /** Stops a running pass after its current batch; resolves once it has. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running?.catch(() => undefined);
  }

  private async pass(now: number): Promise<RetentionCounts> {
    const started = Date.now();
    const c = this.config;
    const counts = Object.fromEntries(RETENTION_TABLES.map((t) => [t, 0])) as RetentionCounts;
    const batch = c.batchRows;
    if (c.leasesMs !== null) {
      const before = now - c.leasesMs;
      await this.walk("leases", counts, 0, (tx, after: number) => tx.retention.deleteEndedLeases(after, before, batch));
    }
    // After the leases: a usage record whose lease is still kept is never deleted.
    if (c.usageMs !== null) {
      const before = now - c.usageMs;
      await this.drain("usage_records", counts, (tx) => tx.retention.deleteUsageRecords(before, batch));
    }
    if (c.sessionsMs !== null) {
      const before = now - c.sessionsMs;
      await this.drain("sessions", counts, (tx) => tx.retention.deleteEndedSessions(before, batch));
      await this.drain("dashboard_sessions", counts, (tx) => tx.retention.deleteEndedDashboardSessions(before, batch));
      await this.drain("dashboard_codes", counts, (tx) => tx.retention.deleteExpiredDashboardCodes(before, batch));
    }
    if (c.ledgersMs !== null) {
      // The window ended at start + windowMs; kept ledgersMs after that.
      const before = now - this.windowMs - c.ledgersMs;
      await this.walk("ledgers", counts, "", (tx, after: string) =>
        tx.retention.deleteIdleLedgers(after, before, batch),
      );
    }
    const total = RETENTION_TABLES.reduce((sum, t) => sum + counts[t], 0);
    if (total > 0)
      this.deps.log?.info({ deleted: counts, ms: Date.now() - started }, `retention deleted ${total} rows`);
    return counts;
  }

  /** Whether another batch may run now. */
  private get going(): boolean {
    return !this.stopped && this.deps.leads();
  }

  private note(table: RetentionTable, counts: RetentionCounts, rows: number): void {
    counts[table] += rows;
    if (rows > 0) this.deps.deleted?.(table, rows);
  }

  private async pause(): Promise<void> {
    await (this.deps.pause ?? wait)(this.config.pauseMs);
  }

  /** Batches until one deletes less than a full batch. */
  private async drain(
    table: RetentionTable,
    counts: RetentionCounts,
    batch: (tx: Tx) => Promise<number>,
  ): Promise<void> {
    while (this.going) {
      const rows = await this.store.transaction(batch);
      this.note(table, counts, rows);
      if (rows < this.config.batchRows) return;
      await this.pause();
    }
  }

  /** Batches along a table's key from `from` until the walk is done. */
  private async walk<K>(
    table: RetentionTable,
    counts: RetentionCounts,
    from: K,
    batch: (tx: Tx, after: K) => Promise<{ deleted: number; next: K | null }>,
  ): Promise<void> {
    let after: K | null = from;
    while (after !== null && this.going) {
      const at: K = after;
      const { deleted, next } = await this.store.transaction((tx) => batch(tx, at));
      this.note(table, counts, deleted);
      after = next;
      if (after !== null) await this.pause();
    }
  }
}
