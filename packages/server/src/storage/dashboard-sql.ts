import type {
  AuditRecord,
  DashboardCodeRecord,
  DashboardRole,
  DashboardSessionRecord,
  DashboardTx,
} from "./dashboard-records.js";
import type { SqlRunner } from "./billing-sql.js";
import type { TableNames } from "./table.js";
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
    },
  };
}
