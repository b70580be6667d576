import type postgres from "postgres";

/** Sends `notes` (channel, payload) as notifications of the open transaction, in order, in one statement (none: nothing sent). */
export function notifyAll(sql: postgres.ReservedSql, notes: readonly [string, string][]): Promise<unknown> {
  if (notes.length === 0) return Promise.resolve();
  const [first] = notes;
  if (notes.length === 1 && first !== undefined)
    return sql.unsafe("SELECT pg_notify($1, $2)", first, { prepare: true }).execute();
  // A function scan yields the array's elements in order, and pg_notify runs once per row as it comes.
  return sql
    .unsafe("SELECT pg_notify(n->>0, n->>1) FROM json_array_elements($1::text::json) AS n", [JSON.stringify(notes)], {
      prepare: true,
    })
    .execute();
}
