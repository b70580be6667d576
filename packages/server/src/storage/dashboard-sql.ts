import type {
  AuditRecord,
  DashboardCodeRecord,
  DashboardRole,
  DashboardSessionRecord,
  DashboardTx,
  RefusalHour,
} from "./dashboard-records.js";
import type { SqlRunner } from "./billing-sql.js";
import type { Dialect, TableNames } from "./table.js";
import { Table, integer, integerOrNull, text, textOrNull } from "./table.js";

export const DASHBOARD_SESSIONS = new Table<DashboardSessionRecord>("dashboard_sessions", {
  idHash: text("id_hash"),
  role: text<DashboardRole>("role"),
  userId: textOrNull("user_id"),
  createdAt: integer("created_at"),
  expiresAt: integer("expires_at"),
  revokedAt: integerOrNull("revoked_at"),
});

export const DASHBOARD_CODES = new Table<DashboardCodeRecord>("dashboard_codes", {
  codeHash: text("code_hash"),
  role: text<DashboardRole>("role"),
  userId: textOrNull("user_id"),
  createdAt: integer("created_at"),
  expiresAt: integer("expires_at"),
  usedAt: integerOrNull("used_at"),
});

export const ADMIN_AUDIT = new Table<AuditRecord>("admin_audit", {
  id: text("id"),
  at: integer("at"),
  action: text("action"),
  target: text("target"),
  actor: text("actor"),
  detail: text("detail"),
});

export const REFUSAL_HOURS = new Table<RefusalHour>("refusal_hours", {
  hour: text("hour"),
  code: text("code"),
  count: integer("count"),
});

/** The hour (`YYYY-MM-DDTHH`, UTC) of a usage record's end, as each database writes it. */
const HOUR: Readonly<Record<Dialect, string>> = {
  sqlite: "strftime('%Y-%m-%dT%H', ended_at / 1000, 'unixepoch')",
  postgres: "to_char(to_timestamp(ended_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')",
};

/** `YYYY-MM-DDTHH` of an instant (UTC). */
export function hourOf(t: number): string {
  return new Date(t).toISOString().slice(0, 13);
}

const insert = (t: TableNames): string =>
  `INSERT INTO ${t.name} (${t.insertNames.join(", ")}) VALUES (${t.insertNames.map(() => "?").join(", ")})`;

const SQL = {
  insertSession: insert(DASHBOARD_SESSIONS),
  session: `SELECT ${DASHBOARD_SESSIONS.selectList} FROM dashboard_sessions WHERE id_hash = ?`,
  sessionExists: "SELECT 1 AS one FROM dashboard_sessions WHERE id_hash = ?",
  revoke: "UPDATE dashboard_sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL",
  insertCode: insert(DASHBOARD_CODES),
  // One conditional UPDATE: of two uses of a code at once, only one changes the row.
  useCode: "UPDATE dashboard_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
  code: `SELECT ${DASHBOARD_CODES.selectList} FROM dashboard_codes WHERE code_hash = ?`,
  addAudit: insert(ADMIN_AUDIT),
  audit: `SELECT ${ADMIN_AUDIT.selectList} FROM admin_audit ORDER BY id DESC LIMIT ?`,
  addRefusalHour:
    "INSERT INTO refusal_hours (hour, code, count) VALUES (?, ?, ?) " +
    "ON CONFLICT (hour, code) DO UPDATE SET count = refusal_hours.count + excluded.count",
  refusalHours: "SELECT hour, code, count FROM refusal_hours WHERE hour >= ? AND hour <= ?",
  granted:
    "SELECT queued_at, granted_at, held_ms, reserved_ms, size FROM usage_records " +
    "WHERE ended_at >= ? AND ended_at < ? AND granted_at IS NOT NULL ORDER BY ended_at DESC LIMIT ?",
  grantedOfApp:
    "SELECT queued_at, granted_at, held_ms, reserved_ms, size FROM usage_records " +
    "WHERE app_id = ? AND ended_at >= ? AND ended_at < ? AND granted_at IS NOT NULL ORDER BY ended_at DESC LIMIT ?",
  auditBefore: `SELECT ${ADMIN_AUDIT.selectList} FROM admin_audit WHERE id < ? ORDER BY id DESC LIMIT ?`,
};

/** The dashboard's part of a transaction, the same statements on both adapters. */
export function dashboardTx(db: Pick<SqlRunner, "dialect" | "all" | "run">): { dashboard: DashboardTx } {
  const d = db.dialect;
  return {
    dashboard: {
      insertSession: async (s) => void (await db.run(SQL.insertSession, DASHBOARD_SESSIONS.insertParams(s, d))),
      getSession: async (idHash) => {
        const row = (await db.all(SQL.session, [idHash]))[0];
        return row === undefined ? null : DASHBOARD_SESSIONS.decode(row);
      },
      revokeSession: async (idHash, at) => {
        await db.run(SQL.revoke, [at, idHash]);
        return (await db.all(SQL.sessionExists, [idHash])).length > 0;
      },
      insertCode: async (c) => void (await db.run(SQL.insertCode, DASHBOARD_CODES.insertParams(c, d))),
      useCode: async (codeHash, at) => {
        if ((await db.run(SQL.useCode, [at, codeHash, at])) === 0) return null;
        const row = (await db.all(SQL.code, [codeHash]))[0];
        return row === undefined ? null : DASHBOARD_CODES.decode(row);
      },
      addAudit: async (r) => void (await db.run(SQL.addAudit, ADMIN_AUDIT.insertParams(r, d))),
      audit: async (before, limit) =>
        (await (before === null ? db.all(SQL.audit, [limit]) : db.all(SQL.auditBefore, [before, limit]))).map((r) =>
          ADMIN_AUDIT.decode(r),
        ),
      addRefusalHours: async (counts) => {
        for (const c of counts) await db.run(SQL.addRefusalHour, [c.hour, c.code, c.count]);
      },
      refusalHours: async (from, to) => {
        const counted = await db.all(SQL.refusalHours, [hourOf(from), hourOf(to - 1)]);
        const ended = await db.all(
          `SELECT ${HOUR[d]} AS hour, problem_code AS code, COUNT(*) AS count FROM usage_records ` +
            "WHERE ended_at >= ? AND ended_at < ? AND granted_at IS NULL AND problem_code IS NOT NULL " +
            `GROUP BY ${HOUR[d]}, problem_code`,
          [from, to],
        );
        return [...counted, ...ended].map((r) => REFUSAL_HOURS.decode(r));
      },
      grantedCalls: async (appId, from, to, limit) => {
        const rows =
          appId === null
            ? await db.all(SQL.granted, [from, to, limit])
            : await db.all(SQL.grantedOfApp, [appId, from, to, limit]);
        return rows.map((r) => ({
          queuedAt: Number(r["queued_at"]),
          grantedAt: Number(r["granted_at"]),
          heldMs: Number(r["held_ms"]),
          reservedMs: Number(r["reserved_ms"]),
          size: String(r["size"]),
        }));
      },
    },
  };
}
