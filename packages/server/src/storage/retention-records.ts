/**
 * What the retention job deletes (use-cases/maintenance/retention.ts). Each call deletes at most
 * `limit` rows and never waits for a row another transaction holds (PostgreSQL: SKIP LOCKED; such a
 * row is left for the next run), so a batch is one short transaction that blocks no admission.
 * Where a table is walked by its key, the call says where the next batch starts (`next`), or null
 * when the walk is done.
 */
export interface RetentionTx {
  /**
   * Leases after `afterSeq`, in arrival order, up to `limit` of them looked at: deletes those that
   * ended (released, expired, cancelled, failed) before `endedBefore` and whose usage record exists.
   * Never a queued or active lease, a lease without its usage record, or the newest lease (SQLite
   * gives a new lease the highest seq + 1: the newest stays so that a seq is never used twice).
   * The walk is done once it reaches a lease queued at or after `endedBefore` or the last lease.
   */
  deleteEndedLeases(
    afterSeq: number,
    endedBefore: number,
    limit: number,
  ): Promise<{ deleted: number; next: number | null }>;
  /** Deletes up to `limit` usage records of leases that ended before `endedBefore`, oldest first. */
  deleteUsageRecords(endedBefore: number, limit: number): Promise<number>;
  /**
   * Ledgers after `afterIdentity`, in identity order, up to `limit` looked at: deletes those that
   * hold nothing — no reservation, no live lease of the identity, and either a window that started
   * before `windowStartedBefore` (so it ended long ago: the ledger rolled to now is empty) or no
   * window and nothing counted (used, bonus, runs all 0). Such a ledger reads as no ledger at all,
   * so no quota answer changes.
   */
  deleteIdleLedgers(
    afterIdentity: string,
    windowStartedBefore: number,
    limit: number,
  ): Promise<{ deleted: number; next: string | null }>;
  /** Deletes up to `limit` edge sessions that expired, or were revoked, before `endedBefore`. */
  deleteEndedSessions(endedBefore: number, limit: number): Promise<number>;
  /** The same for dashboard sessions. */
  deleteEndedDashboardSessions(endedBefore: number, limit: number): Promise<number>;
  /** Deletes up to `limit` dashboard sign-in codes that expired before `endedBefore` (a used code expired soon after). */
  deleteExpiredDashboardCodes(endedBefore: number, limit: number): Promise<number>;
}
