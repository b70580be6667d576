// Admission benchmark on PostgreSQL (npm run bench -- admission --storage postgres): gpupool's
// durable admit+release cycle with one replica and with three replicas (one leader, two
// followers, each its own process and store on one schema), against rate-limiter-flexible's
// RateLimiterPostgres (consume + reward) on the same database server, in one run.
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { clearTimeout } from "node:timers";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { pino } from "pino";
import { RateLimiterPostgres } from "rate-limiter-flexible";
import { assemblePool, openStorage, systemClock } from "@gpupool/server";
import { KEYS, admitReleaseCycle, benchConfig, keyOf, median, round } from "./admission.js";
import { HOW_TO_GET_POSTGRES, findPostgresBin, startCluster, statementCountingSettings } from "./pg-cluster.js";

// Rounds swing a lot on a small shared machine (other work, the disk's fsync times): the median of five.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
/** Concurrent callers in total, whatever the number of replicas (a multiple of 3: spread evenly). */
const CALLERS = Number(process.env.BENCH_PG_CALLERS ?? 24);
const WARMUP_MS = Number(process.env.BENCH_PG_WARMUP_S ?? 3) * 1000;
const MEASURE_MS = Number(process.env.BENCH_PG_SECONDS ?? 10) * 1000;
/** The peer's pg.Pool size: the pool it would be given in a server handling this many callers. */
const PEER_POOL = Number(process.env.BENCH_PG_PEER_POOL ?? 10);
const REPLICAS = 3;
/** Ended leases already in the tables before a gpupool measurement starts (benchmarks do not run on empty tables). */
const SEED_LEASES = Number(process.env.BENCH_PG_SEED_LEASES ?? 200_000);

