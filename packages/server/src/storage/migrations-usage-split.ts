/**
 * Migration 14: a user's usage records in one index each, never two (issue 15's credits path).
 * Migration 13 indexed the records that carry a call's wallet transactions in a partial index of
 * their own (`usage_user_wallet`, the wallet's list), beside `usage_user_page`, which indexed all
 * of a user's records: a call paid from credits wrote an entry in both, in the user's part of each
 * (two leaf pages per user per commit where a call paid from quota writes one). Now the two are
 * disjoint: `usage_user_plain` has the records without wallet transactions and `usage_user_wallet`
 * those with, so every record of a user is in exactly one. A list of a user's records reads both
 * ranges and merges them in (ended_at, id) order (`UNION ALL … ORDER BY`, a merge of two ordered
 * index scans on both databases: billing-sql.ts); the wallet's list reads one, as before.
 *
 * Rolling upgrade (PostgreSQL): the new index is built concurrently before the old one is dropped,
 * so a user's list always has an index to read. An older replica still running lists a user's
 * records with one query, which after the drop reads `usage_ended` in the requested range and
 * filters (correct, slower for a small user in a big range) until it is upgraded.
 */
const sqlite = `
  CREATE INDEX usage_user_plain ON usage_records(identity_id, ended_at, id) WHERE (identity_kind = 'user') AND (wallet IS NULL);
  DROP INDEX usage_user_page;
  `;

const postgres = `
  CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_user_plain ON usage_records(identity_id, ended_at, id) WHERE (identity_kind = 'user') AND (wallet IS NULL);
  DROP INDEX CONCURRENTLY IF EXISTS usage_user_page;
  `;

export const USAGE_SPLIT_MIGRATION = {
  why: "A user's usage records in one per-user index each: usage_user_plain (no wallet transactions) and usage_user_wallet are disjoint, so a call paid from credits writes one per-user index entry, as one paid from quota does; a user's lists merge the two.",
  sqlite,
  postgres,
  online: true,
};
