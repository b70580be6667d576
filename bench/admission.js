// Admission benchmark: gpupool's durable admit+release cycle against rate-limiter-flexible's
// RateLimiterSQLite (consume + reward) on the same kind of SQLite file, in-process; then the
// lease+release HTTP API against a no-op route of the same framework (Fastify), over loopback.
// `--baseline DIR` (a built checkout of another version, e.g. `git worktree add ../old main~10 &&
// (cd ../old && npm ci && npm run build)`) measures that build too, in the same rounds, with its own
// copy of this script, and reports this build / baseline paired per round.
import { execSync, fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import Fastify from "fastify";
import { pino } from "pino";
import { RateLimiterSQLite } from "rate-limiter-flexible";
import { assemblePool, createServer, normalizeConfig, openStorage, systemClock } from "@gpupool/server";

export const KEYS = 100;
const CYCLES = Number(process.env.BENCH_CYCLES ?? 20_000);
// Rounds on a small shared machine swing by ±30%: five in-process rounds give a stable median.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const HTTP_ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 5);
const HTTP_SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 5);
const CONNECTIONS = 16;
const CONCURRENT = 16;

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
export const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

// A policy where quota never runs out and a slot is always free, so every cycle is a grant.
export const benchConfig = (storageUrl, port = 0) =>
  normalizeConfig({
    server: { port },
    storage: { url: storageUrl },
    quota: {
      tiers: {
        anonymous: { quota: "7d", max_duration: "60s" },
        pro: { quota: "7d", priority: 3, max_duration: "60s" },
      },
    },
    pool: { simulated: [{ node: "bench", gpus: 64 }] },
    log: { level: "silent" },
  });
const config = (dir, port = 0) => benchConfig(`sqlite:${join(dir, "gpupool.db")}`, port);

async function gpupoolInProcess(dir) {
  const c = config(dir);
  const storage = await openStorage(c.storage.url);
  // No metrics, as the engine was measured before it recorded them in-process (the HTTP side has them).
  const pool = assemblePool(c, storage, { clock: systemClock, log: pino({ level: "silent" }), recordMetrics: false });
  await pool.replica.start();
  const result = await measure(admitReleaseCycle(pool.replica, c.policy));
  pool.stop();
  await storage.close();
  return result;
}

export const keyOf = (i) => `10.0.${(i % KEYS) >> 8}.${i % KEYS}`;

/**
 * One durable cycle for caller-chosen i: admit a large lease for identity keyOf(i) (a grant on
 * the bench's pool), then release it, through the pool's lease lifecycle (no HTTP). Resolves to the admission's kind. A queued admission throws
 * unless `allowQueued` (a follower replica answers "queued" when the leader's word came too late;
 * the lease is then cancelled).
 */
export function admitReleaseCycle(leases, policy, { allowQueued = false } = {}) {
  const size = policy.sizes.large;
  return async (i) => {
    const r = await leases.admit({
      appId: null,
      charged: { kind: "ip", id: keyOf(i) },
      via: "ip-token",
      durationMs: 1000,
      size,
      queue: true,
      node: null,
      idempotency: null,
    });
    if (r.kind === "denied" || (r.kind === "queued" && !allowQueued))
      throw new Error(`expected a grant, got ${r.kind}${r.kind === "denied" ? `: ${r.problem.detail}` : ""}`);
    await leases.release(r.lease.id, false);
    return r.kind;
  };
}

/** Microseconds of this process's CPU time (user + system) since `from`. */
const cpuSince = (from) => {
  const d = process.cpuUsage(from);
  return d.user + d.system;
};

/**
 * Cycles/s for one caller awaiting each cycle (sequential), and for CONCURRENT callers each
 * doing that on their own keys — the shape of a server handling many requests at once. Also the
 * CPU time per concurrent cycle (µs): on a machine shared with other work the throughput swings,
 * what a cycle costs much less.
 */
