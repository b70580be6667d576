/**
 * Migration 11: every list a bounded range of an index in the list's own order (issue 17). A
 * lease list is newest first by `seq`, a page after the first is the keyset `seq < cursor`, and
 * each filter the API allows has an index that ends in `seq`: none (the primary key), a status
 * (`leases_status`), an app (`leases_app`), an app and a status (`leases_app_status`), a user
 * (`leases_user`), a user and a status (`leases_user_status`). Before, a status filter read every
 * lease of the app, user or pool and sorted them (533 ms at 1.2 M leases for an app's expired ones).
 *
 * `leases_status` makes `leases_live` (status, seq of live leases only) redundant: the live lists
 * (recovery, the earliest end of an identity's live leases) read its queued and active ranges, so
 * the partial index is dropped and the number of lease index entries an admission writes grows by
 * two (app and user with status), not three.
 *
 * Usage records are paged by (ended_at, id): the app's and the user's indexes end in `id` too, so
 * a page of one app's or user's records is read in order from its index rather than sorted.
 *
 * Users and apps are paged by name: their unique name indexes (migration 1) serve.
 */
// SQLite builds them in one transaction; PostgreSQL online (migrations.ts): each index built
// CONCURRENTLY while older replicas keep writing, the new usage indexes under new names before the
// old ones go, so no list is ever without its index.
const sqlite = `
  CREATE INDEX leases_status ON leases(status, seq);
  CREATE INDEX leases_app_status ON leases(app_id, status, seq);
  CREATE INDEX leases_user_status ON leases(identity_id, status, seq) WHERE identity_kind = 'user';
  DROP INDEX leases_live;
  CREATE INDEX usage_user_page ON usage_records(identity_id, ended_at, id) WHERE identity_kind = 'user';
  DROP INDEX usage_user;
  CREATE INDEX usage_app_page ON usage_records(app_id, ended_at, id);
  DROP INDEX usage_app;
  `;

const postgres = `
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_status ON leases(status, seq);
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_app_status ON leases(app_id, status, seq);
  CREATE INDEX CONCURRENTLY IF NOT EXISTS leases_user_status ON leases(identity_id, status, seq) WHERE identity_kind = 'user';
  DROP INDEX CONCURRENTLY IF EXISTS leases_live;
  CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_user_page ON usage_records(identity_id, ended_at, id) WHERE identity_kind = 'user';
  DROP INDEX CONCURRENTLY IF EXISTS usage_user;
  CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_app_page ON usage_records(app_id, ended_at, id);
  DROP INDEX CONCURRENTLY IF EXISTS usage_app;
  `;

export const LISTS_MIGRATION = {
  why: "Keyset pages on every list, each a bounded range of an index in its order: leases by status, by app and status, by user and status (leases_live, now redundant, dropped); usage records of an app or user in (ended_at, id) order.",
  sqlite,
  postgres,
  online: true,
};
