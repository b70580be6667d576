import type { Migration } from "./migrations.js";

/** What `Store.migrate` is asked to do. */
export interface MigrateOptions {
  /** The versions this binary knows (default: MIGRATIONS; tests pass a longer or shorter list). */
  readonly migrations?: readonly Migration[];
  /** Only report what is pending: apply nothing, create nothing, take no lock. */
  readonly dryRun?: boolean;
  /** Called as each version has been applied (for `gpupool migrate`'s progress), with how long it took. */
  readonly onApplied?: (migration: Migration, ms: number) => void;
}

/** What `Store.migrate` found and did. */
export interface MigrationReport {
  /** The database's version before (0: no schema yet). */
  readonly from: number;
  /** Its version after (`from` on a dry run). */
  readonly to: number;
  /** The newest version this binary knows. */
  readonly known: number;
  /** The versions applied, in order (none on a dry run). */
  readonly applied: readonly Migration[];
  /** The versions still to apply (on a dry run: all the missing ones; else none). */
  readonly pending: readonly Migration[];
}

/**
 * The database's schema is newer than this binary knows: an older binary would read and write
 * tables whose meaning it does not know (a column it leaves out, a constraint it breaks), so it
 * refuses to start, and `gpupool migrate` refuses too (it cannot undo versions).
 */
export class SchemaTooNewError extends Error {
  override readonly name = "SchemaTooNewError";
  readonly code = "schema_too_new";

  constructor(
    readonly schemaVersion: number,
    readonly knownVersion: number,
  ) {
    super(
      `the database schema is at version ${schemaVersion}, but this gpupool binary knows migrations only up to version ${knownVersion}: ` +
        `a newer gpupool migrated it. Upgrade this binary (to the release that ran \`gpupool migrate\`, or newer) before running it against this database.`,
    );
  }
}

/** The newest version in `migrations` (0 for none). */
export function newestVersion(migrations: readonly Migration[]): number {
  return migrations.reduce((top, m) => Math.max(top, m.version), 0);
}

/** The versions a database at `current` lacks, in order; throws SchemaTooNewError when it is past them all. */
export function pendingMigrations(migrations: readonly Migration[], current: number): Migration[] {
  const known = newestVersion(migrations);
  if (current > known) throw new SchemaTooNewError(current, known);
  return migrations.filter((m) => m.version > current).sort((a, b) => a.version - b.version);
}

/**
 * An online migration's PostgreSQL text as its statements: split at every `;` that ends a line
 * (trailing spaces allowed), blank and comment-only pieces dropped.
 */
export function splitStatements(text: string): string[] {
  return text
    .split(/;[ \t]*(?:\r?\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.split("\n").some((line) => line.trim() !== "" && !line.trim().startsWith("--")));
}

/** The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name` statement builds, or null. */
export function concurrentIndexName(statement: string): string | null {
  const m =
    /^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([A-Za-z_][A-Za-z0-9_$]*)"?/i.exec(
      statement.replace(/^(?:\s*--[^\n]*\n)+/, ""),
    );
  return m?.[1] ?? null;
}
