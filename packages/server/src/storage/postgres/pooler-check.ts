import { isConnectionError } from "./errors.js";
import type { Session, SessionPool } from "./session.js";

/** The server process serving a session right now. */
async function backend(session: Session): Promise<number> {
  const rows = await session.sql.unsafe<{ pid: number }[]>("SELECT pg_backend_pid() AS pid");
  return Number(rows[0]?.pid);
}

/** Whether a session still answers a plain statement. */
function answers(session: Session): Promise<boolean> {
  return backend(session).then(
    () => true,
    () => false,
  );
}

/** Why this pool cannot be used, and what to change. */
function refusal(seen: string): Error {
  return new Error(
    `storage.url: a connection pooler between gpupool and PostgreSQL shares server sessions between transactions (${seen}) — ` +
      "PgBouncer's pool_mode = transaction or statement. gpupool's leader holds a session-level lock for as long as it " +
      "leads and every replica LISTENs on its session, so through such a pooler several replicas would lead at once and " +
      "notifications would be lost. Use pool_mode = session for gpupool's database, or connect to PostgreSQL directly " +
      "(docs/upgrades.md, PgBouncer).",
  );
}

/** Why the leader's session cannot be used, and what to change. */
function leaderRefusal(err: unknown): Error {
  return new Error(
    `storage.url: the leader's session cannot connect (${String((err as Error).message)}); it sets tcp_keepalives_idle, ` +
      "tcp_keepalives_interval and tcp_keepalives_count as startup parameters. Behind PgBouncer, add them to " +
      "ignore_startup_parameters and set PgBouncer's tcp_keepalive, tcp_keepidle, tcp_keepintvl and tcp_keepcnt " +
      "instead (docs/upgrades.md, PgBouncer).",
  );
}

/**
 * Refuses to start where leadership cannot work, checked once at start with a session of the pool
 * and a new leader session (never two of the pool's: its size may be 1):
 * - the leader session must connect: it asks for server-side keepalives (startup parameters a
 *   pooler may refuse), and a replica whose leader session never connects would serve without
 *   ever leading — saying nothing;
 * - sessions must keep their server process, which a pooler in transaction or statement mode does
 *   not: the pool's session asks which server process serves it; the leader session opens a
 *   transaction and asks the same; the pool's asks again while that transaction is open.
 *   Connected directly (or through a pooler in session mode) the two differ and the first does not
 *   change. A pooler in transaction mode hands the pool session's server process, free between
 *   its statements, to the transaction (PgBouncer reuses the most recently freed one first), or
 *   else moves the pool's session to another; statement mode refuses the transaction.
 */
export async function checkSessions(pool: SessionPool, openLeaderSession: () => Session): Promise<void> {
  const leader = openLeaderSession();
  try {
    try {
      await backend(leader);
    } catch (err) {
      throw leaderRefusal(err);
    }
    await pool.run(async (first) => {
      const before = await backend(first);
      try {
        await leader.sql.unsafe("BEGIN");
      } catch (err) {
        // PgBouncer in statement mode answers a transaction block with an error and closes the
        // connection; the driver may report either. A statement of the pool's still works then.
        const said = /statement pooling/i.test(String((err as Error).message));
        if (said || (isConnectionError(err) && (await answers(first))))
          throw refusal("it would not run a transaction block: the connection was closed at BEGIN");
        throw err;
      }
      const other = await backend(leader);
      const after = await backend(first);
      if (other === before)
        throw refusal(`server process ${before} served one gpupool connection, then another's transaction`);
      if (after !== before)
        throw refusal(`one gpupool connection was served by server process ${before}, then by ${after}`);
    });
  } catch (err) {
    const message = String((err as Error).message);
    // What a statement prepared on a server process the connection no longer has says.
    if (/prepared statement .* does not exist/i.test(message)) throw refusal(message);
    throw err;
  } finally {
    await leader.end();
  }
}
