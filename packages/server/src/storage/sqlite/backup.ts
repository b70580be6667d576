import {
  chmodSync,
  copyFileSync,
  existsSync,
  openSync,
  fsyncSync,
  closeSync,
  renameSync,
  rmSync,
  statSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import Database from "better-sqlite3";
import { LATEST_VERSION } from "../migrations.js";
import { DatabaseLock } from "./database-lock.js";

/**
 * Backups of a SQLite database, and restores from them.
 *
 * A backup opens the database beside the server that holds it, as a reader that writes nothing
 * (it does not take the server's lock, which only says "one writer per file"), and copies it with SQLite's online backup
 * API in a single step: one read transaction, so the copy is the database as of one commit. In WAL
 * mode a reader never blocks the writer, so the server keeps admitting while it runs; its
 * checkpointer's PASSIVE checkpoints stop short of the pages the backup still reads, and the rare
 * RESTART one waits in its own thread (never the event loop) until the copy ends. If a commit
 * lands between SQLite's steps, SQLite restarts the copy from a fresh snapshot, so the result is
 * never a mix of two moments.
 *
 * The alternative, asking the running server to write the backup over its admin API, would need
 * an admin token, a server that is up, and a file path the server (often a sandboxed service
 * user) may write; reading the file needs none of those and works whether the server runs or not.
 */

export interface BackupResult {
  readonly file: string;
  readonly bytes: number;
  readonly schemaVersion: number;
}

/** Why a backup or a restore was refused; the message is for a person. */
export class BackupError extends Error {
  override readonly name = "BackupError";
  constructor(
    message: string,
    /** `usage` for a mistake in how it was called (exit 2), `refused` for the state of the files (exit 1). */
    readonly kind: "usage" | "refused",
  ) {
    super(message);
  }
}

/** Copies the database at `dbPath` to `toFile` (replaced only once the new copy is complete and checked). */
export async function backupSqlite(dbPath: string, toFile: string): Promise<BackupResult> {
  if (!existsSync(dbPath)) throw new BackupError(`${dbPath} does not exist: nothing to back up.`, "usage");
  if (!existsSync(dirname(toFile)))
    throw new BackupError(`cannot write ${toFile}: the directory ${dirname(toFile)} does not exist.`, "usage");
  const partial = join(dirname(toFile), `.${basename(toFile)}.partial`);
  rmSync(partial, { force: true });
  // Opened for reading and writing but made query-only: a read-only connection to a WAL database
  // whose server is stopped creates the -wal and -shm files and leaves them behind (owned by
  // whoever ran the backup: root's would keep the server's user from opening its own database);
  // this one, being the last connection, removes them on close. Beside a running server it is one
  // more reader, and it writes nothing either way.
  const source = new Database(dbPath, { fileMustExist: true });
  try {
    source.pragma("query_only = ON");
    source.pragma("busy_timeout = 5000");
    // The first step only measures; every later one copies all that is left, in one read transaction.
    await source.backup(partial, { progress: () => 0x7fffffff });
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  } finally {
    source.close();
  }
  try {
    // A self-contained file: rollback journal, so a copy of this one file is the whole backup.
    const copy = new Database(partial);
    try {
      copy.pragma("journal_mode = DELETE");
    } finally {
      copy.close();
    }
    const schemaVersion = checkBackup(partial);
    // A backup holds the X-IP-Token signing key and every token's hash: its owner's eyes only.
    chmodSync(partial, 0o600);
    fsyncFile(partial);
    renameSync(partial, toFile);
    return { file: toFile, bytes: statSync(toFile).size, schemaVersion };
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  }
}

export interface RestoreResult {
  readonly database: string;
  readonly schemaVersion: number;
  readonly replaced: boolean;
}

/**
 * Puts the backup `fromFile` in place as the database `toDb`. Refuses while a server holds `toDb`
 * (its lock), when `toDb` exists and `force` is not set, and when the backup fails SQLite's
 * integrity check or comes from a newer gpupool. The lock is held throughout, so no server starts
 * on a half-restored file. The server's recovery, at its next start, settles the leases that were
 * live in the backup as after any restart.
 */
export function restoreSqlite(fromFile: string, toDb: string, force: boolean): RestoreResult {
  if (!existsSync(fromFile)) throw new BackupError(`${fromFile} does not exist.`, "usage");
  if (!existsSync(dirname(toDb)))
    throw new BackupError(`cannot restore to ${toDb}: the directory ${dirname(toDb)} does not exist.`, "usage");
  const replaced = existsSync(toDb);
  if (replaced && !force)
    throw new BackupError(
      `${toDb} exists; add --force to replace it with the backup (its data will be lost).`,
      "usage",
    );
  // Throws DatabaseInUseError (naming the server's pid) while a server holds the database.
  const lock = DatabaseLock.take(toDb);
  const partial = join(dirname(toDb), `.${basename(toDb)}.restoring`);
  let restored = false;
  try {
    // The copy is what gets checked, not the original: what is checked is what is put in place.
    copyFileSync(fromFile, partial);
    const schemaVersion = checkBackup(partial);
    fsyncFile(partial);
    // The old database's WAL must go before the new file takes its name: SQLite would otherwise
    // replay the old database's last commits onto the restored one.
    for (const side of ["-wal", "-shm", "-journal"]) rmSync(`${toDb}${side}`, { force: true });
    renameSync(partial, toDb);
    restored = true;
    return { database: toDb, schemaVersion, replaced };
  } finally {
    rmSync(partial, { force: true });
    lock.release();
    // A refused restore to a new path leaves nothing behind, not even the lock's file.
    if (!restored && !replaced) rmSync(`${toDb}.lock`, { force: true });
  }
}

/** `PRAGMA integrity_check` and the schema version; throws a BackupError naming what is wrong. */
function checkBackup(file: string): number {
  let db: Database.Database;
  try {
    db = new Database(file, { fileMustExist: true });
  } catch (err) {
    throw new BackupError(`${file} is not a SQLite database (${(err as Error).message}).`, "refused");
  }
  try {
    let problems: string[];
    try {
      problems = (db.pragma("integrity_check") as { integrity_check: string }[]).map((r) => r.integrity_check);
    } catch (err) {
      throw new BackupError(`the backup is not a usable SQLite database: ${(err as Error).message}.`, "refused");
    }
    if (problems.length !== 1 || problems[0] !== "ok")
      throw new BackupError(
        `the backup fails SQLite's integrity check: ${problems.slice(0, 5).join("; ")}.`,
        "refused",
      );
    const table = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get();
    if (table === undefined)
      throw new BackupError("the backup is not a gpupool database (no schema_migrations).", "refused");
    const { v } = db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get() as { v: number };
    if (v > LATEST_VERSION)
      throw new BackupError(
        `the backup is at schema version ${v}, newer than this gpupool knows (${LATEST_VERSION}): restore it with the gpupool version that made it, or a newer one.`,
        "refused",
      );
    return v;
  } finally {
    db.close();
  }
}

function fsyncFile(file: string): void {
  const fd = openSync(file, "r+");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
