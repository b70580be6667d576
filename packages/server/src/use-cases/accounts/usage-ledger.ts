import { fail } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type {
  Store,
  UsageFilter,
  UsageGroupBy,
  UsageGroupRow,
  UsageRecordRow,
  UsageScope,
} from "../../storage/store.js";
import type { RefusalLog } from "./refusals.js";

const DAY_MS = 86_400_000;
/** A range with no `from` covers this much before its end. */
const DEFAULT_RANGE_MS = 30 * DAY_MS;
/** How many records one statement reads while streaming an export. */
const EXPORT_PAGE = 1000;

/** Who asks: the admin sees every record; a user their own and their apps'. */
export type UsageCaller = { readonly kind: "admin" } | { readonly kind: "user"; readonly userId: string };

/** The range and filters of a usage request, as the query names them (ISO times, `kind:id`). */
export interface UsageQuery {
  readonly from?: string | undefined;
  readonly to?: string | undefined;
  readonly app?: string | undefined;
  readonly identity?: string | undefined;
  readonly status?: string | undefined;
}

export type UsageOrder = "asc" | "desc";

/** Every app's name by id: usage records name the apps a user called with these. */
export type AppNames = ReadonlyMap<string, string>;

/**
 * The usage ledger's reads (docs/billing.md): pages, whole-range exports and totals, each for what
 * the caller may see. Records never change once written and a range ends at a fixed time (now, by
 * default), so keyset pages — and an export, which reads page after page — add up to one
 * consistent list however long they take.
 */
export class UsageLedger {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly refusals: RefusalLog | null = null,
  ) {}

  /** One page, and the cursor of the next (null on the last). */
  async page(
    caller: UsageCaller,
    query: UsageQuery,
    page: { readonly cursor: string | undefined; readonly limit: number; readonly order: UsageOrder },
  ): Promise<{ records: UsageRecordRow[]; nextCursor: string | null; appNames: AppNames }> {
    const { filter, appNames } = await this.filter(caller, query);
    const after = decodeCursor(page.cursor, page.order);
    const records = await this.store.read((tx) => tx.usage.list(filter, after, page.limit + 1, page.order));
    const shown = records.slice(0, page.limit);
    const last = shown[shown.length - 1];
    const more = records.length > page.limit && last !== undefined;
    return { records: shown, nextCursor: more ? encodeCursor(last, page.order) : null, appNames };
  }

  /**
   * The whole range from `cursor` on, read a page at a time as the caller consumes it. What the
   * request gets wrong (range, cursor) is refused here, before anything is streamed.
   */
  async export(
    caller: UsageCaller,
    query: UsageQuery,
    from: { readonly cursor: string | undefined; readonly order: UsageOrder },
  ): Promise<{ records: AsyncIterable<UsageRecordRow>; appNames: AppNames }> {
    const { filter, appNames } = await this.filter(caller, query);
    const start = decodeCursor(from.cursor, from.order);
    const store = this.store;
    async function* records(): AsyncGenerator<UsageRecordRow> {
      let after = start;
      for (;;) {
        const page = await store.read((tx) => tx.usage.list(filter, after, EXPORT_PAGE, from.order));
        yield* page;
        const last = page[page.length - 1];
        if (page.length < EXPORT_PAGE || last === undefined) return;
        after = { endedAt: last.endedAt, id: last.id };
      }
    }
    return { records: records(), appNames };
  }

  /** Totals by day, app, identity or tier, with the refusals the pool counted. */
  async summary(
    caller: UsageCaller,
    query: UsageQuery,
    groupBy: UsageGroupBy,
  ): Promise<{
    filter: UsageFilter;
    groups: UsageGroupRow[];
    refusals: { key: string; code: string; count: number }[];
    appNames: AppNames;
  }> {
    const { filter, appNames } = await this.filter(caller, query);
    // What this replica counted so far is written first, so the summary includes it.
    await this.refusals?.flush();
    const totals = await this.store.read(async (tx) => ({
      groups: await tx.usage.summary(filter, groupBy),
      refusals: await tx.usage.refusals(filter, groupBy),
    }));
    return { filter, ...totals, appNames: groupBy === "app" ? appNames : new Map<string, string>() };
  }

  /**
   * The records a caller may see within the query's range (default: the 30 days before now), and
   * every app's name by id — only the name, which the app's own pages show its visitors; nothing
   * else of an app the user does not own. The apps are read once for both.
   */
  private async filter(caller: UsageCaller, q: UsageQuery): Promise<{ filter: UsageFilter; appNames: AppNames }> {
    const to = q.to === undefined ? this.clock.now() : Date.parse(q.to);
    const from = q.from === undefined ? to - DEFAULT_RANGE_MS : Date.parse(q.from);
    if (from >= to)
      fail("invalid_request", "`from` must be before `to`. Nothing was read.", {
        errors: [{ field: "from", message: "must be before to" }],
      });
    const identity = q.identity === undefined ? undefined : splitIdentity(q.identity);
    const apps = await this.store.read((tx) => tx.apps.list());
    const scope: UsageScope =
      caller.kind === "admin"
        ? { kind: "all" }
        : {
            kind: "user",
            userId: caller.userId,
            appIds: apps.filter((a) => a.ownerId === caller.userId).map((a) => a.id),
          };
    const filter: UsageFilter = {
      scope,
      from,
      to,
      ...(q.app === undefined ? {} : { appId: q.app }),
      ...(identity === undefined ? {} : { identity }),
      ...(q.status === undefined ? {} : { status: q.status }),
    };
    return { filter, appNames: new Map(apps.map((a) => [a.id, a.name])) };
  }
}

function splitIdentity(text: string): { kind: "user" | "ip" | "app"; id: string } {
  const i = text.indexOf(":");
  return { kind: text.slice(0, i) as "user" | "ip" | "app", id: text.slice(i + 1) };
}

/** The last record of a page; a newest-first cursor says so, so it cannot be used with the other order. */
function encodeCursor(r: UsageRecordRow, order: UsageOrder): string {
  const key = order === "desc" ? [r.endedAt, r.id, "desc"] : [r.endedAt, r.id];
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

function decodeCursor(cursor: string | undefined, order: UsageOrder): { endedAt: number; id: string } | null {
  if (cursor === undefined) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
    const ordered = Array.isArray(v) && (order === "desc" ? v.length === 3 && v[2] === "desc" : v.length === 2);
    if (ordered && Number.isSafeInteger(v[0]) && typeof v[1] === "string") return { endedAt: v[0] as number, id: v[1] };
  } catch {
    // fall through
  }
  return fail(
    "invalid_request",
    "`cursor` is not a cursor this server gave out for this `order` (use `next_cursor` as it came, with the same `order`).",
    { errors: [{ field: "cursor", message: "is not a next_cursor of this server for this order" }] },
  );
}
