import { StorageUnavailableError } from "../store.js";

// Node's socket errors and postgres.js's own connection errors.
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);
// SQLSTATEs that mean the session or the server went away or would not take us: admin shutdown,
// crash shutdown, cannot connect now, too many connections, out of memory; and the session ended
// by the server for sitting idle in a transaction (25P03) or idle at all (57P05).
const SERVER_GONE = new Set(["57P01", "57P02", "57P03", "53300", "53400", "25P03", "57P05"]);
/**
 * PostgreSQL broke a deadlock (40P01) or could not serialize (40001) by failing this transaction:
 * it was rolled back whole, and running it again may well succeed.
 */
const SERIALIZATION_FAILURES = new Set(["40P01", "40001"]);

/**
 * A lock that a follower group's member only tries (GroupedTx.nowait) was taken: the member leaves
 * its group and runs alone, as a plain transaction that waits for it.
 */
export class LockBusyError extends Error {
  constructor() {
    super("A lock this transaction tried without waiting was held by another transaction.");
    this.name = "LockBusyError";
  }
}

/** A group member that failed so leaves its group and runs alone: a lock it would wait for, or a deadlock or serialization failure. */
export function leavesGroup(err: unknown): boolean {
  return err instanceof LockBusyError || codeOf(err) === "55P03" || isSerializationFailure(err);
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}

/** True when the database could not be reached or dropped the connection (as opposed to refusing a statement). */
export function isConnectionError(err: unknown): boolean {
  const code = codeOf(err);
  return NETWORK_CODES.has(code) || SERVER_GONE.has(code) || code.startsWith("08");
}

/** True for a deadlock or serialization failure: the transaction was rolled back and may be run again. */
export function isSerializationFailure(err: unknown): boolean {
  return SERIALIZATION_FAILURES.has(codeOf(err));
}

/**
 * The error a caller of the store sees: connection failures, timeouts and lock conflicts become a
 * `StorageUnavailableError` (HTTP 503) whose message says what happened without naming the
 * server's address or credentials (the driver's error stays as `cause`, for the log); anything
 * else is returned unchanged (constraint violations, bugs). `attempts`: how many times the
 * transaction was run before this failure (see PostgresStore.transaction).
 */
export function storageError(err: unknown, attempts = 1): unknown {
  if (err instanceof StorageUnavailableError) return err;
  const code = codeOf(err);
  if (code === "25P03") {
    return new StorageUnavailableError(
      "PostgreSQL ended this replica's session because it sat idle inside a transaction for longer than idle_in_transaction_session_timeout (the process stalled); nothing of that transaction was committed; retry.",
      { cause: err, reason: "stalled" },
    );
  }
  if (isConnectionError(err)) {
    return new StorageUnavailableError(`The PostgreSQL database cannot be reached (${code}); retry once it is back.`, {
      cause: err,
    });
  }
  if (code === "57014") {
    return new StorageUnavailableError(
      "The PostgreSQL database did not answer in time (statement timeout or cancelled); retry shortly.",
      { cause: err, reason: "timeout" },
    );
  }
  if (code === "55P03") {
    return new StorageUnavailableError(
      "Waited longer than lock_timeout for a lock that another transaction (on this or another replica) held on the same identity or lease; nothing was changed; retry shortly.",
      { cause: err, reason: "contention" },
    );
  }
  if (isSerializationFailure(err)) {
    const what =
      code === "40P01"
        ? "broke a deadlock between this transaction and another one"
        : "could not serialize this transaction with another one";
    const tries = attempts > 1 ? `, ${attempts} times in a row` : "";
    return new StorageUnavailableError(
      `PostgreSQL ${what} on the same identity or lease${tries}; this transaction was rolled back and nothing of it was changed; retry shortly.`,
      { cause: err, reason: "contention" },
    );
  }
  return err;
}
