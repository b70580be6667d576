import { readFileSync } from "node:fs";
import { parseDurationMs } from "@gpupool/core";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { WHOLE_GPU_SLOTS } from "./devices.js";
import type { NodeDevice } from "./devices.js";
import type { DeviceSource } from "./discovery.js";
import { PID_CHECKS } from "./pid-ownership.js";
import type { PidCheck } from "./pid-ownership.js";

/** The agent's configuration file, normalized (milliseconds, camelCase). Every field is optional. */
export interface AgentFileConfig {
  readonly server?: string;
  readonly listen?: string;
  readonly devices?: DeviceSource;
  readonly nvidiaSmi?: string;
  readonly simulatedGpus?: number;
  readonly graceMs?: number;
  /** The device list for `devices: config`. */
  readonly gpus?: readonly NodeDevice[];
  readonly logLevel?: string;
  readonly pidCheck?: PidCheck;
  readonly stateFile?: string;
}

/** The file is not a valid agent configuration; every problem is listed (exit code 2). */
export class AgentConfigError extends Error {
  override readonly name = "AgentConfigError";
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`${source} is not a valid agent configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

export const MAX_GRACE_MS = 10 * 60_000;
export const MAX_SIMULATED_GPUS = 64;

const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const parsed = parseDurationMs(value);
  if (!parsed.ok) {
    ctx.addIssue({ code: "custom", message: parsed.message });
    return z.NEVER;
  }
  if (parsed.ms > MAX_GRACE_MS) {
    ctx.addIssue({ code: "custom", message: "must be at most 10 minutes" });
    return z.NEVER;
  }
  return parsed.ms;
});

const gpu = z.strictObject({
  index: z.number().int().min(0).max(65_535),
  uuid: z.string().regex(/^[A-Za-z0-9._:/-]{1,128}$/, "must be a device UUID such as GPU-8f6c… or MIG-…"),
  name: z.string().min(1).max(128),
  memory_mb: z.number().int().min(0).max(100_000_000),
  slots: z.number().int().min(1).max(64).default(WHOLE_GPU_SLOTS),
});

// Other top-level sections (server:, quota:…) belong to other components and are ignored, so
// one file can serve several; inside `agent:` every key must be known, so a typo is caught.
const schema = z.object({
  agent: z
    .strictObject({
      server: z.string().min(1).optional(),
      listen: z.string().min(1).optional(),
      devices: z.enum(["nvidia-smi", "config", "simulated"]).optional(),
      nvidia_smi: z.string().min(1).optional(),
      simulated_gpus: z.number().int().min(1).max(MAX_SIMULATED_GPUS).optional(),
      grace: duration.optional(),
      gpus: z.array(gpu).max(256).optional(),
      pid_check: z.enum(PID_CHECKS as [PidCheck, ...PidCheck[]]).optional(),
      state_file: z.string().min(1).optional(),
    })
    .prefault({}),
  log: z
    .object({ level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).optional() })
    .prefault({}),
});

function pathOf(path: readonly PropertyKey[]): string {
  return path.length === 0 ? "(top level)" : path.map(String).join(".");
}

/** Validates parsed YAML; reports every problem at once. */
export function normalizeAgentConfig(raw: unknown, source = "configuration"): AgentFileConfig {
  if (raw !== null && raw !== undefined && (typeof raw !== "object" || Array.isArray(raw))) {
    throw new AgentConfigError(source, ["(top level): must be a mapping with an agent: section"]);
  }
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success)
    throw new AgentConfigError(
      source,
      parsed.error.issues.map((i) => `${pathOf(i.path)}: ${i.message}`),
    );
  const a = parsed.data.agent;
  const problems: string[] = [];
  const gpus = a.gpus?.map((g) => ({
    index: g.index,
    uuid: g.uuid,
    name: g.name,
    memoryMb: g.memory_mb,
    slots: g.slots,
  }));
  const seen = new Set<string>();
  gpus?.forEach((g, i) => {
    if (seen.has(`i${g.index}`)) problems.push(`agent.gpus.${i}.index: device ${g.index} is listed twice`);
    if (seen.has(`u${g.uuid}`)) problems.push(`agent.gpus.${i}.uuid: ${g.uuid} is listed twice`);
    seen.add(`i${g.index}`).add(`u${g.uuid}`);
  });
  if (a.devices === "config" && (gpus === undefined || gpus.length === 0))
    problems.push("agent.gpus: devices: config needs a list of GPUs here");
  if (problems.length > 0) throw new AgentConfigError(source, problems);
  return {
    ...(a.server !== undefined ? { server: a.server } : {}),
    ...(a.listen !== undefined ? { listen: a.listen } : {}),
    ...(a.devices !== undefined ? { devices: a.devices } : {}),
    ...(a.nvidia_smi !== undefined ? { nvidiaSmi: a.nvidia_smi } : {}),
    ...(a.simulated_gpus !== undefined ? { simulatedGpus: a.simulated_gpus } : {}),
    ...(a.grace !== undefined ? { graceMs: a.grace } : {}),
    ...(gpus !== undefined ? { gpus } : {}),
    ...(a.pid_check !== undefined ? { pidCheck: a.pid_check } : {}),
    ...(a.state_file !== undefined ? { stateFile: a.state_file } : {}),
    ...(parsed.data.log.level !== undefined ? { logLevel: parsed.data.log.level } : {}),
  };
}

export function readAgentConfigFile(path: string): AgentFileConfig {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, "utf8"));
  } catch (e) {
    throw new AgentConfigError(path, [e instanceof Error ? (e.message.split("\n")[0] ?? e.message) : String(e)]);
  }
  return normalizeAgentConfig(raw, path);
}
