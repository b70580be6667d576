import { resolve } from "node:path";
import { Option } from "commander";
import type { Command } from "commander";
import { out, StartError, UsageError } from "../common.js";
import { applyFlags, parseStorage } from "./server.js";

interface BackupFlags {
  readonly to: string;
  readonly config?: string;
  readonly storage?: string;
}

interface RestoreFlags {
  readonly from: string;
  readonly to: string;
  readonly force?: boolean;
}

const POSTGRES_ADVICE =
  "gpupool backup copies SQLite databases only. For PostgreSQL use its own tools: `pg_dump -Fc` for a " +
  "consistent dump while the servers run (restore it with `pg_restore`), and a base backup " +
  "(`pg_basebackup`) with WAL archiving for point-in-time recovery. See docs/deploy.md (Backups).";

/** The storage URL a server with these flags would open (flags, then the config file, then the default). */
async function storageUrl(flags: BackupFlags): Promise<string> {
  const { loadConfig } = await import("@gpupool/server");
  const file = flags.config === undefined || flags.config.trim() === "" ? undefined : flags.config;
  const config = applyFlags(await loadConfig(file), flags.storage === undefined ? {} : { storage: flags.storage });
  return config.storage.url;
}

/** BackupError and DatabaseInUseError become what the CLI prints; anything else is a bug and stays. */
function explain(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  if (error.name === "BackupError") {
    const kind = (error as Error & { kind?: string }).kind;
    return kind === "usage" ? new UsageError(error.message) : new StartError(error.message, "backup");
  }
  if (error.name === "DatabaseInUseError") {
    const holder = (error as Error & { holder?: string | null }).holder ?? "its process id is unknown";
    const path = (error as Error & { path?: string }).path ?? "the database";
    return new StartError(
      `${path} is held by a running gpupool server (${holder}): stop it before restoring over its database.`,
      "in_use",
    );
  }
  return error;
}

export function registerBackup(program: Command): void {
  program
    .command("backup")
    .summary("copy the SQLite database to a file, while the server runs")
    .description(
      "Copy the server's SQLite database to --to, consistent as of one commit, without stopping or pausing " +
        "the server (SQLite's online backup API, from a connection that only reads). The database is the one " +
        "`gpupool server` with the same --config / --storage would open. The file is written beside --to " +
        "and renamed into place once complete and checked, so --to is always a whole backup.",
    )
    .requiredOption("--to <file>", "backup file to write (replaced if it exists)")
    .addOption(new Option("--config <file>", "the server's YAML configuration file").env("GPUPOOL_CONFIG"))
    .option("--storage <url>", 'the server\'s storage URL, "sqlite:./gpupool.db" (overrides storage.url)', parseStorage)
    .addHelpText(
      "after",
      `
Examples:
  gpupool backup --config /etc/gpupool/gpupool.yaml --to /var/backups/gpupool/gpupool.db
  gpupool backup --storage sqlite:./gpupool.db --to ./gpupool-backup.db

PostgreSQL: use pg_dump / pg_restore and WAL archiving instead (docs/deploy.md); this command says so and exits 2.
Exit codes: 0 written, 1 the copy failed, 2 usage error (no database there, a PostgreSQL URL).`,
    )
    .action(async (flags: BackupFlags) => {
      const url = await storageUrl(flags);
      if (/^postgres(ql)?:\/\//.test(url)) throw new UsageError(POSTGRES_ADVICE);
      const { backupSqlite, sqlitePath } = await import("@gpupool/server");
      const path = sqlitePath(url);
      if (path === ":memory:" || path === "")
        throw new UsageError("the storage is in memory: there is nothing to back up.");
      const started = Date.now();
      try {
        const result = await backupSqlite(resolve(path), resolve(flags.to));
        out(
          `backed up ${path} to ${flags.to}: ${(result.bytes / 1024).toFixed(0)} KiB, schema version ${result.schemaVersion}, integrity ok, in ${Date.now() - started} ms`,
        );
      } catch (error) {
        throw explain(error);
      }
    });

  program
    .command("restore")
    .summary("put a backup in place as a SQLite database (the server stopped)")
    .description(
      "Check a backup made by `gpupool backup` (SQLite's integrity check, and a schema version this gpupool " +
        "knows) and put it in place as the database --to. Refuses while a server holds --to, and refuses " +
        "to replace an existing file without --force. Start the server on it afterwards: leases that were " +
        "live in the backup are recovered as after any restart.",
    )
    .requiredOption("--from <file>", "backup file")
    .requiredOption("--to <db>", 'database file to create or replace (a path, or "sqlite:<path>")')
    .option("--force", "replace --to if it exists (its data is lost)")
    .addHelpText(
      "after",
      `
Example:
  systemctl stop gpupool-server
  gpupool restore --from /var/backups/gpupool/gpupool.db --to /var/lib/gpupool/gpupool.db --force
  systemctl start gpupool-server

Exit codes: 0 restored, 1 refused (a server holds --to, the backup is damaged or from a newer gpupool), 2 usage error.`,
    )
    .action(async (flags: RestoreFlags) => {
      if (/^postgres(ql)?:\/\//.test(flags.to))
        throw new UsageError("restore puts SQLite backups in place; for PostgreSQL use pg_restore (docs/deploy.md).");
      const { restoreSqlite, sqlitePath } = await import("@gpupool/server");
      const to = resolve(sqlitePath(flags.to));
      try {
        const result = restoreSqlite(resolve(flags.from), to, flags.force === true);
        out(
          `restored ${flags.from} to ${to}${result.replaced ? " (replaced the old database)" : ""}: schema version ${result.schemaVersion}, integrity ok. Start the server on it.`,
        );
      } catch (error) {
        throw explain(error);
      }
    });
}
