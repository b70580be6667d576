import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { DEFAULT_SIMULATION_OPTIONS, simulate } from "@gpupool/core";
import type { SimulationOptions, SimulationPolicyName, SimulationResult, TraceRecord } from "@gpupool/core";
import { InvalidArgumentError } from "commander";
import type { Command } from "commander";
import { out, parsePositiveInt, UsageError } from "../common.js";
import { table } from "../render.js";

/** The November trace sits next to the repository: <repo>/../shared/data/ (dist/commands → repo is four levels up). */
const DEFAULT_TRACE = fileURLToPath(new URL("../../../../../shared/data/genai-requests-2024-11.csv", import.meta.url));

interface SimulateFlags {
  readonly trace: string;
  readonly gpus: number;
  readonly speedup: number;
  readonly policy?: SimulationPolicyName;
  readonly maxConcurrency?: number;
  readonly json?: boolean;
  readonly sweep?: boolean;
  /** False with --no-predicted-wait: queue every call, as before honest admission. */
  readonly predictedWait: boolean;
}

function parseSpeedup(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 10_000)
    throw new InvalidArgumentError(`"${value}" is not a speedup between 0 and 10000.`);
  return n;
}

function parsePolicy(value: string): SimulationPolicyName {
  if (value !== "gpupool" && value !== "fifo")
    throw new InvalidArgumentError(`"${value}" is not a policy: use gpupool or fifo.`);
  return value;
}

/**
 * Reads the trace CSV (no quoted fields): the columns are found by name in the header.
 * `gmt_create` is read as UTC. Rows without an arrival time, person or GPU time are skipped.
 */
export function parseTrace(text: string): { records: TraceRecord[]; skipped: number } {
  const lines = text.split(/\r?\n/);
  const header = (lines[0] ?? "").split(",").map((h) => h.trim());
  const col = (name: string): number => {
    const i = header.indexOf(name);
    if (i < 0) throw new UsageError(`the trace has no "${name}" column (columns: ${header.join(", ")}).`);
    return i;
  };
  const at = col("gmt_create");
  const exec = col("exec_time_seconds");
  const person = col("groupId");
  const app = col("checkpoint_model_version_id");
  const images = header.indexOf("num_images_per_prompt");
  const records: TraceRecord[] = [];
  let skipped = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === "") continue;
    const cells = line.split(",");
    const arrivalMs = Date.parse(`${(cells[at] ?? "").trim().replace(" ", "T")}Z`);
    const execS = Number(cells[exec] ?? "");
    const who = (cells[person] ?? "").trim();
    // A few calls that never ran (PENDING) name no model: they count as one app of their own.
    const model = (cells[app] ?? "").trim() || "(none)";
    if (
      !Number.isFinite(arrivalMs) ||
      (cells[exec] ?? "").trim() === "" ||
      !Number.isFinite(execS) ||
      execS < 0 ||
      who === ""
    ) {
      skipped++;
      continue;
    }
    const imagesText = images < 0 ? "" : (cells[images] ?? "").trim();
    const n = Number(imagesText);
    records.push({
      arrivalMs,
      person: who,
      app: model,
      execMs: Math.round(execS * 1000),
      imagesPerPrompt: imagesText === "" || !Number.isFinite(n) ? null : n,
    });
  }
  return { records, skipped };
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const s = (x: number): string => `${x.toFixed(1)}s`;

