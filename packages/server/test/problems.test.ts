import Database from "better-sqlite3";
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { installErrorHandling } from "../src/http/problems.js";
import { StorageUnavailableError } from "../src/storage/store.js";
import type { StorageUnavailableReason } from "../src/storage/store.js";

/** What a person reads when the database could not do the work: what happened in their terms, and when to retry. */
describe("503 storage_unavailable", () => {
  const cases: [StorageUnavailableReason, RegExp, string][] = [
    ["unreachable", /cannot be reached/, "5"],
    ["timeout", /did not answer in time/, "2"],
    ["contention", /same person or lease was being handled at the same moment/, "1"],
    ["stalled", /stalled/, "1"],
  ];
  it.each(cases)(
    "%s: says so, with Retry-After, and never the database's own words",
    async (reason, detail, retryAfter) => {
      const app = Fastify({ logger: false });
      installErrorHandling(app);
      app.get("/x", async () => {
        throw new StorageUnavailableError("PostgreSQL at db.internal:5432 (user gpupool) said 40P01 on ledgers", {
          reason,
        });
      });
      const res = await app.inject({ method: "GET", url: "/x" });
      expect(res.statusCode).toBe(503);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(res.headers["retry-after"]).toBe(retryAfter);
      const body = res.json();
      expect(body).toMatchObject({ code: "storage_unavailable", reason, status: 503 });
      expect(body.detail).toMatch(detail);
      expect(body.detail).toMatch(/nothing was changed/i);
      expect(res.body).not.toMatch(/db\.internal|5432|40P01|gpupool\)/);
      await app.close();
    },
  );
});

/** SQLite's own errors reach the error handler as the adapter raised them: each is a 503 with its reason. */
describe("503 storage_unavailable from SQLite", () => {
  const cases: [string, string, StorageUnavailableReason, RegExp, string][] = [
    ["SQLITE_BUSY", "database is locked", "timeout", /did not answer in time/, "2"],
    ["SQLITE_BUSY_SNAPSHOT", "database is locked", "timeout", /did not answer in time/, "2"],
    ["SQLITE_FULL", "database or disk is full", "disk_full", /database is on is full/, "30"],
    ["SQLITE_IOERR_WRITE", "disk I/O error", "write_failed", /could not write/, "5"],
    ["SQLITE_CANTOPEN", "unable to open database file", "database_missing", /deleted or replaced/, "60"],
  ];
  it.each(cases)('%s ("%s") → reason %s, with Retry-After', async (code, message, reason, detail, retryAfter) => {
    const app = Fastify({ logger: false });
    installErrorHandling(app);
    app.get("/x", async () => {
      throw new Database.SqliteError(`${message} (/srv/gpupool/pool.db)`, code);
    });
    const res = await app.inject({ method: "GET", url: "/x" });
    expect(res.statusCode).toBe(503);
    expect(res.headers["retry-after"]).toBe(retryAfter);
    const body = res.json();
    expect(body).toMatchObject({ code: "storage_unavailable", reason, status: 503 });
    expect(body.detail).toMatch(detail);
    expect(body.detail).toMatch(/nothing was changed/i);
    expect(res.body).not.toMatch(/srv|pool\.db|SQLITE/);
    await app.close();
  });
});
