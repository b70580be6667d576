import type postgres from "postgres";

/** A fenced connection's check (`sql[FENCE_CHECK]()`): throws the fence's refusal once it is closed. */
export const FENCE_CHECK = Symbol("fence check");

/** Throws if `sql` is a fence that refuses statements now (a connection without a fence never does). */
export function checkFence(sql: postgres.ISql): void {
  (sql as unknown as { [FENCE_CHECK]?: () => void })[FENCE_CHECK]?.();
}

/**
 * A transaction's view of its connection that refuses to send anything once `open()` is false.
 *
 * postgres.js (3.4) keeps handing a transaction's statements to the connection it began on, even
 * after that transaction is over: after the connection closed under it (the database restarted,
 * or ended a session idle in a transaction too long), a statement is written into a null socket
 * (an uncaught TypeError, which ends the process); once the pool has reconnected that connection,
 * it runs on the new session, outside any transaction and without the locks the transaction read
 * its rows under (a lost update). Code that outlives its transaction — a replica that stalled
 * mid-transaction and wakes up — must get an error instead.
 */
export function fence<S extends postgres.ISql>(sql: S, open: () => boolean, refusal: () => Error): S {
  const check = (): void => {
    if (!open()) throw refusal();
  };
  return new Proxy(sql, {
    apply: (target, self, args) => {
      check();
      return Reflect.apply<unknown, unknown[], unknown>(target as unknown as (...a: unknown[]) => unknown, self, args);
    },
    get: (target, key, receiver) => {
      // For statements held back before they are sent (see WriteBatch): refused as a statement would be.
      if (key === FENCE_CHECK) return check;
      const value = Reflect.get(target, key, receiver) as unknown;
      if ((key !== "unsafe" && key !== "file") || typeof value !== "function") return value;
      return (...args: unknown[]) => {
        check();
        return Reflect.apply<unknown, unknown[], unknown>(value as (...a: unknown[]) => unknown, target, args);
      };
    },
  });
}
