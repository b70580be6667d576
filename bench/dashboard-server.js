// A gpupool server in its own process for the dashboard benchmark, so its CPU and memory are its
// own: `node dashboard-server.js <checkout root> <dir> <admin token>`; answers "stats" over IPC.
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [root, dir, admin] = process.argv.slice(2);
const { createServer, normalizeConfig } = await import(pathToFileURL(join(root, "packages/server/dist/index.js")).href);
const { pino } = await import("pino");

const config = normalizeConfig({
  server: { port: 0 },
  storage: { url: `sqlite:${join(dir, "gpupool.db")}` },
  quota: { tiers: { anonymous: { quota: "7d", max_duration: "60s" }, pro: { quota: "7d", max_duration: "60s" } } },
  // One slot: one call holds it and every other waits, so the queue is as deep as the bench makes it.
  pool: { simulated: [{ node: "bench", gpus: 1, slots_per_gpu: 1 }] },
  queue: { timeout: "1h", max_length: 100_000, predicted_wait: false },
  log: { level: "silent" },
});
const server = await createServer(config, { adminToken: admin, logger: pino({ level: "silent" }) });
const url = await server.listen();
process.on("message", (m) => {
  if (m === "stats") {
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    process.send({ cpuUs: cpu.user + cpu.system, rss: mem.rss, heapUsed: mem.heapUsed });
  } else if (m === "stop") void server.close().then(() => process.exit(0));
});
process.send({ url });
