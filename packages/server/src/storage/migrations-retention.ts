/**
 * What the retention job (use-cases/maintenance/retention.ts) deletes by, indexed: sessions and
 * dashboard sessions by expiry and by revocation, sign-in codes by expiry. Plain CREATE INDEX: the
 * tables are small (a row per sign-in), so the moment's lock is short.
 *
 * Leases, ledgers and usage records get no new index. The job walks leases in `seq` order (their
 * key: arrival order, so the oldest come first) and ledgers in `identity` order, a bounded range
 * per batch, and usage records by the `usage_ended` index they already have. An index on a lease's
 * `ended_at` or a ledger's window would cost every admission or release an index write (on SQLite
 * even when the value is unchanged, see table.ts; on PostgreSQL it would keep a ledger's updates
 * from being HOT when a window starts) to save a walk that runs once an hour.
 */
const indexes = `
  CREATE INDEX sessions_expires ON sessions(expires_at);
  CREATE INDEX sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
  CREATE INDEX dashboard_sessions_expires ON dashboard_sessions(expires_at);
  CREATE INDEX dashboard_sessions_revoked ON dashboard_sessions(revoked_at) WHERE revoked_at IS NOT NULL;
  CREATE INDEX dashboard_codes_expires ON dashboard_codes(expires_at);
  `;

export const RETENTION_MIGRATION = {
  why: "Retention deletes what has ended once the configured time has passed (issue 17). Sessions, dashboard sessions and sign-in codes are indexed by when they end (expiry, revocation) so the job's batches are index scans; leases and ledgers are walked by their keys, usage records by usage_ended.",
  sqlite: indexes,
  postgres: indexes,
};