function renderComparison(
  results: readonly SimulationResult[],
  meta: { trace: string; rows: number; skipped: number; replayMs: number },
): string {
  const first = results[0] as SimulationResult;
  const tiers = [...new Set(results.flatMap((r) => Object.keys(r.tiers)))].sort((a, b) => tierOrder(a) - tierOrder(b));
  const rows: string[][] = [];
  const add = (label: string, f: (r: SimulationResult) => string): void => {
    rows.push([label, ...results.map(f)]);
  };
  add("slot utilization", (r) => pct(r.utilization));
  add("busy while anything queued", (r) => pct(r.utilizationWhileQueued));
  add("idle while waiting (slot-s)", (r) => r.idleWhileWaitingSlotS.toFixed(0));
  add("held for an aged head (slot-s)", (r) => r.heldIdleSlotS.toFixed(0));
  add("granted / admitted", (r) => `${r.granted} / ${r.admitted}`);
  add("queue timeouts", (r) => String(r.queueTimeouts));
  add("refused at once (predicted_wait)", (r) => String(r.predictedWaitRefusals));
  add("waits that ended in nothing", (r) => `${pct(r.endedInNothing)} (${r.queueTimeouts} of ${r.waited})`);
  add("expected-ETA error p50 / p95", (r) => etaError(r));
  add("granted later than eta_max", (r) => `${r.etaBoundExceeded} of ${r.etaPredicted}`);
  add("timed out, expected in time", (r) => String(r.timedOutExpectedInTime));
  add("stopped at deadline", (r) => String(r.expired));
  add("peak-hour demand / capacity", (r) => r.peakHourDemand.toFixed(2));
  add("Jain fairness (GPU time)", (r) => r.jainFairness.toFixed(3));
  add("longest wait", (r) => s(r.longestWaitS));
  for (const tier of tiers) {
    add(`${tier}: wait p50/p95/p99`, (r) => {
      const t = r.tiers[tier];
      return t ? `${s(t.waitP50S)} / ${s(t.waitP95S)} / ${s(t.waitP99S)}` : "-";
    });
    add(`${tier}: queue timeouts`, (r) => String(r.tiers[tier]?.queueTimeouts ?? 0));
    add(`${tier}: refused at once (predicted_wait)`, (r) => String(r.tiers[tier]?.predictedWaitRefusals ?? 0));
    add(`${tier}: waits that ended in nothing`, (r) => {
      const t = r.tiers[tier];
      return t ? `${pct(t.endedInNothing)} (${t.queueTimeouts} of ${t.waited})` : "-";
    });
    add(`${tier}: expected-ETA error p50 / p95`, (r) => {
      const t = r.tiers[tier];
      return t ? etaError(t) : "-";
    });
    add(`${tier}: quota denials`, (r) => `${r.tiers[tier]?.quotaDenials ?? 0} of ${r.tiers[tier]?.requests ?? 0}`);
  }
  return [
    `Replayed ${meta.rows} calls of ${meta.trace}${meta.skipped > 0 ? ` (${meta.skipped} rows skipped)` : ""}`,
    `on ${first.gpus} GPU(s) = ${first.slots} slots, arrivals ${first.speedup}× faster, in ${(meta.replayMs / 1000).toFixed(2)}s.`,
    "",
    table(["", ...results.map((r) => r.policy)], rows),
  ].join("\n");
}

function etaError(f: { etaErrorP50S: number | null; etaErrorP95S: number | null }): string {
  return f.etaErrorP50S === null || f.etaErrorP95S === null ? "-" : `${s(f.etaErrorP50S)} / ${s(f.etaErrorP95S)}`;
}

/** The loads of --sweep: peak-hour demand as a multiple of the pool's capacity. */
const SWEEP_LOADS = [0.6, 0.8, 1.0, 1.2, 1.4, 1.6];

/** FIFO runs searched for each load of --sweep: speedups on a geometric grid. */
const SWEEP_GRID = 36;

/**
 * One line per load: the speedup whose FIFO peak-hour demand lands nearest each of SWEEP_LOADS ×
 * capacity, both policies at it. Peak-hour demand does not grow steadily with the speedup (calls
 * fall into other hours, quota windows turn calls away), so the speedup is searched for on a grid
 * (FIFO at SWEEP_GRID speedups, from 0.7× what scaling the given speedup's demand would give for
 * the lowest load to 2.5× that for the highest), not scaled from one run.
 */
