/**
 * The dashboard's tables (docs/dashboard.md), for both adapters: browser sessions (only the hash of the
 * cookie's secret; the operator's have no user), one-time sign-in codes (hashed, used once) and
 * the operator's audit log, and admissions refused counted per hour and code (the operator's
 * "refusals over time"; refusal_counts has days). The CSRF token is derived from the session secret, so nothing more is stored.
 */
const tables = (big: string): string => `
  CREATE TABLE dashboard_sessions (
    id_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    user_id TEXT REFERENCES users(id),
    created_at ${big} NOT NULL,
    expires_at ${big} NOT NULL,
    revoked_at ${big}
  );
  CREATE TABLE dashboard_codes (
    code_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    user_id TEXT REFERENCES users(id),
    created_at ${big} NOT NULL,
    expires_at ${big} NOT NULL,
    used_at ${big}
  );
  CREATE TABLE refusal_hours (
    hour TEXT NOT NULL,
    code TEXT NOT NULL,
    count ${big} NOT NULL,
    PRIMARY KEY (hour, code)
  );
  CREATE TABLE admin_audit (
    id TEXT PRIMARY KEY,
    at ${big} NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
  );
  `;

export const DASHBOARD_MIGRATION = {
  why: "The dashboard (docs/dashboard.md): its browser sessions (hashed secret, role, user or none for the operator, expiry, revocation), one-time sign-in codes (hashed, used once), the audit log of operator actions, and refusals counted per hour.",
  sqlite: tables("INTEGER"),
  postgres: tables("BIGINT"),
};
