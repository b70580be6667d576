import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../pg/cluster.js";
import type { Cluster } from "../pg/cluster.js";
import { postgresBin } from "../pg/postgres-url.js";
import { Load, ReplicaSet, call, scopedKeys, sleep, until } from "./pg-fault-kit.js";
import type { Replica } from "./pg-fault-kit.js";
import { checkInvariants } from "./pg-invariants.js";
import type { InvariantReport } from "./pg-invariants.js";

/**
 * The PostgreSQL fault suite (issue 14): three replicas (real `gpupool server` processes) under a
 * bounded mixed load — admit, release, cancel, some leases left to expire or to time out in the
 * queue — while the leader is killed (kill -9), frozen for 10 s (SIGSTOP), PostgreSQL restarts
 * (`pg_ctl restart -m fast` and `-m immediate`, each twice) and every replica is restarted in turn
 * (SIGTERM). After each fault the invariants are checked over the database (pg-invariants.ts) —
 * among them that no admission the client was told failed made a lease (each carries an
 * Idempotency-Key) — and no replica may have exited on its own. A private cluster, since it is restarted.
 *
 * The counts (faults, requests, re-election times, violations) are printed for quoting.
 */

const ADMIN = "pg-faults-admin-token-0123456789";
const QUEUE_TIMEOUT_MS = 5_000;
/** A queued lease may outlive its queue timeout by this much (the leader's timers, a takeover, a restart). */
const GRACE_MS = 15_000;
/**
 * The leader's lease (renewed every fifth of it): short enough that the leader frozen for 10 s is
 * replaced while frozen, long enough (the default 5 s, not 3 s) that a replica starved of CPU for
 * 2 s on a loaded machine cannot lose the lead too and pass it on while the test checks who leads.
 */
const LEASE_MS = 5_000;
const bin = postgresBin();

let cluster: Cluster;
let dir: string;
let url: string;
let replicas: ReplicaSet;
let load: Load;
/** Each user's token → its id (the scope of its Idempotency-Keys). */
const userOf = new Map<string, string>();
const faults: string[] = [];
const reelections: { fault: string; ms: number }[] = [];
const reports: { after: string; report: InvariantReport }[] = [];

/** What the invariants are checked against: the 2xx the load saw, and the admissions it was told failed. */
function invariantOptions() {
  const keys = scopedKeys(load, (token) => userOf.get(token)!);
  return {
    url,
    quotaMs: { pro: 10 * 60_000 },
    queueTimeoutMs: QUEUE_TIMEOUT_MS,
    graceMs: GRACE_MS,
    acked: load.acked,
    toldFailed: keys.toldFailed,
    keysMade: keys.made,
  };
}

async function check(after: string): Promise<InvariantReport> {
  // Quiet while checking: every answer the load got is in `acked` or `toldFailed` before the snapshot.
  await load.stop();
  const report = await checkInvariants(invariantOptions());
  reports.push({ after, report });
  expect(report.violations, `after ${after}`).toEqual([]);
  expect(replicas.crashes, `after ${after}`).toEqual([]);
  load.start();
  return report;
}

/** Time from the fault until a replica other than `old` (when given) leads, as /readyz says. */
async function reelected(fault: string, since: number, old: Replica | null): Promise<Replica> {
  const next = await until(
    `a new leader after ${fault}`,
    async () => {
      const l = await replicas.leader();
      return l !== null && l !== old ? l : null;
    },
    60_000,
  );
  reelections.push({ fault, ms: Date.now() - since });
  return next;
}

