import type { LedgerState } from "@gpupool/core";
import type postgres from "postgres";
import type { Row } from "../table.js";
import { LEASES, LEDGERS } from "../tables.js";

/** What a waiting leader transaction locks first (Stager.expect): its identity's ledger ("kind:id"), or a lease. */
export type ReadHint = { readonly ledger: string } | { readonly lease: string };

/** The most keys one read-ahead statement takes (a group holds at most 64 members). */
const MAX_KEYS = 64;

/** The ledger columns, as `g_<column>` beside a lease's in one answer. */
const LEDGER_COLUMNS = LEDGERS.selectList.split(", ");

/**
 * The read-ahead in **one** statement (`$1` the ledgers' lock space, `$2` identities, `$3` lease
 * ids, each sorted and one a line — a key with a line break in it is a wrong hint, which is harmless): the leases' identities read (unlocked: a lease's identity never changes); every
 * identity's advisory lock **tried**, in sorted order, in a materialized query; then, of the
 * identities whose lock was got, the ledgers and the leases locked `FOR UPDATE SKIP LOCKED`. One
 * row per identity (per lease of it, if several), `k_ok` whether its lock was got, the ledger as
 * `g_…` (`g_found`), the lease's columns when it was locked.
 *
 * Nothing in it ever waits, so it cannot take part in a deadlock or hit `lock_timeout`: a lock
 * another transaction holds is not got (`k_ok` false), a row another transaction locked is skipped
 * (only a transaction outside the lock order — retention's deletes — locks one without its
 * identity's lock), and either is left to its member, which reads it as it would have (waiting).
 * A row's lock still comes after its identity's: a row passes the filter only once its identity's
 * row of `k` — whose lock attempt is made as that row is produced — was. `FOR UPDATE` returns a
 * row's newest committed version although the statement's snapshot predates the locks; only a row
 * inserted since (an identity's first ledger) is missed, so a ledger not found is not remembered
 * and its member reads it again.
 */
export const READ_AHEAD =
  "WITH h AS (SELECT identity_kind || ':' || identity_id AS i FROM leases WHERE id = ANY(string_to_array($3, E'\\n'))), " +
  "k AS MATERIALIZED (SELECT i AS k_identity, pg_try_advisory_xact_lock($1::int4, hashtext(i)) AS k_ok " +
  "FROM (SELECT i FROM h UNION SELECT unnest(string_to_array($2, E'\\n')) ORDER BY 1) AS s), " +
  `g AS (SELECT identity AS g_identity, true AS g_found, ${LEDGER_COLUMNS.map((c) => `${c} AS g_${c}`).join(", ")} ` +
  "FROM ledgers WHERE identity IN (SELECT k_identity FROM k WHERE k_ok) FOR UPDATE SKIP LOCKED), " +
  `l AS (SELECT ${LEASES.selectList}, identity_kind || ':' || identity_id AS l_identity FROM leases ` +
  "WHERE id = ANY(string_to_array($3, E'\\n')) AND identity_kind || ':' || identity_id IN (SELECT k_identity FROM k WHERE k_ok) " +
  "FOR UPDATE SKIP LOCKED) " +
  "SELECT k.k_identity, k.k_ok, g.*, l.* FROM k LEFT JOIN g ON g.g_identity = k.k_identity " +
  "LEFT JOIN l ON l.l_identity = k.k_identity";

/** A lease and its identity's ledger as read ahead: the shape of lockedLeaseWithLedger's answer. */
export interface LeaseAhead {
  readonly lease: Row;
  /** Null: not found (the member reads it again under the lock its group holds). */
  readonly ledger: Row | null;
}

/** How a leader group reads ahead: what waits to join it, and the statement (with the transaction's lock space). */
export interface ReadAheadSource {
  readonly upcoming: () => Iterable<ReadHint>;
  readonly query: (sql: postgres.ISql, ledgers: string[], leases: string[]) => postgres.PendingQuery<Row[]>;
}

/**
 * What a group's transaction holds and has read, for its members (GroupedTx): the ledgers whose
 * locks it holds, as it sees them; and, on the leader's session, what it read ahead for the
 * transactions waiting to join it (`send`): while they wait for their turn, their first locks and
 * rows (an admission's identity lock and ledger; a release's, a grant's or an end's lease with its
 * identity's lock and ledger) are taken and read in one statement, so a member finds them here
 * instead of waiting a round trip for them, one after another.
 *
 * Locks it took stay the group's until the group ends, whether or not a member uses them (a wrong
 * hint, a member that failed first): a few milliseconds longer than needed on identities nobody in
 * the group touched. A member rolled back to its savepoint forgets everything read ahead (`clear`):
 * its writes to those rows are undone, and the locks, taken before its savepoint, are still held;
 * the members after it read what they need again (as without a read-ahead).
 */
