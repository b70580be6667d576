import { fail } from "@gpupool/core";

/*
 * The `cursor` of a list page: the keyset of the last item of the page before (a lease's arrival
 * order, a user's or app's name), base64url JSON so that clients treat it as opaque and the
 * server may change what is inside. A cursor this server did not give out is a 400 naming it.
 */

export function encodeCursor(key: string | number): string {
  return Buffer.from(JSON.stringify([key])).toString("base64url");
}

function decoded(cursor: string): unknown {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    return Array.isArray(v) && v.length === 1 ? v[0] : undefined;
  } catch {
    return undefined;
  }
}

function notOurs(): never {
  return fail("invalid_request", "`cursor` is not a cursor this server gave out (use `next_cursor` as it came).", {
    errors: [{ field: "cursor", message: "is not a next_cursor of this server" }],
  });
}

/** A lease page's cursor: the `seq` to list before; null without one. */
export function seqCursor(cursor: string | undefined): number | null {
  if (cursor === undefined) return null;
  const v = decoded(cursor);
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : notOurs();
}

/** A users' or apps' page cursor: the name to list after; null without one. */
export function nameCursor(cursor: string | undefined): string | null {
  if (cursor === undefined) return null;
  const v = decoded(cursor);
  return typeof v === "string" ? v : notOurs();
}
