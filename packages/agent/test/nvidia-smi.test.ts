import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  DiscoveryError,
  devicesFromNvidiaSmi,
  discoverWithNvidiaSmi,
  parseGpuList,
  parseGpuQuery,
  simulatedDevices,
  simulationSeed,
} from "../src/index.js";

// Output formats as nvidia-smi prints them (R470+ drivers; MIG UUIDs as "MIG-<uuid>").
const QUERY_4 = [
  "0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB, 81920 MiB",
  "1, GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901, NVIDIA A100-SXM4-80GB, 81920 MiB",
  "2, GPU-22222222-3333-4444-5555-666666666666, NVIDIA H100 80GB HBM3, 81559 MiB",
  "3, GPU-33333333-4444-5555-6666-777777777777, NVIDIA GeForce RTX 4090, 24564 MiB",
  "",
].join("\n");

const LIST_4 = [
  "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab)",
  "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901)",
  "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-22222222-3333-4444-5555-666666666666)",
  "GPU 3: NVIDIA GeForce RTX 4090 (UUID: GPU-33333333-4444-5555-6666-777777777777)",
  "",
].join("\n");

// GPU 0 split into MIG devices (a 3g.40gb and two 1g.10gb), GPU 1 whole. With MIG on, some
// drivers cannot read memory.total of the parent in a container: "[N/A]".
const QUERY_MIG = [
  "0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB, [N/A]",
  "1, GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901, NVIDIA A100-SXM4-80GB, 81920 MiB",
].join("\n");
const LIST_MIG = [
  "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab)",
  "  MIG 3g.40gb     Device  0: (UUID: MIG-51fa7c7a-4c41-59bf-b08a-9cb4b47525a7)",
  "  MIG 1g.10gb     Device  1: (UUID: MIG-27b1a30b-e164-5ba8-9904-9d949f65d8e4)",
  "  MIG 1g.10gb     Device  2: (UUID: MIG-6c80966f-629d-5379-803b-55424fc1a0bc)",
  "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901)",
].join("\n");

describe("nvidia-smi output parsing", () => {
  it("several whole GPUs: one device of 2 slots each, in nvidia-smi's order", () => {
    expect(parseGpuQuery(QUERY_4)).toHaveLength(4);
    const devices = devicesFromNvidiaSmi(QUERY_4, LIST_4);
    expect(devices).toEqual([
      {
        index: 0,
        uuid: "GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab",
        name: "NVIDIA A100-SXM4-80GB",
        memoryMb: 81920,
        slots: 2,
      },
      {
        index: 1,
        uuid: "GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901",
        name: "NVIDIA A100-SXM4-80GB",
        memoryMb: 81920,
        slots: 2,
      },
      {
        index: 2,
        uuid: "GPU-22222222-3333-4444-5555-666666666666",
        name: "NVIDIA H100 80GB HBM3",
        memoryMb: 81559,
        slots: 2,
      },
      {
        index: 3,
        uuid: "GPU-33333333-4444-5555-6666-777777777777",
        name: "NVIDIA GeForce RTX 4090",
        memoryMb: 24564,
        slots: 2,
      },
    ]);
  });

  it("accepts memory without units (nounits) and CRLF line ends", () => {
    const [gpu] = parseGpuQuery("0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, Tesla T4, 15360\r\n");
    expect(gpu).toMatchObject({ index: 0, name: "Tesla T4", memoryMb: 15360 });
  });

  it("MIG: a MIG-enabled GPU contributes each MIG device (1 slot, memory from its profile) instead of itself", () => {
    expect(parseGpuList(LIST_MIG)[0]?.migs).toHaveLength(3);
    const devices = devicesFromNvidiaSmi(QUERY_MIG, LIST_MIG);
    expect(devices).toEqual([
      {
        index: 0,
        uuid: "MIG-51fa7c7a-4c41-59bf-b08a-9cb4b47525a7",
        name: "NVIDIA A100-SXM4-80GB MIG 3g.40gb",
        memoryMb: 40960,
        slots: 1,
      },
      {
        index: 1,
        uuid: "MIG-27b1a30b-e164-5ba8-9904-9d949f65d8e4",
        name: "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
        memoryMb: 10240,
        slots: 1,
      },
      {
        index: 2,
        uuid: "MIG-6c80966f-629d-5379-803b-55424fc1a0bc",
        name: "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
        memoryMb: 10240,
        slots: 1,
      },
      {
        index: 3,
        uuid: "GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901",
        name: "NVIDIA A100-SXM4-80GB",
        memoryMb: 81920,
        slots: 2,
      },
    ]);
  });

  it("a malformed query line is an error naming the command, the line number and the line", () => {
    const bad = `${QUERY_4.split("\n")[0]}\n1, GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901, NVIDIA A100-SXM4-80GB\n`;
    expect(() => parseGpuQuery(bad)).toThrow(DiscoveryError);
    expect(() => parseGpuQuery(bad)).toThrow(
      /--query-gpu=index,uuid,name,memory.total.*line 2 "1, GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901, NVIDIA A100-SXM4-80GB" is malformed: expected 4 comma-separated fields/,
    );
    expect(() => parseGpuQuery("zero, GPU-8f6c0b1e, A100, 81920 MiB")).toThrow(
      /line 1 .*index "zero" is not a whole number/,
    );
    expect(() => parseGpuQuery("0, 8f6c0b1e, A100, 81920 MiB")).toThrow(/uuid "8f6c0b1e" does not look like GPU-/);
    expect(() => parseGpuQuery("0, GPU-8f6c0b1e, A100, lots")).toThrow(/memory.total "lots"/);
  });

  it("a malformed -L line is an error naming it; a MIG line before any GPU too", () => {
    expect(() => parseGpuList("GPU 0: NVIDIA A100 (UUID: GPU-8f6c0b1e-2a3d)\nNo devices were found\n")).toThrow(
      /nvidia-smi -L: line 2 "No devices were found" is malformed/,
    );
    expect(() => parseGpuList("  MIG 1g.10gb     Device  0: (UUID: MIG-27b1a30b-e164)\n")).toThrow(
      /a MIG device listed before any GPU/,
    );
  });

  it("a whole GPU whose memory nvidia-smi cannot read is an error saying what to do", () => {
    expect(() =>
      devicesFromNvidiaSmi("0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, A100, [Insufficient Permissions]", ""),
    ).toThrow(/could not read memory.total of GPU 0.*--devices config/);
  });

  it("no GPUs at all is an error, not an empty node", () => {
    expect(() => devicesFromNvidiaSmi("", "")).toThrow(/listed no GPUs/);
  });

  it("simulated devices: stable for one seed, different for another", () => {
    const a = simulatedDevices(3, simulationSeed("gpu_n_key-one"));
    expect(a).toHaveLength(3);
    expect(simulatedDevices(3, simulationSeed("gpu_n_key-one"))).toEqual(a);
    expect(simulatedDevices(3, simulationSeed("gpu_n_key-two"))[0]?.uuid).not.toBe(a[0]?.uuid);
    expect(a[0]?.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Set(a.map((d) => d.uuid)).size).toBe(3);
  });
});