describe.skipIf(bin === null)("PostgreSQL faults: 3 replicas under load", () => {
  beforeAll(async () => {
    cluster = await startCluster(bin!, { crashSafe: true });
    dir = mkdtempSync(join(tmpdir(), "gpupool-pg-faults-"));
    url = `${cluster.url}?schema=faults&leader_lease=${LEASE_MS}`;
    const config = join(dir, "gpupool.yaml");
    writeFileSync(
      config,
      [
        "storage:",
        `  url: "${url}"`,
        "quota:",
        "  tiers:",
        "    anonymous: { quota: 1m, priority: 1, max_duration: 60s }",
        "    pro: { quota: 10m, priority: 3, max_duration: 60s }",
        "queue:",
        `  timeout: ${QUEUE_TIMEOUT_MS / 1000}s`,
        // The load queues on purpose (queued leases must survive every fault): none refused for its predicted wait.
        "  predicted_wait: false",
        "pool:",
        "  simulated:",
        "    - { node: sim-0, gpus: 5 }",
        "log:",
        "  level: warn",
      ].join("\n"),
    );
    replicas = new ReplicaSet(config, { GPUPOOL_ADMIN_TOKEN: ADMIN });
    for (let i = 0; i < 3; i++) await replicas.start();
    const leader = await replicas.settled();
    const tokens: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await call(leader.process.url, "POST", "/v1/admin/users", ADMIN, { name: `u${i}`, tier: "pro" });
      expect(r.status).toBe(201);
      tokens.push(r.body.token as string);
      userOf.set(r.body.token as string, r.body.id as string);
    }
    load = new Load(replicas, tokens, 8);
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    await replicas?.stopAll();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("kill -9, SIGSTOP 10 s, pg_ctl restart fast and immediate, SIGTERM rolling restart: no crash, no violation", async () => {
    load.start();
    await sleep(3_000);
    await check("warm-up");

    // kill -9 of the leader; a new replica takes its place.
    {
      const leader = await replicas.settled();
      faults.push("kill -9 leader");
      const at = Date.now();
      await replicas.stop(leader, "SIGKILL");
      await reelected("kill -9 leader", at, leader);
      await replicas.start();
      await replicas.settled();
      await sleep(3_000);
      await check("kill -9 of the leader");
    }

    // The leader frozen for 10 s: another replica leads while it is frozen; once it wakes it
    // notices, steps down and follows (one leader), and nothing it had in flight broke a rule.
    {
      const leader = await replicas.settled();
      faults.push("SIGSTOP leader 10 s");
      const at = Date.now();
      leader.frozen = true;
      leader.process.child.kill("SIGSTOP");
      const next = await reelected("SIGSTOP leader", at, leader);
      const replacedWhileFrozen = Date.now() - at < 10_000;
      await sleep(Math.max(0, 10_000 - (Date.now() - at)));
      leader.process.child.kill("SIGCONT");
      leader.frozen = false;
      expect(replacedWhileFrozen, "a frozen leader is replaced before it wakes").toBe(true);
      await until(
        "the woken leader steps down",
        async () => (await call(leader.process.url, "GET", "/readyz", "")).body?.leader === false,
        30_000,
      );
      expect(await replicas.leader()).toBe(next);
      await sleep(3_000);
      await check("SIGSTOP of the leader");
    }

    // PostgreSQL restarts under load, fast and immediate, twice each.
    for (const mode of ["fast", "immediate", "fast", "immediate"] as const) {
      await replicas.settled();
      faults.push(`pg_ctl restart -m ${mode}`);
      const at = Date.now();
      cluster.restart(mode);
      await until("a leader after the restart", () => replicas.leader(), 60_000);
      reelections.push({ fault: `pg_ctl restart -m ${mode}`, ms: Date.now() - at });
      await replicas.settled();
      await sleep(3_000);
      await check(`pg_ctl restart -m ${mode}`);
    }

    // Rolling restart: each replica in turn gets SIGTERM (a clean exit), and a new one starts.
    for (const old of [...replicas.live]) {
      faults.push("SIGTERM rolling restart");
      const wasLeader = (await replicas.leader()) === old;
      const at = Date.now();
      expect(await replicas.stop(old, "SIGTERM")).toBe(0);
      if (wasLeader) await reelected("SIGTERM of the leader", at, old);
      await replicas.start();
      await replicas.settled();
      await sleep(2_000);
    }
    await check("SIGTERM rolling restart");

    // Quiet: every queued lease reaches a grant or its queue timeout.
    await load.stop();
    await sleep(QUEUE_TIMEOUT_MS + GRACE_MS);
    const final = await checkInvariants(invariantOptions());
    reports.push({ after: "the end (quiet)", report: final });
    const summary = {
      faults: faults.length,
      faultsInjected: faults,
      requests: load.requests,
      statuses: load.summary(),
      acknowledgedLeases: load.acked.size,
      leasesInDatabase: final.leases,
      unacknowledgedLeases: final.unacknowledged,
      admissionsToldFailed: load.toldFailed.length,
      reelectionMs: reelections,
      violations: reports.reduce((n, r) => n + r.report.violations.length, 0),
      stuckQueued: final.stuckQueued.length,
      crashes: replicas.crashes.length,
    };
    console.log(`pg-faults: ${JSON.stringify(summary, null, 2)}`);
    expect(final.violations).toEqual([]);
    expect(replicas.crashes).toEqual([]);
    expect(load.statuses.get(202) ?? 0, "some calls queued").toBeGreaterThan(0);
    expect(final.stuckQueued, "leases queued past their queue timeout + grace").toEqual([]);
  }, 600_000);
});
