/**
 * The billing tables (docs/billing.md), as one migration for both adapters: a user's credit grants,
 * the append-only wallet transactions, the billing settings and the month's spend per user, the
 * lease's split into quota and overage with its hold, the usage ledger (one immutable record per
 * ended lease) and the refusals counted per day. Money is whole micro-units in 64-bit integers.
 * Only users' usage records are indexed by identity (as leases, migration 4): an index of every
 * identity's would cost each ended lease a page write at a random place in it.
 */
const tables = (big: string, bool: string): string => `
  ALTER TABLE leases ADD COLUMN quota_ms ${big} NOT NULL DEFAULT 0;
  ALTER TABLE leases ADD COLUMN overage_ms ${big} NOT NULL DEFAULT 0;
  ALTER TABLE leases ADD COLUMN hold_micros ${big} NOT NULL DEFAULT 0;
  ALTER TABLE leases ADD COLUMN hold_shares TEXT;
  ALTER TABLE leases ADD COLUMN charged_micros ${big} NOT NULL DEFAULT 0;
  UPDATE leases SET quota_ms = reserved_ms;
  CREATE TABLE credit_grants (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    category TEXT NOT NULL,
    amount_micros ${big} NOT NULL,
    remaining_micros ${big} NOT NULL,
    held_micros ${big} NOT NULL,
    priority INTEGER NOT NULL,
    effective_at ${big} NOT NULL,
    expires_at ${big},
    source TEXT NOT NULL,
    created_at ${big} NOT NULL,
    idempotency_key TEXT,
    CHECK (remaining_micros >= 0 AND held_micros >= 0 AND held_micros <= remaining_micros AND remaining_micros <= amount_micros)
  );
  CREATE INDEX credit_grants_user ON credit_grants(user_id);
  CREATE UNIQUE INDEX credit_grants_key ON credit_grants(user_id, idempotency_key);
  CREATE TABLE wallet_transactions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    at ${big} NOT NULL,
    kind TEXT NOT NULL,
    amount_micros ${big} NOT NULL,
    grant_id TEXT NOT NULL,
    lease_id TEXT
  );
  CREATE INDEX wallet_transactions_user ON wallet_transactions(user_id, at);
  CREATE TABLE billing_accounts (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    overage_enabled ${bool} NOT NULL,
    monthly_cap_micros ${big},
    month TEXT NOT NULL,
    month_spent_micros ${big} NOT NULL
  );
  CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    identity_kind TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    app_id TEXT,
    node TEXT,
    size TEXT NOT NULL,
    status TEXT NOT NULL,
    queued_at ${big} NOT NULL,
    granted_at ${big},
    ended_at ${big} NOT NULL,
    held_ms ${big} NOT NULL,
    reserved_ms ${big} NOT NULL,
    charged_ms ${big} NOT NULL,
    quota_ms ${big} NOT NULL,
    overage_ms ${big} NOT NULL,
    charged_micros ${big} NOT NULL,
    refunded_ms ${big} NOT NULL,
    problem_code TEXT
  );
  CREATE INDEX usage_ended ON usage_records(ended_at, id);
  CREATE INDEX usage_user ON usage_records(identity_id, ended_at) WHERE identity_kind = 'user';
  CREATE INDEX usage_app ON usage_records(app_id, ended_at);
  CREATE TABLE refusal_counts (
    day TEXT NOT NULL,
    identity TEXT NOT NULL,
    app_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    code TEXT NOT NULL,
    count ${big} NOT NULL,
    PRIMARY KEY (day, identity, app_id, code)
  );
  `;

export const BILLING_MIGRATION = {
  why: "Billing (docs/billing.md): credit grants, wallet transactions, billing settings and the month's spend, the lease's quota/overage split and hold, the usage ledger, refusals per day.",
  sqlite: tables("INTEGER", "INTEGER"),
  postgres: tables("BIGINT", "BOOLEAN"),
};