function sweep(
  records: readonly TraceRecord[],
  options: Partial<SimulationOptions>,
  speedup: number,
): { rows: string[][]; results: { load: number; gpupool: SimulationResult; fifo: SimulationResult }[] } {
  // FIFO's demand: it admits every call the quota allows (gpupool refuses some at once).
  const base = simulate(records, "fifo", options);
  const perSpeedup = base.peakHourDemand / speedup;
  const scaled = (load: number): number => (perSpeedup > 0 ? load / perSpeedup : speedup);
  const low = 0.7 * scaled(SWEEP_LOADS[0] as number);
  const high = 2.5 * scaled(SWEEP_LOADS[SWEEP_LOADS.length - 1] as number);
  const grid = Array.from({ length: SWEEP_GRID }, (_, i) => {
    const s = Math.round(low * (high / low) ** (i / (SWEEP_GRID - 1)) * 1000) / 1000;
    return simulate(records, "fifo", { ...options, speedup: s });
  });
  const results = SWEEP_LOADS.map((load) => {
    // The nearest demand; of two as near, the lower speedup.
    const fifo = grid.reduce((best, r) =>
      Math.abs(r.peakHourDemand - load) < Math.abs(best.peakHourDemand - load) ? r : best,
    );
    return { load, gpupool: simulate(records, "gpupool", { ...options, speedup: fifo.speedup }), fifo };
  });
  const p95 = (r: SimulationResult): string =>
    ["pro", "free", "anonymous"].map((t) => (r.tiers[t]?.waitP95S ?? 0).toFixed(1)).join(" / ");
  const rows = results.map(({ load, gpupool: g, fifo: f }) => [
    `${load.toFixed(1)}×`,
    String(g.speedup),
    f.peakHourDemand.toFixed(2),
    `${pct(g.utilization)} / ${pct(f.utilization)}`,
    `${g.queueTimeouts}+${g.predictedWaitRefusals} / ${f.queueTimeouts}`,
    `${pct(g.endedInNothing)} / ${pct(f.endedInNothing)}`,
    p95(g),
    p95(f),
    etaError(g),
    `${g.idleWhileWaitingSlotS.toFixed(0)} / ${f.idleWhileWaitingSlotS.toFixed(0)}`,
  ]);
  return { rows, results };
}

const SWEEP_HEADER = [
  "load",
  "speedup",
  "peak demand",
  "utilization g / fifo",
  "timeouts+refused g / fifo timeouts",
  "ended in nothing g / fifo",
  "gpupool p95 pro/free/anon",
  "fifo p95 pro/free/anon",
  "ETA error p50/p95",
  "idle while waiting g / fifo",
];

function tierOrder(name: string): number {
  const i = ["pro", "free", "anonymous"].indexOf(name);
  return i < 0 ? 99 : i;
}

function snake(result: SimulationResult): Record<string, unknown> {
  const tiers: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(result.tiers)) {
    tiers[name] = {
      requests: t.requests,
      granted: t.granted,
      queue_timeouts: t.queueTimeouts,
      quota_denials: t.quotaDenials,
      no_gpu_available: t.noGpuAvailable,
      predicted_wait_refusals: t.predictedWaitRefusals,
      waited: t.waited,
      ended_in_nothing: t.endedInNothing,
      eta_error_p50_s: t.etaErrorP50S,
      eta_error_p95_s: t.etaErrorP95S,
      eta_predicted: t.etaPredicted,
      eta_bound_exceeded: t.etaBoundExceeded,
      timed_out_expected_in_time: t.timedOutExpectedInTime,
      wait_p50_s: t.waitP50S,
      wait_p95_s: t.waitP95S,
      wait_p99_s: t.waitP99S,
      longest_wait_s: t.longestWaitS,
    };
  }
  return {
    utilization: result.utilization,
    utilization_while_queued: result.utilizationWhileQueued,
    idle_while_waiting_slot_s: result.idleWhileWaitingSlotS,
    held_idle_slot_s: result.heldIdleSlotS,
    idle_with_queue_slot_s: result.idleWithQueueSlotS,
    requests: result.requests,
    admitted: result.admitted,
    granted: result.granted,
    expired: result.expired,
    queue_timeouts: result.queueTimeouts,
    predicted_wait_refusals: result.predictedWaitRefusals,
    waited: result.waited,
    ended_in_nothing: result.endedInNothing,
    eta_error_p50_s: result.etaErrorP50S,
    eta_error_p95_s: result.etaErrorP95S,
    eta_predicted: result.etaPredicted,
    eta_bound_exceeded: result.etaBoundExceeded,
    timed_out_expected_in_time: result.timedOutExpectedInTime,
    quota_denials: result.quotaDenials,
    span_s: result.spanS,
    peak_hour_demand: result.peakHourDemand,
    jain_fairness: result.jainFairness,
    longest_wait_s: result.longestWaitS,
    tiers,
  };
}