const silent = pino({ level: "silent" });
const withSchema = (url, schema) => `${url}${url.includes("?") ? "&" : "?"}schema=${schema}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Child side: one process per replica (or per peer), driven by the parent over IPC.
// ---------------------------------------------------------------------------------------------

/**
 * Runs `callers` loops from t0 until the end of the window; each caller k-th cycle uses key index
 * offset + w + k·stride (callers across replicas interleave like callers within one). Counts and
 * times only the cycles that finish inside [t0 + warm-up, t0 + warm-up + window].
 */
async function drive(cycle, { callers, offset, stride, t0, warmupMs, measureMs }) {
  const from = t0 + warmupMs;
  const to = from + measureMs;
  await sleep(Math.max(0, t0 - Date.now()));
  let cpuFrom = null;
  let cpuUsed = null;
  const atFrom = setTimeout(() => (cpuFrom = process.cpuUsage()), Math.max(0, from - Date.now()));
  const atTo = setTimeout(() => (cpuUsed = process.cpuUsage(cpuFrom ?? undefined)), Math.max(0, to - Date.now()));
  const latencies = [];
  const kinds = {};
  let total = 0;
  const caller = async (w) => {
    for (let k = 0; Date.now() < to; k++) {
      const started = performance.now();
      const kind = await cycle(offset + w + k * stride);
      const ms = performance.now() - started;
      const end = Date.now();
      total++;
      if (end < from || end > to) continue;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      if (kind === "granted") latencies.push(ms);
    }
  };
  await Promise.all(Array.from({ length: callers }, (_, w) => caller(w)));
  clearTimeout(atFrom);
  clearTimeout(atTo);
  const cpu = cpuUsed ?? process.cpuUsage(cpuFrom ?? undefined);
  return { granted: latencies.length, kinds, total, latencies, cpuUs: cpu.user + cpu.system };
}

async function openSide(init) {
  if (init.side === "peer") {
    const pool = new pg.Pool({ connectionString: init.url, max: PEER_POOL });
    const limiter = await new Promise((resolve, reject) => {
      const l = new RateLimiterPostgres(
        {
          storeClient: pool,
          storeType: "pool",
          schemaName: init.schema,
          tableName: "rl",
          points: 1_000_000_000,
          duration: 86_400,
          clearExpiredByTimeout: false,
        },
        (err) => (err ? reject(err) : resolve(l)),
      );
    });
    const cycle = async (i) => {
      const key = keyOf(i);
      await limiter.consume(key, 1);
      await limiter.reward(key, 1);
      return "granted";
    };
    return { cycle, isLeader: null, close: () => pool.end() };
  }
  const c = benchConfig(withSchema(init.url, init.schema));
  const storage = await openStorage(c.storage.url);
  const pool = assemblePool(c, storage, { clock: systemClock, log: silent });
  await pool.replica.start();
  return {
    cycle: admitReleaseCycle(pool.replica, c.policy, { allowQueued: true }),
    get isLeader() {
      return pool.replica.isLeader;
    },
    close: async () => {
      pool.stop();
      await storage.close();
    },
  };
}

async function child() {
  // The parent went away (Ctrl-C, a crash): do not linger holding connections.
  process.once("disconnect", () => process.exit(1));
  const init = JSON.parse(process.env.GPUPOOL_BENCH_CHILD ?? "{}");
  const side = await openSide(init);
  process.send({ ready: true, isLeader: side.isLeader });
  const go = await new Promise((resolve) => process.once("message", resolve));
  const result = await drive(side.cycle, { ...init, ...go });
  process.send({ ...result, isLeader: side.isLeader });
  await new Promise((resolve) => process.once("message", resolve)); // "close": every replica has finished
  await side.close();
  process.exit(0);
}

if (process.argv[2] === "--pg-child") await child();

// ---------------------------------------------------------------------------------------------
// Parent side.
// ---------------------------------------------------------------------------------------------

function spawnChild(init) {
  // The setup goes in the environment (a message sent before the child listens would be lost;
  // argv would show a database password to ps).
  const env = { ...process.env, GPUPOOL_BENCH_CHILD: JSON.stringify(init) };
  const proc = fork(fileURLToPath(import.meta.url), ["--pg-child"], {
    env,
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const inbox = [];
  const waiters = [];
  let failure = null;
  const deliver = () => {
    while (waiters.length > 0 && (inbox.length > 0 || failure)) {
      const w = waiters.shift();
      if (inbox.length > 0) w.resolve(inbox.shift());
      else w.reject(failure);
    }
  };
  proc.on("message", (m) => {
    inbox.push(m);
    deliver();
  });
  const exited = new Promise((resolve) => {
    proc.once("exit", (code, signal) => {
      if (code !== 0) failure = new Error(`${init.side} process exited with ${code ?? signal}`);
      else failure = new Error(`${init.side} process exited`);
      deliver();
      resolve(code);
    });
  });
  return {
    next: (what, ms = 120_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${init.side}: no ${what} after ${ms / 1000}s`)), ms);
        waiters.push({
          resolve: (m) => (clearTimeout(timer), resolve(m)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        });
        deliver();
      }),
    send: (m) => proc.connected && proc.send(m),
    exited,
    kill: () => proc.exitCode === null && proc.kill(),
  };
}

/** Counters from the server, to explain the figures: transactions, WAL written and WAL flushes. */
async function serverCounters(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const db = await client.query(
      "SELECT xact_commit::float8 AS commits FROM pg_stat_database WHERE datname = current_database()",
    );
    let wal = { bytes: null, syncs: null };
    try {
      const w = await client.query("SELECT wal_bytes::float8 AS bytes, wal_sync::float8 AS syncs FROM pg_stat_wal");
      wal = w.rows[0];
    } catch {
      // pg_stat_wal needs PostgreSQL 14.
    }
    // Statements the replicas sent, BEGIN and COMMIT included (pg_stat_statements, when loaded),
    // less the leadership's background (the leader's renewals, the others' takeover tries, every
    // 250 ms whatever the load) and these counters' own reads.
    let statements = null;
    try {
      const st = await client.query(
        "SELECT COALESCE(SUM(calls), 0)::float8 AS n FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) " +
          "AND query !~* '(leadership|pg_try_advisory_lock|pg_advisory_unlock|pg_stat_|xact_commit)'",
      );
      statements = st.rows[0].n;
    } catch {
      // pg_stat_statements is not loaded (GPUPOOL_BENCH_POSTGRES_URL, or an installation without it).
    }
    return { commits: db.rows[0].commits, walBytes: wal.bytes, walSyncs: wal.syncs, statements };
  } finally {
    await client.end();
  }
}

