// Edge benchmark: requests/s and added latency of a request proxied through `gpupool edge`
// (identity resolved, X-IP-Token injected from the edge's cache) against the same request sent
// straight to the upstream app, in the same run. The upstream runs in its own process, the load
// generator (autocannon) in another; the edge and the control plane share this one.
import { fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { Buffer } from "node:buffer";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startEdge } from "@gpupool/edge";
import { createServer, normalizeConfig } from "@gpupool/server";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_HTTP_SECONDS ?? 5);
const CONNECTIONS = 16;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

// Child roles: the upstream app, and the load generator.
if (process.argv[2] === "--upstream") {
  const body = JSON.stringify({ hello: "world" });
  const server = createHttpServer((req, res) => {
    // Reads the header like a real app would, so dropping it would show up as a failure.
    const ok = typeof req.headers["x-ip-token"] === "string" || req.url === "/direct";
    res.writeHead(ok ? 200 : 400, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
}
if (process.argv[2] === "--load") {
  const { default: autocannon } = await import("autocannon");
  process.once("message", async (opts) => {
    if (opts.connections === 1) return process.send(await sequential(opts.url, opts.duration));
    const r = await autocannon({ url: opts.url, connections: opts.connections, duration: opts.duration });
    process.send({
      requestsPerS: r.requests.average,
      p50Ms: r.latency.p50,
      p99Ms: r.latency.p99,
      non2xx: r.non2xx,
      errors: r.errors,
      total: r.requests.total,
    });
  });
}

/**
 * One client, one request at a time, over a kept-alive connection, timed with performance.now():
 * autocannon reports whole milliseconds, too coarse for a proxy's sub-millisecond cost.
 */
async function sequential(url, seconds) {
  const { Agent, request } = await import("node:http");
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const once = () =>
    new Promise((resolve, reject) => {
      const req = request(url, { agent }, (res) => {
        res.resume();
        res.once("end", () => resolve(res.statusCode));
      });
      req.once("error", reject);
      req.end();
    });
  for (let i = 0; i < 200; i++) await once(); // warm-up
  const times = [];
  let non2xx = 0;
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) {
    const t0 = performance.now();
    const status = await once();
    times.push(performance.now() - t0);
    if (status < 200 || status > 299) non2xx++;
  }
  agent.destroy();
  times.sort((a, b) => a - b);
  const at = (q) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))] * 1000) / 1000;
  return {
    requestsPerS: times.length / seconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    non2xx,
    errors: 0,
    total: times.length,
  };
}

function child(args) {
  return fork(fileURLToPath(import.meta.url), args, { stdio: ["ignore", "inherit", "inherit", "ipc"] });
}

function load(opts) {
  return new Promise((resolve, reject) => {
    const c = child(["--load"]);
    c.once("message", (m) => {
      c.kill();
      resolve(m);
    });
    c.once("error", reject);
    c.send(opts);
  });
}

/** Throughput with CONNECTIONS concurrent clients, and latency with one (no queueing in it). */
async function measure(url) {
  const busy = await load({ url, connections: CONNECTIONS, duration: SECONDS });
  const single = await load({ url, connections: 1, duration: Math.max(2, Math.ceil(SECONDS / 2)) });
  if (busy.non2xx + busy.errors + single.non2xx + single.errors > 0)
    console.error(
      `warning: ${busy.non2xx + single.non2xx} non-2xx and ${busy.errors + single.errors} errors at ${url}`,
    );
  return {
    requestsPerS: busy.requestsPerS,
    p99Busy: busy.p99Ms,
    p50Ms: single.p50Ms,
    p99Ms: single.p99Ms,
    total: busy.total + single.total,
  };
}

export async function main() {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-bench-edge-"));
  const upstream = child(["--upstream"]);
  let pool;
  let edge;
  try {
    const { port } = await new Promise((resolve) => upstream.once("message", resolve));
    const upstreamUrl = `http://127.0.0.1:${port}`;
    const config = normalizeConfig({
      server: { port: 0 },
      storage: { url: `sqlite:${join(dir, "gpupool.db")}` },
      log: { level: "silent" },
    });
    const admin = `bench-admin-${process.pid}`;
    pool = await createServer(config, { adminToken: admin, logger: pino({ level: "silent" }) });
    const poolUrl = await pool.listen();
    const post = async (path, body) =>
      (
        await pool.app.inject({
          method: "POST",
          url: path,
          headers: { authorization: `Bearer ${admin}` },
          payload: body,
        })
      ).json();
    await post("/v1/admin/users", { name: "owner", tier: "pro" });
    await post("/v1/admin/apps", { name: "bench", owner: "owner" });
    const { key } = await post("/v1/admin/edges", { name: "bench-edge" });
    edge = await startEdge({
      server: poolUrl,
      edgeKey: key,
      apps: [{ name: "bench", upstream: new URL(upstreamUrl) }],
      port: 0,
    });

    const direct = [];
    const proxied = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate the order so neither side always gets the warmer machine.
      const pair = r % 2 === 0 ? ["direct", "proxied"] : ["proxied", "direct"];
      for (const side of pair) {
        if (side === "direct") direct.push(await measure(`${upstreamUrl}/direct`));
        else {
          // This process's CPU per proxied request (the edge; the control plane here is idle once the
          // token is cached): what the edge itself costs, apart from the machine's other two processes.
          const before = process.cpuUsage();
          const m = await measure(`${edge.url}/apps/bench/hello`);
          const used = process.cpuUsage(before);
          proxied.push({ ...m, cpuUsPerRequest: (used.user + used.system) / m.total });
        }
      }
      const d = direct.at(-1);
      const p = proxied.at(-1);
      console.log(
        `round ${r + 1}: direct ${round(d.requestsPerS)} req/s (1 conn p50 ${d.p50Ms} ms, p99 ${d.p99Ms} ms); ` +
          `through the edge ${round(p.requestsPerS)} req/s (1 conn p50 ${p.p50Ms} ms, p99 ${p.p99Ms} ms; ${round(p.cpuUsPerRequest)} µs edge CPU/request)`,
      );
    }
    const rps = median(proxied.map((p) => p.requestsPerS));
    const directRps = median(direct.map((d) => d.requestsPerS));
    const p50 = median(proxied.map((p) => p.p50Ms));
    const p99 = median(proxied.map((p) => p.p99Ms));
    const dp50 = median(direct.map((d) => d.p50Ms));
    const dp99 = median(direct.map((d) => d.p99Ms));
    console.log(
      JSON.stringify({
        bench: "edge",
        rounds: ROUNDS,
        seconds: SECONDS,
        connections: CONNECTIONS,
        viewer: "anonymous (ip), token from the edge's cache",
        proxied_requests_per_s: round(rps),
        direct_requests_per_s: round(directRps),
        ratio: round(rps / directRps, 2),
        proxied_p50_ms: p50,
        proxied_p99_ms: p99,
        direct_p50_ms: dp50,
        direct_p99_ms: dp99,
        added_p50_ms: round(p50 - dp50, 2),
        added_p99_ms: round(p99 - dp99, 2),
        edge_cpu_us_per_request: round(median(proxied.map((p) => p.cpuUsPerRequest))),
        proxied_p99_ms_at_16_connections: median(proxied.map((p) => p.p99Busy)),
        direct_p99_ms_at_16_connections: median(direct.map((d) => d.p99Busy)),
      }),
    );
  } finally {
    await edge?.close();
    await pool?.close();
    upstream.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}
