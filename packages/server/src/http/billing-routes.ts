import { Readable } from "node:stream";
import type * as wire from "@gpupool/contract";
import { requestSchemas } from "@gpupool/contract/openapi";
import type { FastifyInstance } from "fastify";
import type { UsageGroupBy } from "../storage/store.js";
import type { UsageCaller } from "../use-cases/accounts/usage-ledger.js";
import { actorOf, authenticate, only } from "./auth.js";
import { grantJson, overageJson, usageJson, walletJson } from "./billing-views.js";
import type { RouteContext } from "./context.js";
import { meJson } from "./dashboard-views.js";
import { usageCsvHeader, usageCsvRow, usageSummaryJson } from "./usage-views.js";

/** Billing and the usage ledger (docs/billing.md). */
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
          priority: b.priority,
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
      const caller = usageCaller(await authenticate(ctx, req, ["user", "admin"]));
      const q = req.query;
      const format = q.format ?? "json";
      const order = q.order ?? "asc";
      const currency = billing.currency;
      if (format === "json") {
        const page = await ctx.usage.page(caller, q, { cursor: q.cursor, limit: Number(q.limit ?? 100), order });
        const answer: wire.UsagePage = {
          records: page.records.map((r) => usageJson(r, currency, page.appNames)),
          next_cursor: page.nextCursor,
        };
        return answer;
      }
      const { records, appNames } = await ctx.usage.export(caller, q, { cursor: q.cursor, order });
      async function* lines(): AsyncGenerator<string> {
        if (format === "csv") yield usageCsvHeader();
        for await (const r of records) {
          const json = usageJson(r, currency, appNames);
          yield format === "csv" ? usageCsvRow(json) : `${JSON.stringify(json)}\n`;
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
      const caller = usageCaller(await authenticate(ctx, req, ["user", "admin"]));
      const groupBy: UsageGroupBy = req.query.group_by ?? "day";
      const totals = await ctx.usage.summary(caller, req.query, groupBy);
      return usageSummaryJson(totals.filter, groupBy, totals, billing.currency, totals.appNames);
    },
  );
}

function usageCaller(caller: { kind: "admin" } | { kind: "user"; user: { id: string } }): UsageCaller {
  return caller.kind === "admin" ? { kind: "admin" } : { kind: "user", userId: caller.user.id };
}