async function admin(url, sql) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * SEED_LEASES ended leases of as many identities (released, expired, cancelled, failed), written
 * in one INSERT … SELECT into a schema gpupool has migrated, then ANALYZEd: what a pool that has
 * served for a while carries, so no figure is from an empty table.
 */
async function seed(url, schema) {
  if (SEED_LEASES <= 0) return;
  const storage = await openStorage(withSchema(url, schema));
  await storage.close();
  const day = 86_400_000;
  await admin(
    url,
    `INSERT INTO ${schema}.leases (id, app_id, identity_kind, identity_id, tier, size, slots, cost, duration_ms, reserved_ms,
       status, node, device_index, device_uuid, device_name, slot_indexes, queued_at, granted_at, deadline, ended_at, held_ms,
       charged_ms, refunded_ms, failed, window_started_at, quota_ms, overage_ms, hold_micros, charged_micros)
     SELECT 'ls_seed_' || g, NULL, 'ip', '10.9.' || (g / 256) % 256 || '.' || g % 256, 'anonymous', 'large', 8, 8, 1000, 8000,
       (ARRAY['released', 'expired', 'cancelled', 'failed'])[1 + g % 4], CASE WHEN g % 4 < 2 THEN 'bench' END,
       CASE WHEN g % 4 < 2 THEN g % 64 END, NULL, NULL, CASE WHEN g % 4 < 2 THEN '0' END,
       t, CASE WHEN g % 4 < 2 THEN t END, CASE WHEN g % 4 < 2 THEN t + 1000 END, t + 500, CASE WHEN g % 4 < 2 THEN 500 ELSE 0 END,
       CASE WHEN g % 4 < 2 THEN 4000 ELSE 0 END, CASE WHEN g % 4 < 2 THEN 4000 ELSE 8000 END, g % 4 = 3, t, 8000, 0, 0, 0
     FROM (SELECT g, ${Date.now() - 30 * day}::bigint + g * 10 AS t FROM generate_series(1, ${SEED_LEASES}) AS g) s;
     ANALYZE ${schema}.leases;`,
  );
}

/**
 * One measurement: `replicas` processes of `side` on a fresh schema, started one after another
 * (the first leads), all driven over the same wall-clock window; the schema is dropped after.
 */
