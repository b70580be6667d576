import { Readable } from "node:stream";
import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import { fail } from "@gpupool/core";
import type { FastifyInstance } from "fastify";
import type { UsageFilter, UsageGroupBy, UsageRecordRow } from "../storage/store.js";
import { actorOf, authenticate, only } from "./auth.js";
import { grantJson, overageJson, usageJson, walletJson } from "./billing-views.js";
import type { RouteContext } from "./context.js";
import { meJson } from "./dashboard-views.js";
import { usageCsvHeader, usageCsvRow, usageSummaryJson } from "./usage-views.js";

const DAY_MS = 86_400_000;
/** How many records one statement reads while streaming an export. */
const EXPORT_PAGE = 1000;

/** Billing (SPEC §9) and the usage ledger (SPEC §10). */
export function billingRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const admin = only(ctx, "admin");
  const billing = ctx.billing;

  app.get("/v1/me", async (req): Promise<wire.Me> => {
    const caller = await authenticate(ctx, req, ["user"]);
    const { user, quota } = await billing.me(caller.user.id);
    return meJson(user, quota);
  });

  app.get<{ Querystring: { limit?: string } }>(
    "/v1/me/wallet",
    { schema: requestSchemas("getMyWallet") },
    async (req): Promise<wire.Wallet> => {
      const caller = await authenticate(ctx, req, ["user"]);
      const w = await billing.wallet(caller.user.id, Number(req.query.limit ?? 100));
      return walletJson(w.userId, w.grants, w.transactions, w.now, billing.currency);
    },
  );

  app.patch<{ Body: wire.BillingSettingsRequest }>(
    "/v1/me/billing",
    { schema: requestSchemas("updateMyBilling") },
    async (req): Promise<wire.BillingSettings> => {
      const caller = await authenticate(ctx, req, ["user"]);
      const b = req.body;
      if (b.overage === undefined && b.monthly_cap === undefined)
        fail("invalid_request", "Name `overage` or `monthly_cap` (or both). Nothing was changed.", {
          errors: [{ field: "body", message: "must name overage or monthly_cap" }],
        });
      const view = await billing.setBilling(caller.user.id, {
        ...(b.overage === undefined ? {} : { overage: b.overage }),
        ...(b.monthly_cap === undefined ? {} : { monthlyCap: b.monthly_cap }),
      });
      return { overage: overageJson(view, billing.currency) };
    },
  );

  app.post<{ Params: { id: string }; Body: wire.CreditGrantRequest }>(
    "/v1/admin/users/:id/credits",
    { ...admin, schema: requestSchemas("grantCredits") },
    async (req, reply) => {
      const b = req.body;
      const { grant, created } = await billing.grantCredits(
        req.params.id,
        {
          amount: b.amount,
          category: b.category,
          expiresAt: b.expires_at == null ? null : Date.parse(b.expires_at),
          priority: b.priority ?? 10,
          source: b.source ?? null,
          idempotencyKey: b.idempotency_key,
        },
        actorOf(req),
      );
      return reply.code(created ? 201 : 200).send(grantJson(grant, billing.currency));
    },
  );

  app.get<{ Params: { id: string }; Querystring: { limit?: string } }>(
    "/v1/admin/users/:id/wallet",
    { ...admin, schema: requestSchemas("getUserWallet") },
    async (req): Promise<wire.Wallet> => {
      const w = await billing.wallet(req.params.id, Number(req.query.limit ?? 100));
      return walletJson(w.userId, w.grants, w.transactions, w.now, billing.currency);
    },
  );

  app.get<{ Querystring: wire.UsageQuery }>(
    "/v1/usage",
    { schema: requestSchemas("listUsage") },
    async (req, reply) => {
      const caller = await authenticate(ctx, req, ["user", "admin"]);
      const q = req.query;
      const filter = await usageFilter(ctx, caller, q);
      const format = q.format ?? "json";
      const order = q.order ?? "asc";
      const names = await billing.appNames();
      if (format === "json") {
        const limit = Number(q.limit ?? 100);
        const records = await billing.usagePage(filter, decodeCursor(q.cursor, order), limit + 1, order);
        const page = records.slice(0, limit);
        const last = page[page.length - 1];
        const answer: wire.UsagePage = {
          records: page.map((r) => usageJson(r, billing.currency, names)),
          next_cursor: records.length > limit && last !== undefined ? encodeCursor(last, order) : null,
        };
        return answer;
      }
      const currency = billing.currency;
      async function* lines(): AsyncGenerator<string> {
        if (format === "csv") yield usageCsvHeader();
        let after = decodeCursor(q.cursor, order);
        for (;;) {
          const records = await billing.usagePage(filter, after, EXPORT_PAGE, order);
          for (const r of records)
            yield format === "csv"
              ? usageCsvRow(usageJson(r, currency, names))
              : `${JSON.stringify(usageJson(r, currency, names))}\n`;
          const last = records[records.length - 1];
          if (records.length < EXPORT_PAGE || last === undefined) return;
          after = { endedAt: last.endedAt, id: last.id };
        }
      }
      return reply
        .type(format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson")
        .header("Content-Disposition", `attachment; filename="gpupool-usage.${format === "csv" ? "csv" : "ndjson"}"`)
        .send(Readable.from(lines()));
    },
  );

  app.get<{ Querystring: wire.UsageSummaryQuery }>(
    "/v1/usage/summary",
    { schema: requestSchemas("usageSummary") },
    async (req): Promise<wire.UsageSummary> => {
      const caller = await authenticate(ctx, req, ["user", "admin"]);
      const filter = await usageFilter(ctx, caller, req.query);
      const groupBy: UsageGroupBy = req.query.group_by ?? "day";
      const totals = await billing.usageSummary(filter, groupBy);
      const names = groupBy === "app" ? await billing.appNames() : new Map<string, string>();
      return usageSummaryJson(filter, groupBy, totals, billing.currency, names);
    },
  );
}

