import { StorageUnavailableError } from "../store.js";

// Node's socket errors and postgres.js's own connection errors.
const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN",
  "CONNECTION_CLOSED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT",
]);
// SQLSTATEs that mean the session or the server went away or would not take us.
const SERVER_GONE = new Set(["57P01", "57P02", "57P03", "53300", "53400"]);

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "";
}

/** True when the database could not be reached or dropped the connection (as opposed to refusing a statement). */
export function isConnectionError(err: unknown): boolean {
  const code = codeOf(err);
  return NETWORK_CODES.has(code) || SERVER_GONE.has(code) || code.startsWith("08");
}

/**
 * The error a caller of the store sees: connection failures and statement timeouts become a
 * `StorageUnavailableError` whose message says what happened without naming the server's address
 * or credentials (the driver's error stays as `cause`, for the log); anything else is returned
 * unchanged (constraint violations, deadlocks, bugs).
 */
export function storageError(err: unknown): unknown {
  if (err instanceof StorageUnavailableError) return err;
  const code = codeOf(err);
  if (isConnectionError(err)) {
    return new StorageUnavailableError(`The PostgreSQL database cannot be reached (${code}); retry once it is back.`, { cause: err });
  }
  if (code === "57014") {
    return new StorageUnavailableError("The PostgreSQL database did not answer in time (statement timeout or cancelled); retry shortly.", { cause: err });
  }
  return err;
}