export async function measure(url, side, replicas, { followersOnly = false, apart = false } = {}) {
  const schema = `bench_${randomBytes(6).toString("hex")}`;
  // apart: each process a pool of its own (its own schema, its own leader): no replica waits for
  // another, nothing is passed between them — the most any split of one pool's work could give.
  const schemas = apart ? Array.from({ length: replicas }, (_, r) => `${schema}_${r}`) : [schema];
  for (const s of schemas)
    if (side === "peer") await admin(url, `CREATE SCHEMA ${s}`);
    else await seed(url, s);
  const before = await serverCounters(url);
  const children = [];
  try {
    // followersOnly: the leader serves no caller; every cycle goes through the other replicas.
    const driving = followersOnly ? replicas - 1 : replicas;
    const perReplica = CALLERS / driving;
    const ready = [];
    for (let r = 0; r < replicas; r++) {
      const d = followersOnly ? r - 1 : r;
      const c = spawnChild({
        side,
        url,
        schema: schemas[apart ? r : 0],
        callers: d < 0 ? 0 : perReplica,
        offset: Math.max(0, d) * perReplica,
        stride: CALLERS,
        warmupMs: WARMUP_MS,
        measureMs: MEASURE_MS,
      });
      children.push(c);
      // The first replica migrates the schema and takes the lead before the others start.
      if (r === 0 || apart) ready.push(await c.next("ready"));
    }
    if (!apart) for (const c of children.slice(1)) ready.push(await c.next("ready"));
    const t0 = Date.now() + 300;
    for (const c of children) c.send({ t0 });
    const results = [];
    for (const c of children) results.push(await c.next("result", WARMUP_MS + MEASURE_MS + 120_000));
    for (const c of children) c.send("close");
    await Promise.all(children.map((c) => c.exited));
    // Backends flush their statistics when their session ends.
    await sleep(700);
    const after = await serverCounters(url);
    const granted = results.reduce((n, x) => n + x.granted, 0);
    const total = results.reduce((n, x) => n + x.total, 0);
    const latencies = results.flatMap((x) => x.latencies).sort((a, b) => a - b);
    const at = (q) =>
      latencies.length === 0 ? null : latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    const kinds = {};
    for (const x of results) for (const [k, n] of Object.entries(x.kinds)) kinds[k] = (kinds[k] ?? 0) + n;
    const perCycle = (a, b) => (a === null || b === null ? null : (after[a] - before[a]) / b);
    return {
      cyclesPerS: granted / (MEASURE_MS / 1000),
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      notGranted: Object.entries(kinds).reduce((n, [k, v]) => (k === "granted" ? n : n + v), 0),
      kinds,
      leaders: ready.filter((x) => x.isLeader === true).length,
      perReplica: results.map((x) => x.granted / (MEASURE_MS / 1000)),
      cpuUsPerCycle: results.reduce((n, x) => n + x.cpuUs, 0) / Math.max(1, granted),
      // Each process's CPU per cycle of the whole measurement (the leader first): where the time goes.
      cpuUsPerCyclePerReplica: results.map((x) => x.cpuUs / Math.max(1, granted)),
      commitsPerCycle: perCycle("commits", total),
      walBytesPerCycle: before.walBytes === null ? null : perCycle("walBytes", total),
      walSyncsPerCycle: before.walSyncs === null ? null : perCycle("walSyncs", total),
      statementsPerCycle: before.statements === null ? null : perCycle("statements", total),
      leaderFirst: ready[0]?.isLeader !== false,
      window: { from: t0 + WARMUP_MS, to: t0 + WARMUP_MS + MEASURE_MS },
    };
  } finally {
    for (const c of children) c.kill();
    for (const s of schemas)
      await admin(url, `DROP SCHEMA IF EXISTS ${s} CASCADE`).catch((err) =>
        console.error(`could not drop schema ${s}: ${err.message}`),
      );
  }
}