async function usageFilter(
  ctx: RouteContext,
  caller: { kind: "admin" } | { kind: "user"; user: { id: string } },
  q: {
    from?: string | undefined;
    to?: string | undefined;
    app?: string | undefined;
    identity?: string | undefined;
    status?: string | undefined;
  },
): Promise<UsageFilter> {
  const to = q.to === undefined ? ctx.billing.now() : Date.parse(q.to);
  const from = q.from === undefined ? to - 30 * DAY_MS : Date.parse(q.from);
  if (from >= to)
    fail("invalid_request", "`from` must be before `to`. Nothing was read.", {
      errors: [{ field: "from", message: "must be before to" }],
    });
  const identity = q.identity === undefined ? undefined : splitIdentity(q.identity);
  const scope = await ctx.billing.scope(
    caller.kind === "admin" ? { kind: "admin" } : { kind: "user", userId: caller.user.id },
  );
  return {
    scope,
    from,
    to,
    ...(q.app === undefined ? {} : { appId: q.app }),
    ...(identity === undefined ? {} : { identity }),
    ...(q.status === undefined ? {} : { status: q.status }),
  };
}

function splitIdentity(text: string): { kind: "user" | "ip" | "app"; id: string } {
  const i = text.indexOf(":");
  return { kind: text.slice(0, i) as "user" | "ip" | "app", id: text.slice(i + 1) };
}

/** The last record of a page; a newest-first cursor says so, so it cannot be used with the other order. */
function encodeCursor(r: UsageRecordRow, order: "asc" | "desc"): string {
  const key = order === "desc" ? [r.endedAt, r.id, "desc"] : [r.endedAt, r.id];
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

function decodeCursor(cursor: string | undefined, order: "asc" | "desc"): { endedAt: number; id: string } | null {
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
