import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import Database from "better-sqlite3";

/** Another process holds the database: this one must not touch it. */
export class DatabaseInUseError extends Error {
  override readonly name = "DatabaseInUseError";
  constructor(
    readonly path: string,
    readonly holder: string | null,
  ) {
    super(
      `${path} is in use by another gpupool server (${holder ?? "its process id is unknown"}). One server process per SQLite file: stop the other one, or give this one a database of its own; several replicas need PostgreSQL (docs/replicas.md).`,
    );
  }
}

/**
 * An exclusive lock on a SQLite database, held for as long as this process keeps it open: one
 * server per file. The lock is SQLite's own file lock on `<path>.lock` (an exclusive transaction
 * that is never ended), so the operating system releases it when the process ends in any way —
 * `kill -9` included — and a restarted server takes it at once. Who holds it is written beside it,
 * in `<path>.lock.holder`, for the message another server prints.
 */
export class DatabaseLock {
  private constructor(
    private readonly lock: Database.Database,
    private readonly holderFile: string,
  ) {}

  /** Takes the lock, or throws DatabaseInUseError naming the holder; touches nothing else. */
  static take(path: string): DatabaseLock {
    const lockFile = `${path}.lock`;
    const holderFile = `${path}.lock.holder`;
    const lock = new Database(lockFile, { timeout: 0 });
    try {
      // No journal: nothing is ever written to this file; it only carries the lock.
      lock.pragma("journal_mode = OFF");
      lock.pragma("locking_mode = EXCLUSIVE");
      lock.exec("BEGIN EXCLUSIVE");
    } catch (err) {
      lock.close();
      if ((err as { code?: string }).code === "SQLITE_BUSY") throw new DatabaseInUseError(path, readHolder(holderFile));
      throw err;
    }
    writeFileSync(holderFile, `pid ${process.pid} on ${hostname()}, since ${new Date().toISOString()}\n`);
    return new DatabaseLock(lock, holderFile);
  }

  release(): void {
    if (!this.lock.open) return;
    rmSync(this.holderFile, { force: true });
    this.lock.close();
  }
}

function readHolder(file: string): string | null {
  try {
    return readFileSync(file, "utf8").trim() || null;
  } catch {
    return null;
  }
}
