import { DiscoveryError, MIG_SLICE_SLOTS, WHOLE_GPU_SLOTS } from "./devices.js";
import type { NodeDevice } from "./devices.js";

/** `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader` */
export const QUERY_ARGS = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader"] as const;
/** `nvidia-smi -L`: the only listing that shows MIG devices with their UUIDs. */
export const LIST_ARGS = ["-L"] as const;

/** One line of the CSV query. `memoryMb` is null when nvidia-smi could not read it ("[N/A]"…). */
export interface QueriedGpu {
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly memoryMb: number | null;
  readonly line: string;
}

export interface ListedMig {
  readonly profile: string;
  readonly uuid: string;
  readonly line: string;
}

export interface ListedGpu {
  readonly index: number;
  readonly uuid: string;
  readonly migs: ListedMig[];
}

const QUERY_CMD = `nvidia-smi ${QUERY_ARGS.join(" ")}`;
const LIST_CMD = `nvidia-smi ${LIST_ARGS.join(" ")}`;
const MAX_NAME = 128;

function lines(text: string): { no: number; line: string }[] {
  return text
    .split(/\r?\n/)
    .map((line, i) => ({ no: i + 1, line: line.replace(/\s+$/, "") }))
    .filter((l) => l.line.trim() !== "");
}

function malformed(cmd: string, no: number, line: string, why: string): DiscoveryError {
  return new DiscoveryError(`${cmd}: line ${no} "${line.trim()}" is malformed: ${why}. Nothing was registered.`);
}

/**
 * Parses `memory.total`: "81920 MiB" (the default), "81920" (with nounits), or a value
 * nvidia-smi could not read ("[N/A]", "[Insufficient Permissions]", "N/A") → null.
 */
function parseMemory(value: string): number | null | undefined {
  if (/^\[.*\]$/.test(value) || /^n\/a$/i.test(value)) return null;
  const m = /^(\d+(?:\.\d+)?)\s*(MiB|MB|GiB|GB)?$/i.exec(value);
  if (!m) return undefined;
  const n = Number(m[1]);
  return Math.round(/^g/i.test(m[2] ?? "") ? n * 1024 : n);
}

/**
 * The CSV answer of the query, one GPU a line: `0, GPU-8f6c…, NVIDIA A100-SXM4-80GB, 81920 MiB`.
 * A GPU name may itself contain commas, so the name is everything between the uuid and the
 * last field. A header line (if someone dropped `noheader`) is skipped.
 */
export function parseGpuQuery(text: string): QueriedGpu[] {
  const gpus: QueriedGpu[] = [];
  for (const { no, line } of lines(text)) {
    const fields = line.split(",").map((f) => f.trim());
    if (no === 1 && fields[0]?.toLowerCase() === "index") continue;
    if (fields.length < 4)
      throw malformed(
        QUERY_CMD,
        no,
        line,
        `expected 4 comma-separated fields (index, uuid, name, memory.total), found ${fields.length}`,
      );
    const [indexText = "", uuid = ""] = fields;
    const memoryText = fields[fields.length - 1] ?? "";
    const name = fields.slice(2, -1).join(", ");
    if (!/^\d{1,5}$/.test(indexText))
      throw malformed(QUERY_CMD, no, line, `index "${indexText}" is not a whole number`);
    if (!/^GPU-[0-9A-Za-z-]{1,120}$/.test(uuid))
      throw malformed(QUERY_CMD, no, line, `uuid "${uuid}" does not look like GPU-xxxxxxxx-…`);
    if (name === "") throw malformed(QUERY_CMD, no, line, "the name is empty");
    const memoryMb = parseMemory(memoryText);
    if (memoryMb === undefined)
      throw malformed(QUERY_CMD, no, line, `memory.total "${memoryText}" is not like "81920 MiB"`);
    gpus.push({ index: Number(indexText), uuid, name: name.slice(0, MAX_NAME), memoryMb, line: line.trim() });
  }
  const seen = new Set<string>();
  for (const g of gpus) {
    if (seen.has(g.uuid))
      throw new DiscoveryError(`${QUERY_CMD}: GPU ${g.uuid} is listed twice. Nothing was registered.`);
    seen.add(g.uuid);
  }
  return gpus;
}

