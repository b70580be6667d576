import type { Migration, MigrationReport } from "@gpupool/server";
import { Option } from "commander";
import type { Command } from "commander";
import { out, StartError } from "../common.js";
import { parseStorage } from "./server.js";

interface MigrateFlags {
  readonly config?: string;
  readonly storage?: string;
  readonly dryRun?: boolean;
  readonly status?: boolean;
}

/** A version as one line: its number, whether online, and the first sentence of why it exists. */
function describe(m: Migration): string {
  // Up to the first "." or ":" (a colon introduces a list: the line ends before it).
  const why = (/^.*?[.:](?=\s|$)/.exec(m.why)?.[0] ?? m.why).replace(/:$/, "");
  return `${m.version}${m.online === true ? " (online)" : ""}: ${why}`;
}

/** What `gpupool migrate` prints once done (lines for stdout). */
export function renderMigration(report: MigrationReport, storage: string, dryRun: boolean): string[] {
  const lines: string[] = [];
  if (dryRun) {
    lines.push(
      `storage ${storage}: schema at version ${report.from}; this gpupool knows up to version ${report.known}.`,
    );
    if (report.pending.length === 0) lines.push("The schema is current: nothing to apply.");
    else {
      lines.push(`Pending (${report.pending.length}), applied in this order by \`gpupool migrate\`:`);
      for (const m of report.pending) lines.push(`  ${describe(m)}`);
    }
    return lines;
  }
  if (report.applied.length === 0) {
    lines.push(`storage ${storage}: the schema is current (version ${report.from}); nothing to apply.`);
    return lines;
  }
  lines.push(`storage ${storage}: schema now at version ${report.to} (was ${report.from}).`);
  return lines;
}

export function registerMigrate(program: Command): void {
  program
    .command("migrate")
    .summary("apply the storage's missing schema versions, then exit")
    .description(
      "Apply the schema versions (migrations) the configured storage lacks, print each as it is applied, and exit. " +
        "`gpupool server` applies them at start too; run this first when upgrading replicas one by one " +
        "(docs/upgrades.md): it takes turns with replicas that start meanwhile, and online versions " +
        "(e.g. CREATE INDEX CONCURRENTLY) run while older replicas keep serving. " +
        "Refuses a schema newer than this binary knows.",
    )
    .addOption(new Option("--config <file>", "YAML configuration file (its storage.url)").env("GPUPOOL_CONFIG"))
    .option(
      "--storage <url>",
      'storage URL, "sqlite:./gpupool.db" or "postgres://…" (overrides storage.url)',
      parseStorage,
    )
    .option("--dry-run", "list the pending versions; apply nothing")
    .option("--status", "the same as --dry-run")
    .addHelpText(
      "after",
      `
Examples:
  gpupool migrate --config gpupool.yaml --status
  gpupool migrate --storage "postgres://gpupool:secret@db:5432/gpupool?schema=gpupool"

A SQLite file is held by its running server: stop it first (or just start the new binary, which migrates).
Exit codes: 0 applied or current, 1 failed or the schema is newer than this binary knows, 2 usage error.`,
    )
    .action(async (flags: MigrateFlags) => {
      const { loadConfig, migrateStorage } = await import("@gpupool/server");
      const { redactStorage } = await import("../serve.js");
      const file = flags.config === undefined || flags.config.trim() === "" ? undefined : flags.config;
      const url = flags.storage ?? (await loadConfig(file)).storage.url;
      const storage = redactStorage(url);
      const dryRun = flags.dryRun === true || flags.status === true;
      let report: MigrationReport;
      try {
        report = await migrateStorage(url, {
          dryRun,
          onApplied: (m, ms) => out(`applied ${describe(m)} (${(ms / 1000).toFixed(1)} s)`),
        });
      } catch (error) {
        const why = error instanceof Error ? error.message : String(error);
        throw new StartError(`cannot migrate storage ${storage}: ${why}`, "storage");
      }
      for (const line of renderMigration(report, storage, dryRun)) out(line);
    });
}
