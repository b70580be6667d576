import { createClient } from "@gpupool/sdk";
import type { LeaseStatus, UsageGroupBy, UsageRange, UsageRecord, UsageSummary } from "@gpupool/sdk";
import { Option } from "commander";
import type { Command } from "commander";
import {
  addJsonOption,
  addTokenOption,
  addUrlOption,
  adminTokenFromEnv,
  connect,
  out,
  printJson,
  UsageError,
} from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderUsageRecords, renderUsageSummary } from "../render-billing.js";
import { parseInstant } from "./when.js";

const STATUSES = ["released", "expired", "cancelled", "failed"] as const;
const GROUPS = ["day", "app", "identity", "tier"] as const;
const FORMATS = ["table", "csv", "ndjson"] as const;

interface UsageFlags extends ClientFlags {
  readonly since?: Date;
  readonly until?: Date;
  readonly app?: string;
  readonly identity?: string;
  readonly status?: LeaseStatus;
  readonly by?: UsageGroupBy;
  readonly format: (typeof FORMATS)[number];
}

/** Writes a stream to stdout as it arrives, waiting when stdout is full. */
async function pipeToStdout(body: ReadableStream<Uint8Array>): Promise<void> {
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once("drain", resolve));
  }
}

const SUMMARY_COLUMNS = ["calls", "granted", "heldS", "chargedS", "quotaS", "overageS", "chargedMicros"] as const;

/** A summary as CSV (one row per group, then `total`) or NDJSON (one object per group, then the total). */
function summaryAs(format: "csv" | "ndjson", s: UsageSummary): string {
  const rows = [...s.groups, { ...s.total, key: "total" }];
  if (format === "ndjson")
    return rows.map((r) => JSON.stringify({ group_by: s.groupBy, currency: s.currency, ...r })).join("\n");
  const header = [
    "key",
    "calls",
    "granted",
    "held_s",
    "charged_s",
    "quota_s",
    "overage_s",
    "charged_micros",
    "currency",
  ];
  const quote = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return [
    header.join(","),
    ...rows.map((r) => [quote(r.key), ...SUMMARY_COLUMNS.map((c) => String(r[c])), s.currency].join(",")),
  ].join("\n");
}

export function registerUsage(program: Command): void {
  const cmd = program
    .command("usage")
    .summary("usage records (one per ended call) and totals; export as csv or ndjson")
    .description(
      "Usage records, one per ended GPU call: how long it held the GPU, the GPU seconds charged, how many " +
        "of them the quota paid and how many credits paid (overage), and the money. A user token sees the " +
        "records charged to that user and those of the apps they own; with no --token, GPUPOOL_ADMIN_TOKEN " +
        "sees all. --by prints totals instead.",
    )
    .option(
      "--since <when>",
      "records that ended at or after: 7d, 12h, 2025-01-01 or an ISO time (default 30d)",
      parseInstant("ago"),
    )
    .option("--until <when>", "records that ended before this (default now)", parseInstant("ago"))
    .option("--app <app>", "only this app's (its id)")
    .option("--identity <kind:id>", "only this identity's, e.g. user:u_abc or ip:203.0.113.7")
    .addOption(new Option("--status <status>", "only calls that ended this way").choices(STATUSES))
    .addOption(new Option("--by <group>", "totals by day (UTC), app, identity or tier").choices(GROUPS))
    .addOption(
      new Option("--format <format>", "table for people; csv or ndjson for tools").choices(FORMATS).default("table"),
    );
  addUrlOption(cmd);
  addTokenOption(cmd);
  addJsonOption(cmd);
  cmd.addHelpText(
    "after",
    `
Examples:
  gpupool usage --since 7d
  gpupool usage --since 2025-01-01 --by day
  gpupool usage --since 30d --format csv > usage.csv      # streamed: the whole range
  GPUPOOL_ADMIN_TOKEN=… gpupool usage --by tier            # the whole pool, as the operator`,
  );
  cmd.action(async (flags: UsageFlags) => {
    const token = flags.token?.trim() || adminTokenFromEnv();
    if (token === undefined) {
      throw new UsageError(
        "gpupool usage needs credentials: pass --token (or set GPUPOOL_TOKEN), or set GPUPOOL_ADMIN_TOKEN to see every record.",
      );
    }
    if (flags.since !== undefined && flags.until !== undefined && flags.since >= flags.until)
      throw new UsageError("--since must be before --until.");
    const range: UsageRange = { from: flags.since, to: flags.until, app: flags.app, identity: flags.identity };
    if (flags.by !== undefined) {
      if (flags.status !== undefined) throw new UsageError("--status lists records; totals (--by) count every status.");
      const { client, lastBody } = connect(flags.url, { token });
      const summary = await client.usageSummary({ ...range, groupBy: flags.by });
      if (flags.json === true) printJson(lastBody());
      else if (flags.format === "table") out(renderUsageSummary(summary));
      else out(summaryAs(flags.format, summary));
      return;
    }
    if (flags.format !== "table") {
      // Straight from the server to stdout, without holding the range in memory.
      const client = createClient({ url: flags.url, token });
      const exported = await client.usageExport(flags.format, { ...range, status: flags.status });
      await pipeToStdout(exported.body);
      return;
    }
    const { client, lastBody } = connect(flags.url, { token });
    const records: UsageRecord[] = [];
    const raw: unknown[] = [];
    for await (const page of client.usage({ ...range, status: flags.status, limit: 1000 }).pages()) {
      records.push(...page.records);
      // --json: the records as the server sent them, every page's in one list.
      const body = lastBody() as { records?: unknown };
      if (Array.isArray(body.records)) raw.push(...(body.records as unknown[]));
    }
    if (flags.json === true) printJson({ records: raw, next_cursor: null });
    else out(renderUsageRecords(records, new Date()));
  });
}
