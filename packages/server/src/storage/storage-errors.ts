/* What the store throws when the database cannot do the work, or this replica no longer leads (re-exported by store.ts). */

/**
 * Why the database could not do what was asked, as a caller can act on it: it cannot be reached;
 * it did not answer in time; another request held what this one needed (contention); this
 * replica stalled inside a transaction and the database ended it; or the connection broke while
 * the transaction's COMMIT was in flight (outcome_unknown: the one reason after which something
 * may have changed).
 */
export type StorageUnavailableReason =
  | "unreachable"
  | "timeout"
  | "contention"
  | "stalled"
  /** The connection broke while the COMMIT was in flight: the transaction may have committed or not. */
  | "outcome_unknown"
  /** The disk the database is on is full (or nearly). */
  | "disk_full"
  /** The database file was deleted or replaced while the server had it open, or cannot be read as one. */
  | "database_missing"
  /** A write to the database failed for another reason (an I/O error). */
  | "write_failed"
  /** The server is still starting: its state is not restored yet. */
  | "starting";

/**
 * Thrown by adapters when the database cannot do the work now (answered 503 `storage_unavailable`);
 * nothing was changed, unless `reason` is `outcome_unknown` (see `outcomeUnknown`).
 */
export class StorageUnavailableError extends Error {
  readonly code = "storage_unavailable";
  readonly reason: StorageUnavailableReason;
  /** `message` is for the log (it may name the database); the response says only what `reason` means. */
  constructor(message: string, options?: { cause?: unknown; reason?: StorageUnavailableReason }) {
    super(message, options);
    this.name = "StorageUnavailableError";
    this.reason = options?.reason ?? "unreachable";
  }
}

/** Thrown by `Coordination.leaderStager` when this replica no longer holds leadership. */
export class LeadershipLostError extends Error {
  readonly code = "leadership_lost";
  /**
   * The session broke while its COMMIT was in flight: the transaction may have committed or not,
   * and only the database (read by the next leader) knows. Otherwise nothing was committed.
   */
  readonly outcomeUnknown: boolean;
  constructor(message = "This replica no longer leads the pool.", options: { outcomeUnknown?: boolean } = {}) {
    super(message);
    this.name = "LeadershipLostError";
    this.outcomeUnknown = options.outcomeUnknown ?? false;
  }
}

/**
 * The one error for a write whose COMMIT was sent and whose answer was lost (the connection broke,
 * or the leader's session ended, while it was in flight): it may have committed, so its caller is
 * never told that nothing was changed. Whoever loses such an answer — a plain transaction, a
 * follower's group, the leader's group (LeadershipLostError.outcomeUnknown) — answers with this.
 */
export function outcomeUnknown(cause: unknown): StorageUnavailableError {
  return new StorageUnavailableError(
    "The database connection broke while this transaction's COMMIT was in flight; whether it committed is not known.",
    { cause, reason: "outcome_unknown" },
  );
}