const GPU_LINE = /^GPU (\d{1,5}): (.+?) \(UUID: (GPU-[0-9A-Za-z-]{1,120})\)$/;
// "  MIG 3g.40gb     Device  0: (UUID: MIG-51fa7c7a-…)"; drivers before R470 printed
// "MIG-GPU-<gpu uuid>/<gi>/<ci>" as the UUID, hence the slash.
const MIG_LINE = /^\s+MIG (\S{1,64})\s+Device\s+(\d{1,3}): \(UUID: (MIG-[0-9A-Za-z/-]{1,160})\)$/;

/**
 * `nvidia-smi -L`: `GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-…)`, each followed by its MIG
 * devices when MIG is enabled and instances exist.
 */
export function parseGpuList(text: string): ListedGpu[] {
  const gpus: ListedGpu[] = [];
  for (const { no, line } of lines(text)) {
    const gpu = GPU_LINE.exec(line);
    if (gpu) {
      gpus.push({ index: Number(gpu[1]), uuid: gpu[3] ?? "", migs: [] });
      continue;
    }
    const mig = MIG_LINE.exec(line);
    if (mig) {
      const parent = gpus[gpus.length - 1];
      if (parent === undefined) throw malformed(LIST_CMD, no, line, "a MIG device listed before any GPU");
      parent.migs.push({ profile: mig[1] ?? "", uuid: mig[3] ?? "", line: line.trim() });
      continue;
    }
    throw malformed(
      LIST_CMD,
      no,
      line,
      'expected "GPU <n>: <name> (UUID: GPU-…)" or "  MIG <profile> Device <n>: (UUID: MIG-…)"',
    );
  }
  return gpus;
}

/** Memory of a MIG profile from its name: "3g.40gb" → 40 GiB, "1c.3g.20gb" → 20 GiB, "1g.10gb+me" → 10 GiB. */
function migMemoryMb(profile: string): number | null {
  const all = [...profile.matchAll(/(\d+)gb/gi)];
  const last = all[all.length - 1];
  return last ? Number(last[1]) * 1024 : null;
}

/**
 * The node's devices: each GPU without MIG devices is one device of 2 slots; a GPU with MIG
 * devices contributes each MIG device (1 slot each) instead, because CUDA cannot use a
 * MIG-enabled GPU as a whole. Devices are numbered in nvidia-smi's order.
 */
export function devicesFromNvidiaSmi(queryText: string, listText: string): NodeDevice[] {
  const queried = parseGpuQuery(queryText);
  if (queried.length === 0) {
    throw new DiscoveryError(
      `${QUERY_CMD} listed no GPUs. Check the driver (does \`nvidia-smi\` show GPUs?), or use --devices config / --devices simulated.`,
    );
  }
  const listed = new Map(parseGpuList(listText).map((g) => [g.uuid, g]));
  const devices: NodeDevice[] = [];
  for (const gpu of queried) {
    const migs = listed.get(gpu.uuid)?.migs ?? [];
    if (migs.length === 0) {
      if (gpu.memoryMb === null) {
        throw new DiscoveryError(
          `${QUERY_CMD}: nvidia-smi could not read memory.total of GPU ${gpu.index} ("${gpu.line}"). ` +
            "Run the agent where nvidia-smi can read it, or list the devices in a config file (--devices config).",
        );
      }
      devices.push({
        index: devices.length,
        uuid: gpu.uuid,
        name: gpu.name,
        memoryMb: gpu.memoryMb,
        slots: WHOLE_GPU_SLOTS,
      });
      continue;
    }
    for (const mig of migs) {
      const memoryMb = migMemoryMb(mig.profile);
      if (memoryMb === null) {
        throw new DiscoveryError(
          `${LIST_CMD}: "${mig.line}" is malformed: the MIG profile "${mig.profile}" does not name its memory (like 3g.40gb). Nothing was registered.`,
        );
      }
      devices.push({
        index: devices.length,
        uuid: mig.uuid,
        name: `${gpu.name} MIG ${mig.profile}`.slice(0, MAX_NAME),
        memoryMb,
        slots: MIG_SLICE_SLOTS,
      });
    }
  }
  return devices;
}