async function measure(cycle) {
  const sequential = async (n, offset = 0, stride = 1) => {
    for (let i = 0; i < n; i++) await cycle(offset + i * stride);
  };
  await sequential(1000); // warm-up
  let t0 = performance.now();
  await sequential(CYCLES);
  const seq = CYCLES / ((performance.now() - t0) / 1000);
  const per = Math.ceil(CYCLES / CONCURRENT);
  t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(Array.from({ length: CONCURRENT }, (_, w) => sequential(per, w, CONCURRENT)));
  const conc = (per * CONCURRENT) / ((performance.now() - t0) / 1000);
  return { seq, conc, cpuUsPerCycle: cpuSince(cpu0) / (per * CONCURRENT) };
}

async function peerInProcess(dir) {
  const db = new Database(join(dir, "peer.db"));
  // Same durability settings as gpupool's store, so the comparison is like for like.
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  const limiter = await new Promise((resolve, reject) => {
    const l = new RateLimiterSQLite(
      { storeClient: db, storeType: "better-sqlite3", tableName: "rl", points: 1_000_000_000, duration: 86_400 },
      (err) => (err ? reject(err) : resolve(l)),
    );
  });
  const result = await measure(async (i) => {
    const key = keyOf(i);
    await limiter.consume(key, 1);
    await limiter.reward(key, 1);
  });
  db.close();
  return result;
}

const THIS_SCRIPT = fileURLToPath(import.meta.url);

/**
 * Runs one in-process measurement in a child process of this same script — or of another
 * build's copy of it (`--baseline`), which measures that build with its own code.
 */
function isolated(side, dir, script = THIS_SCRIPT) {
  // So that neither side pays for the kernel writing back the other's dirty pages.
  execSync("sync");
  return new Promise((resolve, reject) => {
    const child = fork(script, ["--inprocess", side, dir], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    child.once("message", (m) => resolve(m));
    child.once("error", reject);
    child.once("exit", (code) => code !== 0 && reject(new Error(`${side} measurement exited with ${code}`)));
  });
}

if (process.argv[2] === "--inprocess") {
  const [, , , side, dir] = process.argv;
  const result =
    side === "peer"
      ? await peerInProcess(dir)
      : side === "billing" || side === "user"
        ? await (
            await import("./admission-billing.js")
          ).billingInProcess(dir, measure, KEYS, side === "billing" ? "credits" : "quota")
        : await gpupoolInProcess(dir);
  process.send(result, () => process.exit(0));
}

function load(opts) {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL("./http-load.js", import.meta.url)), {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    child.once("message", (m) => {
      child.kill();
      resolve(m);
    });
    child.once("error", reject);
    child.send(opts);
  });
}

/**
 * Serves one side of an HTTP round in a child process of this same script, like the in-process
 * measurements (run in the bench's own process, the no-op served 9.9–10.4k requests/s right
 * after the lease server and 11.2–14.5k before it, in one run): "ready" with its URL (and an app key), then its CPU time from
 * "start" to "stop", which explains the ratio, and how busy its event loop was (near 1 when the
 * load saturates it, so that the ratio compares capacities rather than latencies).
 */
if (process.argv[2] === "--serve") {
  const [, , , side, dir] = process.argv;
  let ready;
  let stop;
  if (side === "noop") {
    const noop = Fastify({ logger: false });
    noop.post("/noop", async () => ({ ok: true }));
    ready = { url: await noop.listen({ host: "127.0.0.1", port: 0 }), key: null };
    stop = () => noop.close();
  } else {
    const admin = `bench-admin-${process.pid}`;
    const c = config(dir);
    // "traced": requests traced (BENCH_TRACE_RATIO of them, default all), spans sent to the bench's OTLP sink.
    const tracing = {
      ...c.tracing,
      endpoint: process.env.BENCH_OTLP_URL,
      sampleRatio: Number(process.env.BENCH_TRACE_RATIO ?? 1),
    };
    const traced = side === "traced" ? { ...c, tracing } : c;
    const server = await createServer(traced, { adminToken: admin, logger: pino({ level: "silent" }) });
    const url = await server.listen();
    const now = Date.now();
    const post = async (path, body) =>
      (
        await server.app.inject({
          method: "POST",
          url: path,
          headers: { authorization: `Bearer ${admin}` },
          payload: body,
        })
      ).json();
    await post("/v1/admin/users", { name: `owner${now}`, tier: "pro" });
    const { key } = await post("/v1/admin/apps", { name: `bench${now}`, owner: `owner${now}` });
    ready = { url, key };
    stop = () => server.close();
  }
  let before;
  let elu;
  process.on("message", async (m) => {
    if (m === "start") {
      before = process.cpuUsage();
      elu = performance.eventLoopUtilization();
      process.send("started");
    } else if (m === "stop") {
      const used = process.cpuUsage(before);
      const busy = performance.eventLoopUtilization(elu).utilization;
      await stop();
      process.send({ cpuUs: used.user + used.system, busy }, () => process.exit(0));
    }
  });
  process.send({ ready });
}