/** GPUPOOL_BENCH_POSTGRES_URL, or a throwaway local cluster (null when PostgreSQL is not installed). */
export async function database() {
  const given = process.env.GPUPOOL_BENCH_POSTGRES_URL;
  if (given) return { url: given, where: "GPUPOOL_BENCH_POSTGRES_URL", stop: () => undefined };
  const bin = findPostgresBin();
  if (bin === null) return null;
  // BENCH_PG_SYNCHRONOUS_COMMIT=off shows how much of a figure is waiting for WAL flushes.
  const sc = process.env.BENCH_PG_SYNCHRONOUS_COMMIT;
  const cluster = await startCluster(bin, {
    ...statementCountingSettings(bin),
    ...(sc ? { synchronous_commit: sc } : {}),
  });
  await admin(cluster.url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").catch(() => undefined);
  return {
    url: cluster.url,
    where: `throwaway cluster (${bin}, ${cluster.url.replace(/^postgres:\/\/[^@]*@/, "")})`,
    stop: cluster.stop,
  };
}

const describe = (m) =>
  `${round(m.cyclesPerS)} cycles/s (p50 ${round(m.p50Ms, 2)} ms, p99 ${round(m.p99Ms, 2)} ms, ` +
  `${round(m.cpuUsPerCycle)} µs client CPU, ${m.statementsPerCycle === null ? "?" : round(m.statementsPerCycle, 1)} statements, ${m.commitsPerCycle === null ? "?" : round(m.commitsPerCycle, 2)} transactions, ` +
  `${m.walBytesPerCycle === null ? "?" : Math.round(m.walBytesPerCycle)} WAL bytes, ${m.walSyncsPerCycle === null ? "?" : round(m.walSyncsPerCycle, 3)} WAL syncs per cycle)`;

export async function main() {
  if (CALLERS % REPLICAS !== 0) throw new Error(`BENCH_PG_CALLERS must be a multiple of ${REPLICAS}`);
  const db = await database();
  if (db === null) {
    console.error(HOW_TO_GET_POSTGRES);
    process.exitCode = 1;
    return;
  }
  const server = await (async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const r = await client.query(
        "SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sc",
      );
      return r.rows[0];
    } finally {
      await client.end();
    }
  })();
  const cores = availableParallelism();
  console.log(`PostgreSQL ${server.v} from ${db.where}; fsync=${server.fsync}, synchronous_commit=${server.sc}`);
  console.log(
    `${CALLERS} concurrent callers, ${KEYS} keys, ${WARMUP_MS / 1000}s warm-up + ${MEASURE_MS / 1000}s window per measurement, ${ROUNDS} rounds; ${cores} cores shared by the replicas, the peer and PostgreSQL`,
  );
  const stopOnSignal = () => {
    db.stop();
    process.exit(130);
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);
  try {
    const sides = [
      ["one", "gpupool", 1, {}],
      ["three", "gpupool", REPLICAS, {}],
      // A leader and one follower, every caller on the follower: the cost of a cycle through a follower.
      ["follower", "gpupool", 2, { followersOnly: true }],
      ["peer", "peer", 1, {}],
      // Three pools of one replica each: the ceiling for any way three replicas could share one pool here.
      ["apart", "gpupool", REPLICAS, { apart: true }],
    ];
    const runs = { one: [], three: [], follower: [], peer: [], apart: [] };
    for (let r = 0; r < ROUNDS; r++) {
      // Rotate the order so no side always gets the warmest (or coldest) server.
      for (let s = 0; s < sides.length; s++) {
        const [name, side, replicas, how] = sides[(s + r) % sides.length];
        const m = await measure(db.url, side, replicas, how);
        if (side === "gpupool" && !m.leaderFirst)
          console.error(`warning: the first replica did not lead in the ${name} measurement`);
        runs[name].push(m);
        if (m.notGranted > 0)
          console.error(
            `warning: ${m.notGranted} admissions were not granted in the window (${JSON.stringify(m.kinds)})`,
          );
        if (name === "three" && m.leaders !== 1)
          console.error(`warning: ${m.leaders} replicas led during the 3-replica measurement (expected 1)`);
      }
      const [o, t, f, p, a] = [runs.one, runs.three, runs.follower, runs.peer, runs.apart].map((x) => x.at(-1));
      console.log(`round ${r + 1}:`);
      console.log(`  gpupool, 1 replica:  ${describe(o)}`);
      console.log(
        `  gpupool, 3 replicas: ${describe(t)}; per replica ${t.perReplica.map((x) => round(x)).join(" / ")} (leader first)`,
      );
      console.log(`  gpupool, every cycle through a follower (2 replicas): ${describe(f)}`);
      console.log(`  RateLimiterPostgres: ${describe(p)}`);
      console.log(
        `  3 pools of 1 replica each (the ceiling): ${describe(a)}; per pool ${a.perReplica.map((x) => round(x)).join(" / ")}`,
      );
    }
    const med = (name, key) => {
      const xs = runs[name].map((m) => m[key]).filter((x) => x !== null);
      return xs.length === 0 ? null : median(xs);
    };
    const one = med("one", "cyclesPerS");
    const three = med("three", "cyclesPerS");
    const peer = med("peer", "cyclesPerS");
    const r2 = (x) => (x === null ? null : round(x, 2));
    const result = {
      bench: "admission",
      storage: "postgres",
      postgres_version: server.v,
      postgres_fsync: server.fsync,
      postgres_synchronous_commit: server.sc,
      keys: KEYS,
      concurrent_callers: CALLERS,
      rounds: ROUNDS,
      window_s: MEASURE_MS / 1000,
      cores,
      note: `the 3 replicas, the peer and PostgreSQL all share these ${cores} cores; ${CALLERS} callers in total, ${CALLERS / REPLICAS} per replica with 3`,
      inprocess_cycles_per_s: round(one),
      replicas3_cycles_per_s: round(three),
      peer: `rate-limiter-flexible RateLimiterPostgres (pg Pool, max ${PEER_POOL}) consume+reward`,
      peer_cycles_per_s: round(peer),
      inprocess_ratio: r2(one / peer),
      replicas3_ratio: r2(three / peer),
      inprocess_p50_ms: r2(med("one", "p50Ms")),
      inprocess_p99_ms: r2(med("one", "p99Ms")),
      replicas3_p50_ms: r2(med("three", "p50Ms")),
      replicas3_p99_ms: r2(med("three", "p99Ms")),
      peer_p50_ms: r2(med("peer", "p50Ms")),
      peer_p99_ms: r2(med("peer", "p99Ms")),
      // PostgreSQL's counters over each measurement (whole run of its processes, warm-up included),
      // per cycle: transactions (pg_stat_database.xact_commit, which also counts a listening
      // session's read of each notification) and WAL flushes (pg_stat_wal.wal_sync).
      inprocess_transactions_per_cycle: r2(med("one", "commitsPerCycle")),
      replicas3_transactions_per_cycle: r2(med("three", "commitsPerCycle")),
      peer_transactions_per_cycle: r2(med("peer", "commitsPerCycle")),
      inprocess_wal_syncs_per_cycle: r2(med("one", "walSyncsPerCycle")),
      replicas3_wal_syncs_per_cycle: r2(med("three", "walSyncsPerCycle")),
      peer_wal_syncs_per_cycle: r2(med("peer", "walSyncsPerCycle")),
      // Per cycle through the leader (1 replica) and through a follower (a leader and a follower,
      // every caller on the follower): statements (pg_stat_statements: BEGIN, COMMIT, NOTIFY
      // included; the leadership's background polls excluded), transactions and WAL flushes.
      seeded_ended_leases: SEED_LEASES,
      follower_cycles_per_s: round(med("follower", "cyclesPerS")),
      leader_path_statements_per_cycle: r2(med("one", "statementsPerCycle")),
      follower_path_statements_per_cycle: r2(med("follower", "statementsPerCycle")),
      leader_path_transactions_per_cycle: r2(med("one", "commitsPerCycle")),
      follower_path_transactions_per_cycle: r2(med("follower", "commitsPerCycle")),
      leader_path_wal_syncs_per_cycle: r2(med("one", "walSyncsPerCycle")),
      follower_path_wal_syncs_per_cycle: r2(med("follower", "walSyncsPerCycle")),
      replicas3_vs_1: r2(three / one),
      // Three pools apart (one process and schema each, 8 callers each): what 3 processes can do
      // beside PostgreSQL on these cores when nothing is shared — the ceiling for 3 replicas.
      pools3_apart_cycles_per_s: round(med("apart", "cyclesPerS")),
      pools3_apart_vs_1: r2(med("apart", "cyclesPerS") / one),
      replicas3_not_granted: runs.three.reduce((n, m) => n + m.notGranted, 0),
    };
    console.log(JSON.stringify(result));
  } finally {
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
    db.stop();
  }
}
