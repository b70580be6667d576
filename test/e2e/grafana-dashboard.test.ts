import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@gpupool/sdk";
import type { Lease } from "@gpupool/sdk";
import { startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

const ADMIN = "grafana-dashboard-admin-token-0123456789";
const DASHBOARD = new URL("../../deploy/grafana/gpupool.json", import.meta.url);
/** Labels Prometheus adds when it scrapes (not the server's to export). */
const SCRAPE_LABELS = new Set(["instance", "job"]);
/** PromQL words that are not metric names or labels. */
const PROMQL_WORDS = new Set([
  "sum",
  "max",
  "min",
  "avg",
  "count",
  "by",
  "without",
  "rate",
  "irate",
  "increase",
  "histogram_quantile",
]);

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every PromQL expression of the dashboard, with its panel's title. */
function queries(): { panel: string; expr: string }[] {
  const dash = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: Panel[] };
  const out: { panel: string; expr: string }[] = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ panel: p.title ?? "?", expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(dash.panels);
  return out;
}

/** The metric names an expression reads, and the labels it groups by or matches on. */
function parse(expr: string): { metrics: string[]; labels: string[] } {
  const bare = expr.replace(/\[[^\]]*\]/g, ""); // range selectors: [$__rate_interval]
  const labels = new Set<string>();
  for (const m of bare.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g))
    for (const l of m[1]!.split(",")) if (l.trim()) labels.add(l.trim());
  for (const m of bare.matchAll(/\{([^}]*)\}/g))
    for (const l of m[1]!.split(",")) if (l.trim()) labels.add(l.split(/[!=~]/)[0]!.trim());
  const withoutGroups = bare.replace(/\b(?:by|without)\s*\([^)]*\)/g, "").replace(/\{[^}]*\}/g, "");
  const metrics = [...withoutGroups.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b/g)]
    .map((m) => m[1]!)
    .filter((w) => !PROMQL_WORDS.has(w));
  return { metrics: [...new Set(metrics)], labels: [...labels].filter((l) => !SCRAPE_LABELS.has(l)) };
}

/** The exposition's series: metric name → the label names seen on its samples. */
function series(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s/.exec(line);
    if (!m) continue;
    const labels = out.get(m[1]!) ?? new Set<string>();
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(l[1]!);
    out.set(m[1]!, labels);
  }
  return out;
}

describe("the Grafana dashboard (deploy/grafana/gpupool.json)", () => {
  let dir: string;
  let server: ServerProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gpupool-grafana-"));
    server = await startServerBinary(["--storage", testStorage(join(dir, "grafana.db"))], {
      GPUPOOL_ADMIN_TOKEN: ADMIN,
    });
  });

  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("queries only metrics a running server exports, with the labels the panels group by", async () => {
    const admin = createClient({ url: server.url, adminToken: ADMIN });
    await admin.admin.createUser({ name: "ada", tier: "pro" });
    const app = await admin.admin.createApp({ name: "painter", owner: "ada" });
    const pool = createClient({ url: server.url, appKey: app.key });
    const { token } = await admin.ipToken({ app: app.id, user: "ada" });
    const call = { duration: 10, ipToken: token };
    // Fill the pool (two simulated GPUs × 2 slots), end one lease, and leave one request queued.
    const held: Lease[] = await Promise.all([1, 2, 3, 4].map(() => pool.acquire(call)));
    await pool.release(held[0]!.id);
    held[0] = await pool.acquire(call);
    const queued = pool.acquire(call);
    queued.catch(() => undefined); // awaited below; not an unhandled rejection if the test fails first
    // A refusal: an X-IP-Token that is not one.
    await expect(pool.acquire({ duration: 10, ipToken: "not-a-token" })).rejects.toThrow();

    let text = "";
    for (let i = 0; i < 200 && !/^gpupool_queue_depth_by_tier\{/m.test(text); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      text = await (await fetch(`${server.url}/metrics`)).text();
    }
    const exported = series(text);
    const all = queries();
    expect(all.length).toBeGreaterThan(10);
    const missing: string[] = [];
    for (const { panel, expr } of all) {
      const { metrics, labels } = parse(expr);
      expect(metrics.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const metric of metrics) {
        const has = exported.get(metric);
        if (has === undefined) missing.push(`${panel}: ${metric} is not exported`);
        else for (const l of labels) if (!has.has(l)) missing.push(`${panel}: ${metric} has no label ${l}`);
      }
    }
    expect(missing).toEqual([]);

    await Promise.all(held.map((l) => pool.release(l.id)));
    await pool.release((await queued).id);
  });
});
