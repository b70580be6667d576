import { describe, expect, it } from "vitest";
import type { SqlValue } from "../src/storage/table.js";
import { WriteBatch } from "../src/storage/postgres/write-batch.js";

/** What a batch sends: each statement's text and parameters. */
function recorder(): { sent: { text: string; params: SqlValue[] }[]; batch: WriteBatch } {
  const sent: { text: string; params: SqlValue[] }[] = [];
  return { sent, batch: new WriteBatch((text, params) => sent.push({ text, params })) };
}

describe("a transaction's writes that nothing waits for (WriteBatch)", () => {
  it("go out as one statement: each write a data-modifying WITH query, its parameters numbered after the ones before", () => {
    const { sent, batch } = recorder();
    batch.add("ledger", "INSERT INTO ledgers (identity, runs) VALUES ($1, $2)", ["ip:1", 1]);
    batch.add("lease", "UPDATE leases SET status = $1 WHERE id = $2", ["released", "ls1"]);
    batch.add("usage", "INSERT INTO usage_records (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", ["ls1"]);
    expect(sent).toEqual([]);
    batch.flush();
    expect(sent).toEqual([
      {
        text:
          "WITH w0 AS (INSERT INTO ledgers (identity, runs) VALUES ($1, $2)), " +
          "w1 AS (UPDATE leases SET status = $3 WHERE id = $4), " +
          "w2 AS (INSERT INTO usage_records (id) VALUES ($5) ON CONFLICT (id) DO NOTHING) SELECT 1",
        params: ["ip:1", 1, "released", "ls1", "ls1"],
      },
    ]);
    batch.flush();
    expect(sent).toHaveLength(1);
  });

  it("a notification is the statement's SELECT; one write alone is sent as it is", () => {
    const { sent, batch } = recorder();
    batch.add("ledger", "INSERT INTO ledgers (identity) VALUES ($1)", ["ip:1"]);
    batch.notify("s.leases", "{}");
    batch.flush();
    batch.add("ledger", "INSERT INTO ledgers (identity) VALUES ($1)", ["ip:2"]);
    batch.flush();
    batch.notify("s.leases", "{}");
    batch.flush();
    expect(sent).toEqual([
      {
        text: "WITH w0 AS (INSERT INTO ledgers (identity) VALUES ($1)) SELECT pg_notify($2, $3)",
        params: ["ip:1", "s.leases", "{}"],
      },
      { text: "INSERT INTO ledgers (identity) VALUES ($1)", params: ["ip:2"] },
      { text: "SELECT pg_notify($1, $2)", params: ["s.leases", "{}"] },
    ]);
  });

  it("a second write of a table (two leases updated) sends the batch first: one statement never changes a table twice, nor reads what it wrote", () => {
    const { sent, batch } = recorder();
    batch.add("lease", "UPDATE leases SET status = $1 WHERE id = $2", ["released", "ls1"]);
    batch.add("ledger", "INSERT INTO ledgers (identity) VALUES ($1)", ["ip:1"]);
    batch.add("lease", "UPDATE leases SET status = $1 WHERE id = $2", ["active", "ls2"]);
    batch.notify("s.a", "1");
    batch.notify("s.b", "2");
    batch.flush();
    expect(sent.map((s) => s.params)).toEqual([
      ["released", "ls1", "ip:1"],
      ["active", "ls2", "s.a", "1"],
      ["s.b", "2"],
    ]);
  });

  it("a write made once its transaction can send nothing more is refused when it is made, as a statement would be", () => {
    let open = true;
    const sent: string[] = [];
    const batch = new WriteBatch(
      (text) => sent.push(text),
      () => {
        if (!open) throw new Error("over");
      },
    );
    batch.add("ledger", "INSERT INTO ledgers (identity) VALUES ($1)", ["ip:1"]);
    open = false;
    expect(() => batch.add("lease", "UPDATE leases SET status = $1 WHERE id = $2", ["released", "ls1"])).toThrow(
      "over",
    );
    expect(() => batch.notify("s.a", "1")).toThrow("over");
    expect(sent).toEqual([]);
  });
});