/** Serves `side` in a fresh process and loads it; the load result plus the server's CPU per request. */
async function serveAndLoad(side, dir, script = THIS_SCRIPT) {
  execSync("sync");
  const server = fork(script, ["--serve", side, dir], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const next = () =>
    new Promise((resolve, reject) => {
      server.once("message", resolve);
      server.once("error", reject);
    });
  const { ready } = await next();
  server.send("start");
  await next();
  const result = await load({
    url: ready.url,
    mode: side === "noop" ? "noop" : "lease",
    key: ready.key,
    connections: CONNECTIONS,
    duration: HTTP_SECONDS,
  });
  server.send("stop");
  const { cpuUs, busy } = await next();
  if (side !== "noop" && (result.non2xx > 0 || result.errors > 0))
    console.error(`warning: ${result.non2xx} non-2xx and ${result.errors} errors in the lease run`);
  return {
    ...result,
    cpuUsPerRequest: cpuUs / result.total,
    busy,
    clientCpuUsPerRequest: result.clientCpuUs / result.total,
  };
}

/**
 * One HTTP round: the lease API, the no-op ceiling and (with a baseline) the baseline build's
 * lease API, back to back, in an order that rotates with the round.
 */
async function httpRound(dir, r, baseline) {
  const sides = [
    ["lease", () => serveAndLoad("lease", mkdtempSync(join(dir, "l")))],
    ["ceiling", () => serveAndLoad("noop", mkdtempSync(join(dir, "n")))],
    ...(baseline ? [["baseline", () => serveAndLoad("lease", mkdtempSync(join(dir, "b")), baseline)]] : []),
    ...(process.env.BENCH_OTLP_URL ? [["traced", () => serveAndLoad("traced", mkdtempSync(join(dir, "t")))]] : []),
  ];
  const out = {};
  for (let i = 0; i < sides.length; i++) {
    const [name, run] = sides[(i + r) % sides.length];
    out[name] = await run();
  }
  return out;
}

/** `--baseline DIR`: a built checkout of another version (e.g. the one before a change), measured in the same rounds. */
function baselineScript(args) {
  const at = args.indexOf("--baseline");
  if (at < 0) return null;
  const dir = args[at + 1];
  if (!dir) throw new Error("--baseline needs the directory of a built checkout");
  return join(dir, "bench", "admission.js");
}

/** `--tracing`: an OTLP/HTTP sink that takes and drops spans, for the "traced" side of the HTTP rounds. */
async function otlpSink() {
  const { createServer: createHttpServer } = await import("node:http");
  let exports = 0;
  const sink = createHttpServer((req, res) => {
    req.resume();
    req.on("end", () => {
      exports++;
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise((resolve) => sink.listen(0, "127.0.0.1", resolve));
  process.env.BENCH_OTLP_URL = `http://127.0.0.1:${sink.address().port}/v1/traces`;
  return { exports: () => exports, close: () => new Promise((resolve) => sink.close(resolve)) };
}

export async function main(args = []) {
  const baseline = baselineScript(args);
  const sink = args.includes("--tracing") ? await otlpSink() : null;
  const dir = mkdtempSync(join(tmpdir(), "gpupool-bench-"));
  try {
    const ours = [];
    const peer = [];
    const old = [];
    const billing = [];
    const users = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Each measurement runs in a fresh process: garbage and JIT state left by the other side
      // otherwise slowed whichever ran second by up to 40%. The order rotates with the round so
      // that no side always gets the warmer machine; the credits path and its peer (the same users
      // paid from quota) run one after the other, and swap places every other round, so that neither
      // always follows the other (rotation alone put the credits path first of the two every round).
      const pair = [
        () => isolated("billing", mkdtempSync(join(dir, "c"))).then((m) => billing.push(m)),
        () => isolated("user", mkdtempSync(join(dir, "u"))).then((m) => users.push(m)),
      ];
      const sides = [
        () => isolated("gpupool", mkdtempSync(join(dir, "g"))).then((m) => ours.push(m)),
        () => isolated("peer", mkdtempSync(join(dir, "p"))).then((m) => peer.push(m)),
        async () => {
          for (const side of r % 2 === 0 ? pair : [...pair].reverse()) await side();
        },
        ...(baseline
          ? [() => isolated("gpupool", mkdtempSync(join(dir, "b")), baseline).then((m) => old.push(m))]
          : []),
      ];
      for (let i = 0; i < sides.length; i++) await sides[(i + r) % sides.length]();
      const o = ours.at(-1);
      const p = peer.at(-1);
      const b = baseline
        ? `; baseline build ${round(old.at(-1).conc)} cycles/s (this build / baseline ${round(o.conc / old.at(-1).conc, 2)})`
        : "";
      console.log(
        `round ${r + 1}: ${CONCURRENT} concurrent callers: gpupool ${round(o.conc)} cycles/s, RateLimiterSQLite ${round(p.conc)} cycles/s (ratio ${round(o.conc / p.conc, 2)}); one caller: gpupool ${round(o.seq)}, RateLimiterSQLite ${round(p.seq)}; every call paid from credits ${round(billing.at(-1).conc)} cycles/s (${round(billing.at(-1).conc / users.at(-1).conc, 2)} of the same users paid from quota, ${round(users.at(-1).conc)} cycles/s; ${round(billing.at(-1).conc / o.conc, 2)} of the anonymous path; CPU per cycle ${round(billing.at(-1).cpuUsPerCycle)} / ${round(users.at(-1).cpuUsPerCycle)} / ${round(o.cpuUsPerCycle)} µs)${b}`,
      );
    }
    const http = [];
    for (let r = 0; r < HTTP_ROUNDS; r++) {
      const h = await httpRound(mkdtempSync(join(dir, "h")), r, baseline);
      http.push(h);
      console.log(
        `http round ${r + 1}: lease+release ${round(h.lease.requestsPerS)} req/s (p99 ${h.lease.p99Ms} ms, ${round(h.lease.cpuUsPerRequest)} µs server CPU/request, event loop ${round(h.lease.busy * 100)}% busy), ` +
          `no-op ceiling ${round(h.ceiling.requestsPerS)} req/s (${round(h.ceiling.cpuUsPerRequest)} µs/request, ${round(h.ceiling.busy * 100)}% busy), ratio ${round(h.lease.requestsPerS / h.ceiling.requestsPerS, 2)}` +
          (h.baseline
            ? `; baseline build ${round(h.baseline.requestsPerS)} req/s (${round(h.baseline.cpuUsPerRequest)} µs/request; this build / baseline ${round(h.lease.requestsPerS / h.baseline.requestsPerS, 2)})`
            : "") +
          (h.traced
            ? `; traced ${round(h.traced.requestsPerS)} req/s (p99 ${h.traced.p99Ms} ms, ${round(h.traced.cpuUsPerRequest)} µs/request; traced / untraced ${round(h.traced.requestsPerS / h.lease.requestsPerS, 2)})`
            : ""),
      );
    }
    // Ratios are the median of each round's ratio: the two sides of a round ran back to back, so
    // their ratio is what a slow or fast minute of this shared machine changes least.
    const inprocessRatio = median(ours.map((o, i) => o.conc / peer[i].conc));
    const inprocessSeqRatio = median(ours.map((o, i) => o.seq / peer[i].seq));
    const httpRatio = median(http.map((h) => h.lease.requestsPerS / h.ceiling.requestsPerS));
    const inprocess = median(ours.map((o) => o.conc));
    const peerMedian = median(peer.map((p) => p.conc));
    const inprocessSeq = median(ours.map((o) => o.seq));
    const peerSeq = median(peer.map((p) => p.seq));
    const httpRps = median(http.map((h) => h.lease.requestsPerS));
    const ceilingRps = median(http.map((h) => h.ceiling.requestsPerS));
    const result = {
      bench: "admission",
      storage: "sqlite",
      keys: KEYS,
      cycles: CYCLES,
      rounds: ROUNDS,
      http_rounds: HTTP_ROUNDS,
      connections: CONNECTIONS,
      inprocess_cycles_per_s: round(inprocess),
      peer: "rate-limiter-flexible RateLimiterSQLite (better-sqlite3, WAL, synchronous=NORMAL) consume+reward",
      peer_cycles_per_s: round(peerMedian),
      inprocess_ratio: round(inprocessRatio, 2),
      // Every call past the quota, paid from credits (hold, settlement, wallet transactions), paired
      // per round with the same signed-in users paid from quota (its peer: a user's call writes the
      // user's lease and usage index entries, an anonymous one does not) and with the anonymous path.
      billing_inprocess_cycles_per_s: round(median(billing.map((b) => b.conc))),
      user_inprocess_cycles_per_s: round(median(users.map((u) => u.conc))),
      billing_vs_user: round(median(billing.map((b, i) => b.conc / users[i].conc)), 2),
      billing_cpu_vs_user: round(median(billing.map((b, i) => users[i].cpuUsPerCycle / b.cpuUsPerCycle)), 2),
      billing_sequential_vs_user: round(median(billing.map((b, i) => b.seq / users[i].seq)), 2),
      billing_vs_plain: round(median(billing.map((b, i) => b.conc / ours[i].conc)), 2),
      billing_sequential_vs_plain: round(median(billing.map((b, i) => b.seq / ours[i].seq)), 2),
      inprocess_concurrent_callers: CONCURRENT,
      inprocess_sequential_cycles_per_s: round(inprocessSeq),
      peer_sequential_cycles_per_s: round(peerSeq),
      inprocess_sequential_ratio: round(inprocessSeqRatio, 2),
      http_requests_per_s: round(httpRps),
      http_ceiling_requests_per_s: round(ceilingRps),
      http_ratio: round(httpRatio, 2),
      http_p99_ms: median(http.map((h) => h.lease.p99Ms)),
      http_server_cpu_us_per_request: round(median(http.map((h) => h.lease.cpuUsPerRequest))),
      http_ceiling_server_cpu_us_per_request: round(median(http.map((h) => h.ceiling.cpuUsPerRequest))),
      // Event-loop utilisation of each server under the load: both near 1 means both were saturated.
      http_server_event_loop_busy: round(median(http.map((h) => h.lease.busy)), 2),
      http_ceiling_server_event_loop_busy: round(median(http.map((h) => h.ceiling.busy)), 2),
      http_client_cpu_us_per_request: round(median(http.map((h) => h.lease.clientCpuUsPerRequest))),
      http_ceiling_client_cpu_us_per_request: round(median(http.map((h) => h.ceiling.clientCpuUsPerRequest))),
      // Against the baseline build, paired per round like the other ratios.
      ...(baseline
        ? {
            baseline: baseline,
            baseline_inprocess_cycles_per_s: round(median(old.map((b) => b.conc))),
            inprocess_vs_baseline: round(median(ours.map((o, i) => o.conc / old[i].conc)), 2),
            baseline_http_requests_per_s: round(median(http.map((h) => h.baseline.requestsPerS))),
            http_vs_baseline: round(median(http.map((h) => h.lease.requestsPerS / h.baseline.requestsPerS)), 2),
            baseline_http_server_cpu_us_per_request: round(median(http.map((h) => h.baseline.cpuUsPerRequest))),
          }
        : {}),
      // With --tracing: every request traced and exported (OTLP/HTTP JSON to a local sink), paired per round.
      ...(sink
        ? {
            traced_http_requests_per_s: round(median(http.map((h) => h.traced.requestsPerS))),
            traced_vs_untraced: round(median(http.map((h) => h.traced.requestsPerS / h.lease.requestsPerS)), 2),
            traced_http_server_cpu_us_per_request: round(median(http.map((h) => h.traced.cpuUsPerRequest))),
            traced_http_p99_ms: median(http.map((h) => h.traced.p99Ms)),
            otlp_exports: sink.exports(),
          }
        : {}),
    };
    console.log(JSON.stringify(result));
  } finally {
    await sink?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
