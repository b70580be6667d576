/**
 * Migration 12: a wallet transaction costs one index entry, not two (issue 15's credits path).
 * Every call paid from credits appends two or three of them (hold; spend and/or release), and the
 * only read is a user's newest first (`GET /v1/me/wallet`). Before, each was in the table, in the
 * `id` primary key's index and in `wallet_transactions_user (user_id, at)`; now in the table (in
 * the order written) and in one unique index `(user_id, at, id)`, the order the list reads. Ids
 * stay unique: they are random (`newOrderedId`), and the key includes them. SQLite rebuilds the
 * table without the primary key; PostgreSQL builds the new index concurrently, then drops the
 * primary key's constraint and the old index.
 *
 * A user's billing settings (`billing_accounts`, written at every settlement that spends) become a
 * `WITHOUT ROWID` table on SQLite: one b-tree by `user_id` instead of the rowid table and the key's
 * index.
 *
 * Measured (no checkpoints, 16 callers, 100 users, every call paid from credits; WAL bytes per
 * call): the index change alone saved little once commits are grouped (20.9 → 21.0 KiB: a user's
 * entry lands on that user's page either way); writing a call's `hold` transaction when it settles,
 * beside its spend (wallets.ts), put both on that page in one commit: 18.9 KiB.
 */
const sqlite = `
  CREATE TABLE wallet_transactions_appended (
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount_micros INTEGER NOT NULL,
    grant_id TEXT NOT NULL,
    lease_id TEXT
  );
  INSERT INTO wallet_transactions_appended (id, user_id, at, kind, amount_micros, grant_id, lease_id)
    SELECT id, user_id, at, kind, amount_micros, grant_id, lease_id FROM wallet_transactions ORDER BY at, id;
  DROP TABLE wallet_transactions;
  ALTER TABLE wallet_transactions_appended RENAME TO wallet_transactions;
  CREATE UNIQUE INDEX wallet_transactions_key ON wallet_transactions(user_id, at, id);
  CREATE TABLE billing_accounts_by_user (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    overage_enabled INTEGER NOT NULL,
    monthly_cap_micros INTEGER,
    month TEXT NOT NULL,
    month_spent_micros INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT INTO billing_accounts_by_user (user_id, overage_enabled, monthly_cap_micros, month, month_spent_micros)
    SELECT user_id, overage_enabled, monthly_cap_micros, month, month_spent_micros FROM billing_accounts;
  DROP TABLE billing_accounts;
  ALTER TABLE billing_accounts_by_user RENAME TO billing_accounts;
  `;

// Online (migrations.ts): the new unique index is built while older replicas keep appending, then
// the primary key's constraint (and with it its index) and the old per-user index are dropped.
const postgres = `
  CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS wallet_transactions_key ON wallet_transactions(user_id, at, id);
  ALTER TABLE wallet_transactions DROP CONSTRAINT IF EXISTS wallet_transactions_pkey;
  DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user;
  `;

export const WALLET_MIGRATION = {
  why: "A wallet transaction is one index entry keyed (user_id, at, id) — the order its only list reads — instead of three (the row, the id key, the per-user index); SQLite's billing settings one b-tree by user.",
  sqlite,
  postgres,
  online: true,
};
