import { readFileSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../../../test/pg/cluster.js";
import type { Cluster } from "../../../test/pg/cluster.js";
import { postgresBin } from "../../../test/pg/postgres-url.js";
import { ipCall, waitFor } from "./harness.js";
import { closeReplicas, leaderAndFollowers, replicaConfig } from "./replica-pools.js";
import type { OpenedReplicas } from "./replica-pools.js";

/**
 * What one lease cycle (admit, granted at once, then release) costs the database through the
 * replica that leads and through one that does not, counted from PostgreSQL's own statement log
 * (log_statement = all on a private cluster): every statement a replica sent — BEGIN, COMMIT,
 * SAVEPOINT and NOTIFY included — and every transaction, explicit or not. The leadership's
 * background (the leader's renewals, the other replica's takeover tries every 250 ms) is left
 * out: it does not depend on the load. One caller, cycles one after another: the counts are
 * the same every run.
 */
const CYCLES = 20;
const BACKGROUND = /UPDATE leadership|pg_try_advisory_lock|pg_advisory_unlock/;

interface Cost {
  readonly statements: number;
  readonly transactions: number;
}

/** Statements and transactions in a stretch of the server log (lines `… [pid] LOG:  statement: …` / `execute …: …`). */
function costOf(log: string): Cost {
  const inTx = new Map<string, boolean>();
  let statements = 0;
  let transactions = 0;
  for (const line of log.split("\n")) {
    const m = /\[(\d+)\] LOG: {2}(?:statement|execute [^:]*): (.*)$/.exec(line);
    if (!m) continue;
    const [, pid, text] = m as unknown as [string, string, string];
    if (BACKGROUND.test(text)) continue;
    statements++;
    const verb = text.trim().toUpperCase();
    if (verb.startsWith("BEGIN")) {
      inTx.set(pid, true);
      transactions++;
    } else if (verb.startsWith("COMMIT") || (verb.startsWith("ROLLBACK") && !verb.startsWith("ROLLBACK TO"))) {
      inTx.set(pid, false);
    } else if (inTx.get(pid) !== true) transactions++;
  }
  return { statements, transactions };
}

describe.skipIf(!postgresBin())("a lease cycle through a replica that does not lead", () => {
  let cluster: Cluster;
  const opened: OpenedReplicas = [];
  beforeAll(async () => {
    cluster = await startCluster(postgresBin()!);
    const sql = postgres(cluster.url, { onnotice: () => undefined });
    await sql`ALTER ROLE gpupool SET log_statement = 'all'`;
    await sql.end();
  }, 60_000);
  afterAll(async () => {
    await closeReplicas(opened);
    await cluster?.stop();
  });

  /** A leader, then a second replica (which does not lead), on `schema`. */
  const replicas = async (schema: string) => {
    // A long leader lease: its renewals are left out anyway, but fewer of them is less log to read.
    const config = replicaConfig(`${cluster.url}?schema=${schema}&leader_lease=60000`);
    const { leader, followers } = await leaderAndFollowers(config, opened, 1);
    const follower = followers[0]!;
    const size = config.policy.sizes["large"]!;
    const cycle = async (replica: typeof leader, i: number): Promise<void> => {
      const r = await replica.admit(ipCall(`10.1.${Math.floor(i / 250)}.${i % 250}`, size));
      expect(r.kind).toBe("granted");
      if (r.kind !== "granted") return;
      await replica.release(r.lease.id, false);
    };
    return { leader, follower, cycle };
  };
  const logFile = (): string => join(cluster.dir, "log");
  const counted = (from: number): Cost => costOf(readFileSync(logFile(), "utf8").slice(from));
  /** The log's length once what the cycles set off (a broadcast sent after they returned) has been written. */
  const settled = async (): Promise<number> => {
    let last = -1;
    return waitFor(async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const now = counted(0).statements;
      const same = now === last;
      last = now;
      return same ? readFileSync(logFile(), "utf8").length : null;
    }, 30_000);
  };
  /** Per cycle, `callers` callers each running `rounds` cycles one after another (after as many to warm up). */
  const measure = async (run: (i: number) => Promise<void>, callers: number, rounds: number): Promise<Cost> => {
    const all = async (offset: number) => {
      await Promise.all(
        Array.from({ length: callers }, async (_, c) => {
          for (let k = 0; k < rounds; k++) await run(offset + c + k * callers);
        }),
      );
    };
    // Warm: each connection prepares its statements once; identities' ledgers exist.
    await all(0);
    const from = await settled();
    await all(0);
    await settled();
    const c = counted(from);
    const cycles = callers * rounds;
    return { statements: c.statements / cycles, transactions: c.transactions / cycles };
  };

  it("costs at most 1.5× the statements and transactions of one through the leader", async () => {
    const { leader: first, follower: second, cycle } = await replicas("cost");
    const leader = await measure((i) => cycle(first, i), 1, CYCLES);
    const follower = await measure((i) => cycle(second, i), 1, CYCLES);
    console.log(
      `per cycle through the leader: ${leader.statements} statements, ${leader.transactions} transactions; ` +
        `through a follower: ${follower.statements} statements, ${follower.transactions} transactions`,
    );
    expect(leader.statements).toBeGreaterThan(0);
    expect(follower.statements).toBeLessThanOrEqual(1.5 * leader.statements);
    expect(follower.transactions).toBeLessThanOrEqual(1.5 * leader.transactions);
    // 15 against 14: a follower's group with one member starts it without a SAVEPOINT (27 against 19 before that).
    expect(follower.statements).toBeLessThanOrEqual(leader.statements + 6);
    // 19 and 25 before: a lease (or a ledger), its identity's lock and its ledger are read in one
    // statement, and a transaction's writes that nothing waits for (its notifications too) go out as one.
    expect(leader.statements).toBeLessThanOrEqual(14);
    expect(follower.statements).toBeLessThanOrEqual(15);
  }, 120_000);

  // The target, 1.5× the leader's statements and transactions under load, is not met
  // (docs/replicas.md): the follower's groups bring its transactions per cycle from 2.3 (6.9× the
  // leader's) to about 0.8 here (1.0–1.7 while a member took two round trips and 4 lanes split the
  // groups), depending on how busy the machine is (a busier one makes smaller groups); its
  // statements are about 1.6× the leader's (10.6 against 6.7 since reads and writes are one
  // statement each; 18.3 against 12.6, 1.45×, before: the leader's fell further).
  it("under 24 concurrent callers, a follower's admissions and releases share their transactions: fewer than the 2 per cycle they take alone", async () => {
    const { leader: first, follower: second, cycle } = await replicas("cost24");
    const leader = await measure((i) => cycle(first, i), 24, 10);
    const follower = await measure((i) => cycle(second, i), 24, 10);
    console.log(
      `per cycle, 24 callers, through the leader: ${leader.statements} statements, ${leader.transactions} transactions; ` +
        `through a follower: ${follower.statements} statements, ${follower.transactions} transactions`,
    );
    expect(leader.transactions).toBeGreaterThan(0);
    // Each cycle's admission and release alone are 2 transactions of the follower's, the leader's grant more.
    expect(follower.transactions).toBeLessThan(2);
  }, 240_000);
});
