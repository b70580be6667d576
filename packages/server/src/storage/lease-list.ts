import type { LeaseFilter } from "./store.js";
import type { SqlValue } from "./table.js";

type IdentityShape = "none" | "user" | "other";

function shape(app: boolean, identity: IdentityShape, status: boolean, before: boolean): string {
  return `${app ? "a" : "-"}${identity}${status ? "s" : "-"}${before ? "b" : "-"}`;
}

/**
 * `leases.list` as both adapters run it: one statement per shape of filter (app or not; no
 * identity, a user, another kind; status or not; a page after the first or not), built once from
 * `selectFrom` (`SELECT <columns> FROM leases`) and the adapter's placeholder for the n-th
 * parameter (1-based). Newest first by `seq`; a later page is the keyset `seq < before`, so every
 * page is one bounded range of an index whose order is the answer's (migration 10): the primary
 * key, `leases_status`, `leases_app` / `leases_app_status`, `leases_user` / `leases_user_status`.
 * A user is spelled out so the database can use the partial indexes of users' leases.
 */
export function leaseListStatements(
  selectFrom: string,
  placeholder: (n: number) => string,
): (f: LeaseFilter) => { text: string; params: SqlValue[] } {
  const texts = new Map<string, string>();
  for (const app of [false, true]) {
    for (const identity of ["none", "user", "other"] as const) {
      for (const status of [false, true]) {
        for (const before of [false, true]) {
          let n = 0;
          const next = (): string => placeholder(++n);
          const where: string[] = [];
          if (app) where.push(`app_id = ${next()}`);
          if (identity === "user") where.push(`identity_kind = 'user' AND identity_id = ${next()}`);
          if (identity === "other") where.push(`identity_kind = ${next()} AND identity_id = ${next()}`);
          if (status) where.push(`status = ${next()}`);
          if (before) where.push(`seq < ${next()}`);
          const filter = where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "";
          texts.set(shape(app, identity, status, before), `${selectFrom}${filter} ORDER BY seq DESC LIMIT ${next()}`);
        }
      }
    }
  }
  return (f) => {
    const params: SqlValue[] = [];
    if (f.appId !== undefined) params.push(f.appId);
    const identity: IdentityShape = f.identity === undefined ? "none" : f.identity.kind === "user" ? "user" : "other";
    if (f.identity !== undefined) {
      if (identity === "other") params.push(f.identity.kind);
      params.push(f.identity.id);
    }
    if (f.status !== undefined) params.push(f.status);
    if (f.before !== undefined) params.push(f.before);
    params.push(f.limit);
    const text = texts.get(shape(f.appId !== undefined, identity, f.status !== undefined, f.before !== undefined));
    if (text === undefined) throw new Error("leases.list: no statement for this filter");
    return { text, params };
  };
}
