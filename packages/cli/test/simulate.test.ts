// Runs the built `gpupool simulate` on trace files written here (and on the November trace when
// it is present next to the repository).
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { parseTrace } from "../src/commands/simulate.js";

const BIN = fileURLToPath(new URL("../bin/gpupool.js", import.meta.url));
const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const NOVEMBER = fileURLToPath(new URL("../../../../shared/data/genai-requests-2024-11.csv", import.meta.url));

const dir = mkdtempSync(join(tmpdir(), "gpupool-simulate-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function gpupool(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  if (!existsSync(MAIN))
    throw new Error(`The CLI is not built (${MAIN} is missing): run \`npx tsc -b\` in the repository root first.`);
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", env: { ...process.env, TZ: "UTC" } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const HEADER =
  "gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,negative_prompt_length,num_images_per_prompt,num_inference_steps,checkpoint_model_version_id,num_lora";

/** A busy quarter hour: 60 calls from 12 people on 3 models, a fifth of them asking for 8 images. */
function syntheticTrace(): string {
  const lines = [HEADER];
  for (let i = 0; i < 60; i++) {
    const at = new Date(Date.UTC(2024, 10, 20, 18, 0, 0) + i * 15_000).toISOString().slice(0, 19).replace("T", " ");
    const exec = 5 + ((i * 7) % 40);
    const images = i % 5 === 0 ? 8 : 1;
    lines.push(
      `${at},TXT_2_IMG,SUCCEED,${exec}.0,G${String(i % 12).padStart(4, "0")},60.0,,${images}.0,30.0,M000${i % 3},0`,
    );
  }
  // A call that never ran, with no model: still replayed (as its own app).
  lines.push("2024-11-20 18:20:00,TXT_2_IMG,PENDING,0.0,G0001,,,,,,0");
  return `${lines.join("\n")}\n`;
}

function lastJson(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split("\n");
  return JSON.parse(lines[lines.length - 1] as string) as Record<string, unknown>;
}

interface PolicyFigures {
  utilization: number;
  idle_while_waiting_slot_s: number;
  granted: number;
  admitted: number;
  queue_timeouts: number;
  predicted_wait_refusals: number;
  ended_in_nothing: number;
  eta_error_p50_s: number | null;
  eta_error_p95_s: number | null;
  eta_predicted: number;
  eta_bound_exceeded: number;
  timed_out_expected_in_time: number;
  tiers: Record<string, { wait_p95_s: number; requests: number; ended_in_nothing: number }>;
}

describe("gpupool simulate", () => {
  const trace = join(dir, "trace.csv");
  writeFileSync(trace, syntheticTrace());

  it("parses the trace by column name and keeps rows without a model", () => {
    const { records, skipped } = parseTrace(syntheticTrace());
    expect(records).toHaveLength(61);
    expect(skipped).toBe(0);
    expect(records[0]).toEqual({
      arrivalMs: Date.UTC(2024, 10, 20, 18, 0, 0),
      person: "G0000",
      app: "M0000",
      execMs: 5000,
      imagesPerPrompt: 8,
    });
    expect(records[60]).toMatchObject({ app: "(none)", imagesPerPrompt: null, execMs: 0 });
    expect(parseTrace(`${HEADER}\nnot-a-date,X,Y,abc,G1,,,,,M1,0\n`).skipped).toBe(1);
  });

  it("prints both policies side by side as JSON on the last line", () => {
    const r = gpupool(["simulate", "--trace", trace, "--gpus", "1", "--speedup", "1", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = lastJson(r.stdout);
    expect(out).toMatchObject({ rows: 61, gpus: 1, slots: 2, speedup: 1 });
    const policies = out["policies"] as Record<string, PolicyFigures>;
    expect(Object.keys(policies).sort()).toEqual(["fifo", "gpupool"]);
    expect(policies["gpupool"]?.idle_while_waiting_slot_s).toBe(0);
    expect(policies["gpupool"]?.granted).toBeGreaterThan(0);
    expect(policies["fifo"]?.admitted).toBeGreaterThan(0);
  });

  it("prints a table for a person, and one policy on request", () => {
    const table = gpupool(["simulate", "--trace", trace, "--gpus", "2"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/slot utilization/);
    expect(table.stdout).toMatch(/idle while waiting/);
    expect(table.stdout).toMatch(/^\s+gpupool\s+fifo$/m);
    expect(table.stdout).toMatch(/refused at once \(predicted_wait\)/);
    expect(table.stdout).toMatch(/waits that ended in nothing/);
    expect(table.stdout).toMatch(/expected-ETA error p50 \/ p95/);
    const fifo = lastJson(gpupool(["simulate", "--trace", trace, "--policy", "fifo", "--json"]).stdout);
    expect(Object.keys(fifo["policies"] as object)).toEqual(["fifo"]);
  });

  it("--sweep prints one line per load, 0.6× to 1.6× capacity, both policies; --no-predicted-wait queues every call", () => {
    const sweep = gpupool(["simulate", "--trace", trace, "--sweep"]);
    expect(sweep.code).toBe(0);
    const lines = sweep.stdout.split("\n").filter((l) => /^\d\.\d×/.test(l));
    expect(lines.map((l) => l.slice(0, 4))).toEqual(["0.6×", "0.8×", "1.0×", "1.2×", "1.4×", "1.6×"]);
    const json = lastJson(gpupool(["simulate", "--trace", trace, "--sweep", "--json"]).stdout);
    expect((json["sweep"] as { load: number }[]).map((s) => s.load)).toEqual([0.6, 0.8, 1, 1.2, 1.4, 1.6]);
    const queued = lastJson(
      gpupool(["simulate", "--trace", trace, "--gpus", "1", "--no-predicted-wait", "--json"]).stdout,
    );
    expect((queued["policies"] as Record<string, PolicyFigures>)["gpupool"]?.predicted_wait_refusals).toBe(0);
  });

  it("says clearly when the trace is missing or an option is wrong", () => {
    const missing = gpupool(["simulate", "--trace", join(dir, "nope.csv")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/trace file .*nope\.csv not found/);
    expect(gpupool(["simulate", "--trace", trace, "--policy", "lifo"]).code).toBe(2);
    expect(gpupool(["simulate", "--trace", trace, "--speedup", "0"]).code).toBe(2);
  });

  it.skipIf(!existsSync(NOVEMBER))(
    "on the November trace at the default load: tiers in order, no idle-while-waiting, utilization at least FIFO's, fewer calls fail and far fewer waits end in nothing than under FIFO, every eta_max kept",
    () => {
      const r = gpupool(["simulate", "--json"]);
      expect(r.code).toBe(0);
      const out = lastJson(r.stdout);
      expect(out["rows"]).toBe(14_279);
      const policies = out["policies"] as Record<string, PolicyFigures>;
      const ours = policies["gpupool"] as PolicyFigures;
      const fifo = policies["fifo"] as PolicyFigures;
      expect(ours.tiers["pro"]?.wait_p95_s).toBeLessThan(ours.tiers["free"]?.wait_p95_s as number);
      expect(ours.tiers["free"]?.wait_p95_s).toBeLessThan(ours.tiers["anonymous"]?.wait_p95_s as number);
      expect(ours.idle_while_waiting_slot_s).toBe(0);
      expect(fifo.idle_while_waiting_slot_s).toBeGreaterThan(0);
      expect(ours.utilization).toBeGreaterThanOrEqual(fifo.utilization);
      // Honest admission: at most two thirds as many waits end in nothing as under FIFO, in every tier.
      expect(ours.ended_in_nothing).toBeLessThan((fifo.ended_in_nothing * 2) / 3);
      for (const tier of ["pro", "free", "anonymous"])
        expect(ours.tiers[tier]?.ended_in_nothing).toBeLessThan(fifo.tiers[tier]?.ended_in_nothing as number);
      expect(ours.predicted_wait_refusals).toBeGreaterThan(0);
      // What the ETA error leaves out, counted apart: calls that timed out though expected in time.
      expect(ours.timed_out_expected_in_time).toBeGreaterThan(0);
      expect(ours.timed_out_expected_in_time).toBeLessThanOrEqual(ours.queue_timeouts);
      expect(fifo.timed_out_expected_in_time).toBe(0);
      // A refusal replaces a timeout, not a grant: fewer calls fail for want of a GPU than under FIFO.
      expect(ours.queue_timeouts + ours.predicted_wait_refusals).toBeLessThanOrEqual(fifo.queue_timeouts);
      // The bound told at admission is kept as a promise, for calls of every size: no queued call
      // starts later (one in twenty did before promises were kept, one in 3,288 before holds counted in them).
      expect(ours.eta_predicted).toBeGreaterThan(1000);
      expect(ours.eta_bound_exceeded).toBe(0);
      // Shorter calls first and promises kept: at least as many calls served as under FIFO.
      expect(ours.granted).toBeGreaterThanOrEqual(fifo.granted);
      expect(ours.eta_error_p50_s).not.toBeNull();
      expect(fifo.eta_error_p50_s).toBeNull();
    },
  );

  it.skipIf(!existsSync(NOVEMBER))(
    "--sweep on the November trace: each load as FIFO's peak hour measures it (within 0.1), to past 1.5× capacity; tiers in order and fewer failures than FIFO at every one",
    () => {
      const r = gpupool(["simulate", "--sweep", "--json"]);
      expect(r.code).toBe(0);
      const rows = lastJson(r.stdout)["sweep"] as {
        load: number;
        speedup: number;
        gpupool: PolicyFigures;
        fifo: PolicyFigures & { peak_hour_demand: number };
      }[];
      expect(rows.map((row) => row.load)).toEqual([0.6, 0.8, 1, 1.2, 1.4, 1.6]);
      for (const { load, speedup, gpupool: ours, fifo } of rows) {
        // The speedup is searched for, not scaled from one run (which reached only 1.34 for 1.6×).
        expect(Math.abs(fifo.peak_hour_demand - load)).toBeLessThanOrEqual(0.1);
        expect(speedup).toBeGreaterThan(0);
        const p95 = (tier: string): number => ours.tiers[tier]?.wait_p95_s as number;
        expect(p95("pro")).toBeLessThan(p95("free"));
        expect(p95("free")).toBeLessThan(p95("anonymous"));
        expect(ours.queue_timeouts + ours.predicted_wait_refusals).toBeLessThan(fifo.queue_timeouts);
        expect(ours.idle_while_waiting_slot_s).toBe(0);
        expect(ours.eta_bound_exceeded).toBe(0);
      }
      expect(Math.max(...rows.map((row) => row.fifo.peak_hour_demand))).toBeGreaterThan(1.5);
    },
  );

  it.skipIf(!existsSync(NOVEMBER))(
    "on the November trace at a light load (1 × 1), on two GPUs (2 × 6) and far past capacity (1 × 4): tiers in order, every eta_max kept, no idle-while-waiting, fewer waits end in nothing",
    () => {
      const figures = (gpus: string, speedup: string): { ours: PolicyFigures; fifo: PolicyFigures } => {
        const r = gpupool(["simulate", "--gpus", gpus, "--speedup", speedup, "--json"]);
        expect(r.code).toBe(0);
        const policies = lastJson(r.stdout)["policies"] as Record<string, PolicyFigures>;
        return { ours: policies["gpupool"] as PolicyFigures, fifo: policies["fifo"] as PolicyFigures };
      };
      const p95 = (f: PolicyFigures, tier: string): number => f.tiers[tier]?.wait_p95_s as number;
      for (const [gpus, speedup] of [
        ["1", "1"],
        ["2", "6"],
        ["1", "4"],
      ] as const) {
        const { ours, fifo } = figures(gpus, speedup);
        expect(ours.eta_predicted).toBeGreaterThan(1000);
        expect(ours.eta_bound_exceeded).toBe(0);
        expect(ours.idle_while_waiting_slot_s).toBe(0);
        expect(ours.ended_in_nothing).toBeLessThan(fifo.ended_in_nothing);
        expect(p95(ours, "pro")).toBeLessThan(p95(ours, "free"));
        expect(p95(ours, "free")).toBeLessThan(p95(ours, "anonymous"));
        if (speedup === "4")
          // Far past capacity (peak hour 2.2× what the pool can do) the middle tier is not pushed
          // to the 60 s cap with the lowest: a paying call is queued only when expected to start
          // in time with a tenth to spare, so few of its waits end in nothing (free's p95 was 60 s).
          expect(p95(ours, "free")).toBeLessThan(60);
        // Fewer calls fail for want of a GPU than under FIFO, and (at 2 × 6) at least as many are
        // served, as busily. Not at 1 × 1, a light load, where refusing the paying calls expected in
        // the last tenth of their wait costs 34 timeouts + refusals against FIFO's 32 timeouts, 1
        // grant of 7,795 and 0.004 points of utilization; nor the utilization at 1 × 4 (20.00 %
        // against 20.01 %: docs/scheduling.md §8).
        if (speedup === "1") continue;
        if (speedup === "6") {
          expect(ours.utilization).toBeGreaterThanOrEqual(fifo.utilization);
          expect(ours.granted).toBeGreaterThanOrEqual(fifo.granted);
        }
        expect(ours.queue_timeouts + ours.predicted_wait_refusals).toBeLessThanOrEqual(fifo.queue_timeouts);
      }
    },
  );
});
