// The signed-in user's billing and the usage ledger (docs/billing.md): /v1/me, the wallet,
// overage settings, usage records (json pages followed by cursor, or a csv/ndjson export) and totals.
import {
  BillingSettings as WireBillingSettings,
  Me as WireMe,
  UsagePage as WireUsagePage,
  UsageSummary as WireUsageSummary,
  Wallet as WireWallet,
} from "@gpupool/contract";
import type { BillingSettingsRequest } from "@gpupool/contract";
import type {
  BillingChanges,
  Me,
  UsageExport,
  UsageExportFormat,
  UsageGroupBy,
  UsagePage,
  UsageQuery,
  UsageRange,
  UsageRecords,
  UsageSummary,
  Wallet,
} from "./billing-types.js";
import { toMe, toUsagePage, toUsageSummary, toWallet } from "./billing-wire.js";
import type { Transport } from "./transport.js";
import type { LeaseStatus, Overage } from "./types.js";
import { toOverage } from "./wire.js";

/** What the client offers about money and usage; part of `GpupoolClient`. */
export interface BillingMethods {
  /** The signed-in user (user token): quota now, credits, and whether overage engages (and if not, why). */
  me(options?: { readonly signal?: AbortSignal | undefined }): Promise<Me>;
  /** The user's wallet: grants in spending order and the latest `limit` transactions (1–500, server default 100). */
  wallet(options?: { readonly limit?: number | undefined; readonly signal?: AbortSignal | undefined }): Promise<Wallet>;
  /**
   * Turns overage on or off and sets the monthly cap (`"5.00"`; null: the operator's default).
   * Resolves with the new overage state. Throws `OverageNotAvailableError` where it is not offered.
   */
  setBilling(changes: BillingChanges): Promise<Overage>;
  /**
   * Usage records the credential may see (a user's own, those of the apps they own; the admin
   * token: all), oldest first, fetched a page at a time as they are iterated:
   * `for await (const record of client.usage({ from }))`, or `.pages()` for the pages.
   */
  usage(query?: UsageQuery): UsageRecords;
  /** One page of usage records; pass the previous page's `nextCursor` as `cursor`. */
  usagePage(query?: UsageQuery & { readonly cursor?: string | undefined }): Promise<UsagePage>;
  /** Totals (calls, GPU seconds held and charged, overage, money, refusals by code) by day, app, identity or tier. */
  usageSummary(query?: UsageRange & { readonly groupBy?: UsageGroupBy | undefined }): Promise<UsageSummary>;
  /** The whole range as CSV or NDJSON, streamed as the server writes it. */
  usageExport(
    format: UsageExportFormat,
    query?: UsageRange & { readonly status?: LeaseStatus | undefined },
  ): Promise<UsageExport>;
}

const iso = (value: Date | string | undefined): string | undefined =>
  value instanceof Date ? value.toISOString() : value;

function rangeQuery(q: UsageRange): Record<string, string | undefined> {
  return { from: iso(q.from), to: iso(q.to), app: q.app, identity: q.identity };
}

/**
 * The billing calls, authenticated like the client's other calls, or with the admin token when
 * the client has one and no user token or app key (usage is then the whole pool's).
 */
export function billingMethods(transport: Transport, auth: "client" | "admin"): BillingMethods {
  const usagePage: BillingMethods["usagePage"] = async (query = {}) =>
    toUsagePage(
      await transport.json(
        {
          method: "GET",
          path: "/v1/usage",
          auth,
          query: {
            ...rangeQuery(query),
            status: query.status,
            limit: query.limit,
            order: query.order,
            cursor: query.cursor,
            format: "json",
          },
          signal: query.signal,
        },
        WireUsagePage,
      ),
    );

  async function* pages(query: UsageQuery): AsyncGenerator<UsagePage> {
    let cursor: string | undefined;
    for (;;) {
      const page = await usagePage({ ...query, cursor });
      yield page;
      if (page.nextCursor === null || page.nextCursor === cursor) return;
      cursor = page.nextCursor;
    }
  }

  return {
    async me(options = {}) {
      return toMe(await transport.json({ method: "GET", path: "/v1/me", auth, signal: options.signal }, WireMe));
    },
    async wallet(options = {}) {
      return toWallet(
        await transport.json(
          { method: "GET", path: "/v1/me/wallet", auth, query: { limit: options.limit }, signal: options.signal },
          WireWallet,
        ),
      );
    },
    async setBilling(changes) {
      const body: BillingSettingsRequest = {
        ...(changes.overage !== undefined ? { overage: changes.overage } : {}),
        ...(changes.monthlyCap !== undefined ? { monthly_cap: changes.monthlyCap } : {}),
      };
      const answer = await transport.json({ method: "PATCH", path: "/v1/me/billing", auth, body }, WireBillingSettings);
      return toOverage(answer.overage);
    },
    usage(query = {}) {
      return {
        pages: () => pages(query),
        async *[Symbol.asyncIterator]() {
          for await (const page of pages(query)) yield* page.records;
        },
      };
    },
    usagePage,
    async usageSummary(query = {}) {
      return toUsageSummary(
        await transport.json(
          {
            method: "GET",
            path: "/v1/usage/summary",
            auth,
            query: { ...rangeQuery(query), group_by: query.groupBy },
            signal: query.signal,
          },
          WireUsageSummary,
        ),
      );
    },
    async usageExport(format, query = {}) {
      const accept = format === "csv" ? "text/csv" : "application/x-ndjson";
      const { body, contentType } = await transport.stream(
        {
          method: "GET",
          path: "/v1/usage",
          auth,
          query: { ...rangeQuery(query), status: query.status, format },
          signal: query.signal,
        },
        accept,
      );
      let used = false;
      return {
        format,
        contentType,
        body,
        async text() {
          if (used) throw new TypeError("usageExport: the body was already read.");
          used = true;
          return new Response(body).text();
        },
      };
    },
  };
}
