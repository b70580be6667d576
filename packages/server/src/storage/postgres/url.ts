/** What the adapter reads from a `postgres://` storage URL; the rest goes to the driver as is. */
export interface PostgresUrl {
  /** The URL without the adapter's own query parameters (it may hold a password: never log it). */
  readonly connection: string;
  /** Where the tables live (`?schema=`, default `public`); created if missing. */
  readonly schema: string;
  /**
   * Pool size (`?max=`, default DEFAULT_POOL_MAX). A replica opens this many connections and two
   * more (connections.ts `CONNECTIONS_BESIDE_POOL`).
   */
  readonly max: number;
  /** Seconds to wait for a connection (`?connect_timeout=`, default 5). */
  readonly connectTimeoutS: number;
  /** Longest a statement may run, in ms (`?statement_timeout=`, default 5000). */
  readonly statementTimeoutMs: number;
  /**
   * Longest a session may sit idle inside a transaction before PostgreSQL ends it, in ms
   * (`?idle_in_transaction_session_timeout=`, default 2000; 0: never). A replica frozen mid-transaction
   * (SIGSTOP, a long GC pause, a blocked event loop) then loses its session and its locks instead of
   * holding an identity's ledger for every other replica until it wakes.
   */
  readonly idleInTransactionTimeoutMs: number;
  /**
   * Longest a statement waits for a lock, in ms (`?lock_timeout=`, default 3000; 0: no limit but
   * statement_timeout). Longer than the idle timeout, so a request queued behind a frozen replica's
   * lock outlives that replica's session and goes on.
   */
  readonly lockTimeoutMs: number;
  /**
   * How long the leader's lease lasts unrenewed, in ms (`?leader_lease=`, default 5000; renewed
   * every fifth of it): a leader that froze is replaced about this long after its last renewal.
   */
  readonly leaderLeaseMs: number;
  /** `host:port/database`, without user or password: safe for messages and logs. */
  readonly display: string;
}

/**
 * The default pool size per replica: 10 replicas × (6 + 2) = 80 connections, within the 97 that
 * PostgreSQL's defaults leave to roles that are not superusers (max_connections 100 less
 * superuser_reserved_connections 3), with 17 to spare for `gpupool migrate`, psql, monitoring, and a
 * leader's session being replaced. 10 per replica (12 in all) put 10 replicas at 120, over the limit.
 */
export const DEFAULT_POOL_MAX = 6;

// Plain lower-case identifiers only: the name is used in search_path, in channel names and in DDL.
const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/;

function int(
  params: URLSearchParams,
  name: string,
  fallback: number,
  min: number,
  max: number,
  problems: string[],
): number {
  const raw = params.get(name);
  params.delete(name);
  if (raw === null) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    problems.push(`?${name}= must be an integer from ${min} to ${max}`);
    return fallback;
  }
  return value;
}

/** Parses a storage URL; throws one Error naming every problem (never echoing the URL, which may hold a password). */
export function parsePostgresUrl(url: string): PostgresUrl {
  const problems: string[] = [];
  if (!/^postgres(ql)?:\/\//.test(url))
    throw new Error('a PostgreSQL storage URL starts with "postgres://" or "postgresql://"');
  const q = url.indexOf("?");
  const base = q === -1 ? url : url.slice(0, q);
  const params = new URLSearchParams(q === -1 ? "" : url.slice(q + 1));
  // The host list ("h1:5432,h2:5432" is legal for the driver, not for URL), as the driver finds it.
  const authority = base.slice(base.indexOf("://") + 3).split("/")[0] ?? "";
  const hosts = authority.slice(authority.lastIndexOf("@") + 1);
  const display = `${hosts}${base.slice(base.indexOf("://") + 3 + authority.length)}`;
  try {
    new URL(base.replace(hosts, hosts.split(",")[0] ?? ""));
  } catch {
    problems.push("is not a valid URL (percent-encode special characters in the user name and password)");
  }
  const schema = params.get("schema") ?? "public";
  params.delete("schema");
  if (!SCHEMA.test(schema)) problems.push("?schema= must be a lower-case identifier (letters, digits, _; at most 63)");
  const max = int(params, "max", DEFAULT_POOL_MAX, 1, 1_000, problems);
  const connectTimeoutS = int(params, "connect_timeout", 5, 1, 600, problems);
  const statementTimeoutMs = int(params, "statement_timeout", 5_000, 0, 3_600_000, problems);
  const idleInTransactionTimeoutMs = int(params, "idle_in_transaction_session_timeout", 2_000, 0, 3_600_000, problems);
  const lockTimeoutMs = int(params, "lock_timeout", 3_000, 0, 3_600_000, problems);
  const leaderLeaseMs = int(params, "leader_lease", 5_000, 500, 600_000, problems);
  if (problems.length > 0) throw new Error(`storage.url: ${problems.join("; ")}`);
  const rest = params.toString();
  return {
    connection: rest ? `${base}?${rest}` : base,
    schema,
    max,
    connectTimeoutS,
    statementTimeoutMs,
    idleInTransactionTimeoutMs,
    lockTimeoutMs,
    leaderLeaseMs,
    display,
  };
}
