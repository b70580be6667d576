/**
 * Migration 13: a call's wallet transactions live on its usage record (issue 15's credits path).
 * A call paid from credits used to append two or three `wallet_transactions` rows when it settled
 * (its hold, and the spend and release it ended in), each with an entry in the user's part of the
 * `(user_id, at, id)` index; they are now one JSON column on the usage record the same
 * transaction writes anyway, and a user's wallet lists them through a partial index that has an
 * entry only for records that carry any (a user's quota-paid calls add nothing to it). The rows
 * written before stay where they are, and the wallet lists both. Grants, admin credits and grant
 * expiries stay `wallet_transactions` rows.
 *
 * Rolling upgrade (PostgreSQL): the column is nullable (no rewrite) and the index is built
 * concurrently; an older replica keeps writing rows, which this version lists too, but it does not
 * list the entries this version writes on usage records until it is upgraded.
 */
const sqlite = `
  ALTER TABLE usage_records ADD COLUMN wallet TEXT;
  CREATE INDEX usage_user_wallet ON usage_records(identity_id, ended_at, id) WHERE (identity_kind = 'user') AND (wallet IS NOT NULL);
  `;

const postgres = `
  ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS wallet TEXT;
  CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_user_wallet ON usage_records(identity_id, ended_at, id) WHERE (identity_kind = 'user') AND (wallet IS NOT NULL);
  `;

export const USAGE_WALLET_MIGRATION = {
  why: "A call's wallet transactions (hold, spend, release, expire) are a column of its usage record, listed through a partial per-user index, instead of two or three rows of their own.",
  sqlite,
  postgres,
  online: true,
};
