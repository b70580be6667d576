import { statSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { StorageUnavailableError } from "../store.js";
import type { StorageUnavailableReason } from "../store.js";

/** Below this much free space on its disk, a SQLite database is not ready: its log and checkpoints need room. */
export const MIN_FREE_BYTES = 8 * 1024 * 1024;

/** What a SQLite error code means for a person (the reason of `storage_unavailable`), or null when it is no storage failure. */
export function sqliteReason(code: string): StorageUnavailableReason | null {
  if (code === "SQLITE_FULL") return "disk_full";
  // The connection waits busy_timeout (5 s) for a lock before it says busy.
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return "timeout";
  if (code === "SQLITE_CANTOPEN" || code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT"))
    return "database_missing";
  if (code.startsWith("SQLITE_IOERR") || code === "SQLITE_READONLY" || code.startsWith("SQLITE_READONLY_"))
    return "write_failed";
  return null;
}

/**
 * A SQLite error as the store's StorageUnavailableError (with its reason), or null when the error
 * is not SQLite's storage failing (a refusal, a bug: those keep their own meaning).
 */
export function sqliteUnavailable(err: unknown): StorageUnavailableError | null {
  if (!(err instanceof Database.SqliteError)) return null;
  const reason = sqliteReason(err.code);
  return reason === null
    ? null
    : new StorageUnavailableError(`SQLite: ${err.message} (${err.code})`, { cause: err, reason });
}

/**
 * A SQLite error that says the file does not read as a database any more (damaged pages, a header
 * that is not SQLite's): unlike a full disk it does not heal, and pages not read yet may be
 * damaged too, so the store writes nothing more once it has seen one (see SqliteStore.damaged).
 */
export function damagedFile(err: unknown): StorageUnavailableError | null {
  if (!(err instanceof Database.SqliteError)) return null;
  if (err.code !== "SQLITE_NOTADB" && !err.code.startsWith("SQLITE_CORRUPT")) return null;
  return new StorageUnavailableError(
    `SQLite: the database file is damaged (${err.code}: ${err.message}); no write is committed any more`,
    { cause: err, reason: "database_missing" },
  );
}

/**
 * The database file this process opened, watched: deleted, or replaced by another file (another
 * inode at the path), it is no longer what the server writes to — and whatever is committed then
 * would be lost at the next start — so writes stop with a clear error instead.
 */
export class DatabaseFile {
  private readonly dev: number;
  private readonly ino: number;

  constructor(private readonly path: string) {
    const st = statSync(path);
    this.dev = st.dev;
    this.ino = st.ino;
  }

  /** Why the file is no longer the one opened, or null. */
  gone(): StorageUnavailableError | null {
    let st;
    try {
      st = statSync(this.path);
    } catch {
      return new StorageUnavailableError(`${this.path} was deleted while the server had it open`, {
        reason: "database_missing",
      });
    }
    if (st.ino !== this.ino || st.dev !== this.dev) {
      return new StorageUnavailableError(`${this.path} was replaced by another file while the server had it open`, {
        reason: "database_missing",
      });
    }
    return null;
  }

  /** Why the disk is too full for the database to go on, or null. */
  tooFull(): StorageUnavailableError | null {
    const fs = statfsSync(dirname(this.path));
    const free = fs.bavail * fs.bsize;
    if (free >= MIN_FREE_BYTES) return null;
    return new StorageUnavailableError(
      `${dirname(this.path)} has ${free} bytes free, less than the ${MIN_FREE_BYTES} the database needs`,
      { reason: "disk_full" },
    );
  }
}