describe("discovery with a fake nvidia-smi on PATH", () => {
  const savedPath = process.env["PATH"];
  let dir = "";
  afterEach(() => {
    process.env["PATH"] = savedPath;
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  /** A shell script named nvidia-smi that prints `query` for --query-gpu and `list` for -L. */
  function fakeNvidiaSmi(query: string, list: string, exit = 0): void {
    dir = mkdtempSync(join(tmpdir(), "gpupool-nvsmi-"));
    writeFileSync(join(dir, "query.txt"), query);
    writeFileSync(join(dir, "list.txt"), list);
    const script = join(dir, "nvidia-smi");
    writeFileSync(
      script,
      `#!/bin/sh\ncase "$1" in\n  --query-gpu=*) [ "$2" = "--format=csv,noheader" ] || exit 9; cat "${dir}/query.txt" ;;\n  -L) cat "${dir}/list.txt" ;;\n  *) echo "unexpected $*" >&2; exit 9 ;;\nesac\nexit ${exit}\n`,
    );
    chmodSync(script, 0o755);
    process.env["PATH"] = `${dir}${delimiter}${savedPath ?? ""}`;
  }

  it("runs both commands and returns the devices (several GPUs)", async () => {
    fakeNvidiaSmi(QUERY_4, LIST_4);
    const devices = await discoverWithNvidiaSmi();
    expect(devices.map((d) => d.uuid)).toEqual(parseGpuQuery(QUERY_4).map((g) => g.uuid));
  });

  it("MIG devices come from nvidia-smi -L", async () => {
    fakeNvidiaSmi(QUERY_MIG, LIST_MIG);
    const devices = await discoverWithNvidiaSmi();
    expect(devices.map((d) => d.slots)).toEqual([1, 1, 1, 2]);
  });

  it("a malformed line fails discovery with the line in the message", async () => {
    fakeNvidiaSmi("0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB\n", LIST_4);
    await expect(discoverWithNvidiaSmi()).rejects.toThrow(
      /line 1 "0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB" is malformed/,
    );
  });

  it("nvidia-smi failing (no driver) reports its own first line", async () => {
    fakeNvidiaSmi(
      "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
      "",
      9,
    );
    await expect(discoverWithNvidiaSmi()).rejects.toThrow(
      /failed \(exit 9\): NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/,
    );
  });

  it("no nvidia-smi on PATH says what to do instead", async () => {
    await expect(discoverWithNvidiaSmi("nvidia-smi-that-does-not-exist")).rejects.toThrow(
      /not found on PATH.*--devices config.*--devices simulated/,
    );
  });
});
