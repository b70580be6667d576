import type { SqlRunner } from "./billing-sql.js";
import type { RetentionTx } from "./retention-records.js";

/** What the retention statements need of an adapter's transaction (statement text uses `?`). */
export interface RetentionRunner extends Pick<SqlRunner, "dialect" | "all" | "run"> {
  /**
   * SQLite's ledger cache (see SqliteStore): a deleted ledger is forgotten there, or the next write
   * would UPDATE a row that is gone. (A change of it staged in the same commit group, not yet
   * written, is then written as an insert: nothing is lost.) Absent on PostgreSQL, whose writers
   * lock the row first, and a locked row is passed by (SKIP LOCKED).
   */
  readonly forgetLedger?: (identity: string) => void;
}

const LIVE = "('queued', 'active')";

/**
 * Every statement deletes through a bounded sub-select. On PostgreSQL that sub-select locks its rows
 * FOR UPDATE SKIP LOCKED: a row another transaction holds (a release reading its lease, an admission
 * its ledger) is passed by, not waited for, and left for the next run.
 */
function bounded(dialect: SqlRunner["dialect"], table: string, key: string, where: string, order = ""): string {
  const lock = dialect === "postgres" ? " FOR UPDATE SKIP LOCKED" : "";
  return `DELETE FROM ${table} WHERE ${key} IN (SELECT ${key} FROM ${table} WHERE ${where}${order} LIMIT ?${lock})`;
}

const LEASES_AFTER = "SELECT seq, queued_at FROM leases WHERE seq > ? ORDER BY seq LIMIT ?";
const ENDED_LEASE =
  `seq > ? AND seq <= ? AND status NOT IN ${LIVE} AND COALESCE(ended_at, queued_at) < ? ` +
  // The bill first: a lease goes only once its usage record exists.
  "AND EXISTS (SELECT 1 FROM usage_records u WHERE u.id = leases.id) " +
  // SQLite's rowid alias gives a new row max(seq) + 1: the newest lease stays, so no seq is used
  // twice (PostgreSQL's sequence never reuses one; the rule is the same on both for one contract).
  "AND seq < (SELECT MAX(seq) FROM leases)";

const LEDGERS_AFTER = "SELECT identity FROM ledgers WHERE identity > ? ORDER BY identity LIMIT ?";
const IDLE_LEDGER =
  "identity > ? AND identity <= ? AND reserved_ms = 0 " +
  "AND ((window_started_at IS NOT NULL AND window_started_at < ?) " +
  "OR (window_started_at IS NULL AND used_ms = 0 AND bonus_ms = 0 AND runs = 0)) " +
  // A lease paid wholly from credits reserves nothing on the ledger; its settlement still reads it.
  `AND identity NOT IN (SELECT identity_kind || ':' || identity_id FROM leases WHERE status IN ${LIVE})`;

/** Retention's part of a transaction, the same statements on both adapters (see RetentionTx). */
export function retentionTx(db: RetentionRunner): { retention: RetentionTx } {
  const d = db.dialect;
  /** Deletes rows ended before `before` by one column then another, `limit` in all. */
  const byEnd = async (table: string, key: string, columns: readonly string[], before: number, limit: number) => {
    let deleted = 0;
    for (const column of columns) {
      if (deleted >= limit) break;
      deleted += await db.run(bounded(d, table, key, `${column} < ?`), [before, limit - deleted]);
    }
    return deleted;
  };
  return {
    retention: {
      deleteEndedLeases: async (afterSeq, endedBefore, limit) => {
        const rows = await db.all(LEASES_AFTER, [afterSeq, limit]);
        let upto: number | null = null;
        let old = 0;
        for (const r of rows) {
          // Arrival order is (nearly) queue-time order, and a lease ends after it was queued.
          if (Number(r["queued_at"]) >= endedBefore) break;
          upto = Number(r["seq"]);
          old++;
        }
        if (upto === null) return { deleted: 0, next: null };
        const deleted = await db.run(
          d === "sqlite"
            ? `DELETE FROM leases WHERE ${ENDED_LEASE}`
            : `DELETE FROM leases WHERE seq IN (SELECT seq FROM leases WHERE ${ENDED_LEASE} FOR UPDATE SKIP LOCKED)`,
          [afterSeq, upto, endedBefore],
        );
        const done = old < rows.length || rows.length < limit;
        return { deleted, next: done ? null : upto };
      },
      deleteUsageRecords: (endedBefore, limit) =>
        db.run(
          bounded(
            d,
            "usage_records",
            "id",
            // Never the record of a lease still kept: the bill outlives its lease.
            "ended_at < ? AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.id = usage_records.id)",
            " ORDER BY ended_at",
          ),
          [endedBefore, limit],
        ),
      deleteIdleLedgers: async (afterIdentity, windowStartedBefore, limit) => {
        const walked = await db.all(LEDGERS_AFTER, [afterIdentity, limit]);
        const last = walked[walked.length - 1];
        if (last === undefined) return { deleted: 0, next: null };
        const upto = String(last["identity"]);
        const next = walked.length < limit ? null : upto;
        const range = [afterIdentity, upto, windowStartedBefore];
        const forget = db.forgetLedger;
        if (forget === undefined) {
          const text = `DELETE FROM ledgers WHERE identity IN (SELECT identity FROM ledgers WHERE ${IDLE_LEDGER} FOR UPDATE SKIP LOCKED)`;
          return { deleted: await db.run(text, range), next };
        }
        const idle = (await db.all(`SELECT identity FROM ledgers WHERE ${IDLE_LEDGER}`, range)).map((r) =>
          String(r["identity"]),
        );
        let deleted = 0;
        for (let i = 0; i < idle.length; i += 500) {
          const chunk = idle.slice(i, i + 500);
          deleted += await db.run(`DELETE FROM ledgers WHERE identity IN (${chunk.map(() => "?").join(", ")})`, chunk);
        }
        for (const identity of idle) forget(identity);
        return { deleted, next };
      },
      deleteEndedSessions: (before, limit) => byEnd("sessions", "id_hash", ["expires_at", "revoked_at"], before, limit),
      deleteEndedDashboardSessions: (before, limit) =>
        byEnd("dashboard_sessions", "id_hash", ["expires_at", "revoked_at"], before, limit),
      deleteExpiredDashboardCodes: (before, limit) =>
        byEnd("dashboard_codes", "code_hash", ["expires_at"], before, limit),
    },
  };
}
