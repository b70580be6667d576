import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { DiscoveryError, WHOLE_GPU_SLOTS } from "./devices.js";
import type { NodeDevice } from "./devices.js";
import { devicesFromNvidiaSmi, LIST_ARGS, QUERY_ARGS } from "./nvidia-smi.js";

export type DeviceSource = "nvidia-smi" | "config" | "simulated";

const NVIDIA_SMI_TIMEOUT_MS = 20_000;

function run(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout: NVIDIA_SMI_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024, encoding: "utf8" },
      (error, stdout, stderr) => {
        const shown = `${command} ${args.join(" ")}`;
        if (error === null) return resolve(stdout);
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT") {
          return reject(
            new DiscoveryError(
              `${command} was not found on PATH. Install the NVIDIA driver utilities, put nvidia-smi on the agent's PATH, or use --devices config (a device list) or --devices simulated.`,
            ),
          );
        }
        if (code === "EACCES") return reject(new DiscoveryError(`${command} is not executable by the agent's user.`));
        if (error.killed)
          return reject(
            new DiscoveryError(`${shown} did not finish within ${NVIDIA_SMI_TIMEOUT_MS / 1000}s (a hung driver?).`),
          );
        // nvidia-smi prints its reason on stdout ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver…").
        const said =
          `${stderr}\n${stdout}`
            .split("\n")
            .map((l) => l.trim())
            .find((l) => l !== "") ?? "no output";
        reject(new DiscoveryError(`${shown} failed (exit ${String(error.code ?? "?")}): ${said.slice(0, 300)}`));
      },
    );
  });
}

/** Asks nvidia-smi (on PATH, or `command`) for the GPUs and their MIG devices. */
export async function discoverWithNvidiaSmi(command = "nvidia-smi"): Promise<NodeDevice[]> {
  const query = await run(command, QUERY_ARGS);
  const list = await run(command, LIST_ARGS);
  return devicesFromNvidiaSmi(query, list);
}

/**
 * `count` fake GPUs whose UUIDs are derived from `seed` (the agent passes a hash of its node
 * key), so they are the same on every restart of the same node and differ between nodes.
 */
export function simulatedDevices(count: number, seed: string): NodeDevice[] {
  return Array.from({ length: count }, (_, index) => {
    const h = createHash("sha256").update(`gpupool-simulated-gpu\n${seed}\n${index}`).digest("hex");
    const uuid = `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
    return { index, uuid, name: "Simulated GPU", memoryMb: 81_920, slots: WHOLE_GPU_SLOTS };
  });
}

/** A stable, non-secret seed for simulated UUIDs: the node key is never used directly. */
export function simulationSeed(nodeKey: string): string {
  return createHash("sha256").update(nodeKey).digest("hex");
}