export function registerSimulate(program: Command): void {
  const cmd = program
    .command("simulate")
    .summary("replay a request trace through the scheduler and quota code, gpupool vs FIFO")
    .description(
      "Replay a trace of GPU calls on a virtual clock through the same core scheduler and quota code the server runs, " +
        "and report slot utilization, idle-while-waiting, waits and denials per tier, fairness and the longest wait — " +
        "for gpupool's scheduler and a FIFO queue side by side. The rules (tiers, durations, sizes) are in docs/scheduling.md.",
    )
    .option(
      "--trace <file>",
      "trace CSV (columns gmt_create, exec_time_seconds, groupId, checkpoint_model_version_id, num_images_per_prompt)",
      DEFAULT_TRACE,
    )
    .option("--gpus <n>", "GPUs in the pool (2 slots each)", parsePositiveInt(100_000), DEFAULT_SIMULATION_OPTIONS.gpus)
    .option(
      "--speedup <s>",
      "divide inter-arrival times by this (GPU times stay real)",
      parseSpeedup,
      DEFAULT_SIMULATION_OPTIONS.speedup,
    )
    .option("--policy <name>", "only this policy: gpupool or fifo (default: both, side by side)", parsePolicy)
    .option("--max-concurrency <n>", "every app's max_concurrency (default: none)", parsePositiveInt(1_000_000))
    .option("--no-predicted-wait", "queue every call until its timeout (no predicted_wait refusals), as before")
    .option("--sweep", "one line per load, 0.6× to 1.6× the pool's capacity at the peak hour, both policies")
    .option("--json", "print one JSON object (the last line) instead of the table");
  cmd.addHelpText(
    "after",
    `
Examples:
  gpupool simulate                                  # the November trace, default load, both policies
  gpupool simulate --gpus 2 --speedup 4 --json | tail -1 | jq .policies.gpupool.tiers
  gpupool simulate --trace my-trace.csv --policy fifo
  gpupool simulate --sweep                          # the trade-off from a quiet pool to 1.6× overload`,
  );
  cmd.action((flags: SimulateFlags) => {
    if (!existsSync(flags.trace)) {
      const hint =
        flags.trace === DEFAULT_TRACE
          ? " The November trace is expected in ../shared/data/ next to the repository; pass --trace FILE to use another."
          : " Pass --trace with the path of a trace CSV.";
      throw new UsageError(`trace file ${flags.trace} not found.${hint}`);
    }
    const { records, skipped } = parseTrace(readFileSync(flags.trace, "utf8"));
    if (records.length === 0)
      throw new UsageError(`trace file ${flags.trace} has no usable rows (${skipped} skipped).`);
    const options: Partial<SimulationOptions> = {
      gpus: flags.gpus,
      speedup: flags.speedup,
      appMaxConcurrency: flags.maxConcurrency ?? null,
      honest: flags.predictedWait,
    };
    if (flags.sweep === true) {
      const started = performance.now();
      const { rows, results } = sweep(records, options, flags.speedup);
      const replayMs = Math.round(performance.now() - started);
      if (flags.json === true) {
        const loads = results.map((r) => ({
          load: r.load,
          speedup: r.fifo.speedup,
          gpupool: snake(r.gpupool),
          fifo: snake(r.fifo),
        }));
        out(
          JSON.stringify({
            simulate: flags.trace,
            rows: records.length,
            gpus: flags.gpus,
            replay_ms: replayMs,
            sweep: loads,
          }),
        );
      } else {
        out(
          `Swept ${records.length} calls of ${flags.trace} on ${flags.gpus} GPU(s), in ${(replayMs / 1000).toFixed(1)}s.\n`,
        );
        out(table(SWEEP_HEADER, rows));
      }
      return;
    }
    const policies: SimulationPolicyName[] = flags.policy === undefined ? ["gpupool", "fifo"] : [flags.policy];
    const started = performance.now();
    const results = policies.map((p) => simulate(records, p, options));
    const replayMs = performance.now() - started;
    if (flags.json === true) {
      const first = results[0] as SimulationResult;
      const policiesOut: Record<string, unknown> = {};
      for (const r of results) policiesOut[r.policy] = snake(r);
      out(
        JSON.stringify({
          simulate: flags.trace,
          rows: records.length,
          skipped,
          gpus: first.gpus,
          slots: first.slots,
          speedup: first.speedup,
          max_concurrency: flags.maxConcurrency ?? null,
          replay_ms: Math.round(replayMs),
          policies: policiesOut,
        }),
      );
    } else {
      out(renderComparison(results, { trace: flags.trace, rows: records.length, skipped, replayMs }));
    }
  });
}