export class ReadAhead {
  /** Ledgers whose locks (advisory and row) the group's transaction holds, as it sees them. */
  readonly ledgers = new Map<string, LedgerState | null>();
  /** Leases read ahead and not yet read by a member (each is taken once: its member changes it next). */
  private readonly leases = new Map<string, LeaseAhead>();
  /** Keys ("g:identity", "l:lease") read ahead (or being read) since the last `clear`: not asked for again. */
  private readonly tried = new Set<string>();
  /** The read-aheads in flight, by key: a member waits for its own instead of reading it again. */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Keys a member wrote since the last `clear`: an answer in flight is older than that write, and not kept. */
  private readonly written = new Set<string>();
  /** Bumped by `clear`: an answer sent before it is not kept. */
  private generation = 0;

  constructor(private readonly source?: ReadAheadSource) {}

  /**
   * Before a member's SAVEPOINT (so the locks are not the member's own, undone if it is rolled
   * back): one statement for the waiting transactions' keys not held, read nor tried yet, not
   * waited for. `failed`: its statement failed, which aborts the group's transaction.
   */
  send(sql: postgres.ISql, failed: (err: unknown) => void): void {
    if (this.source === undefined) return;
    const ledgers: string[] = [];
    const leases: string[] = [];
    for (const hint of this.source.upcoming()) {
      if (ledgers.length + leases.length >= MAX_KEYS) break;
      const key = "ledger" in hint ? `g:${hint.ledger}` : `l:${hint.lease}`;
      if (this.tried.has(key) || ("ledger" in hint && this.ledgers.has(hint.ledger))) continue;
      this.tried.add(key);
      if ("ledger" in hint) ledgers.push(hint.ledger);
      else leases.push(hint.lease);
    }
    if (ledgers.length + leases.length === 0) return;
    const generation = this.generation;
    const done = this.source
      .query(sql, ledgers.sort(), leases.sort())
      .execute()
      .then(
        (rows) => {
          if (generation === this.generation) this.keep(rows);
        },
        (err: unknown) => failed(err),
      );
    const keys = [...ledgers.map((g) => `g:${g}`), ...leases.map((l) => `l:${l}`)];
    for (const key of keys) this.inFlight.set(key, done);
    void done.then(() => {
      for (const key of keys) if (this.inFlight.get(key) === done) this.inFlight.delete(key);
    });
  }

  /** The read-ahead in flight for `key` ("g:<identity>", "l:<lease>"), if any: wait for it, then look. */
  pending(key: string): Promise<void> | undefined {
    return this.inFlight.get(key);
  }

  /** The lease read ahead, if it was (taken: a later read of it goes to the database). */
  takeLease(id: string): LeaseAhead | undefined {
    const ahead = this.leases.get(id);
    if (ahead !== undefined) this.leases.delete(id);
    return ahead;
  }

  /** A member wrote the lease or the ledger (`l:<id>`, `g:<identity>`): an answer in flight for it is stale. */
  wrote(key: string): void {
    this.written.add(key);
    if (key.startsWith("l:")) this.leases.delete(key.slice(2));
  }

  /** A member was rolled back, or the group is over: forget what was read ahead (and answers in flight). */
  clear(): void {
    this.generation++;
    this.ledgers.clear();
    this.leases.clear();
    this.tried.clear();
    this.written.clear();
  }

  /** An answer: only what no member saw or wrote since it was sent is kept (what is there is newer). */
  private keep(rows: readonly Row[]): void {
    for (const row of rows) {
      if (row["k_ok"] !== true) continue;
      const identity = String(row["k_identity"]);
      let ledger: Row | null = null;
      if (row["g_found"] === true) {
        ledger = {};
        for (const c of LEDGER_COLUMNS) ledger[c] = row[`g_${c}`];
        if (!this.ledgers.has(identity) && !this.written.has(`g:${identity}`))
          this.ledgers.set(identity, LEDGERS.decode(ledger));
      }
      const id = row["id"];
      if (typeof id === "string" && !this.leases.has(id) && !this.written.has(`l:${id}`))
        this.leases.set(id, { lease: row, ledger });
    }
  }
}
