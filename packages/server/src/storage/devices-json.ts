import type { DeviceSpec } from "@gpupool/core";

/** A node's registered devices as stored (JSON text): only the DeviceSpec fields, in a fixed order. */
export function encodeDevices(devices: readonly DeviceSpec[] | null): string | null {
  if (devices === null) return null;
  return JSON.stringify(
    devices.map((d) => ({
      node: d.node,
      index: d.index,
      uuid: d.uuid,
      name: d.name,
      memoryMb: d.memoryMb,
      slots: d.slots,
      ...(d.dedicated === true ? { dedicated: true } : {}),
    })),
  );
}

export function decodeDevices(value: unknown): DeviceSpec[] | null {
  if (value === null || value === undefined) return null;
  const parsed: unknown = typeof value === "string" ? JSON.parse(value) : value;
  if (!Array.isArray(parsed)) throw new Error("nodes.devices: stored value is not a JSON array");
  return parsed.map((raw: unknown) => {
    const d = raw as Record<string, unknown>;
    const spec: DeviceSpec = {
      node: String(d["node"]),
      index: Number(d["index"]),
      uuid: String(d["uuid"]),
      name: String(d["name"]),
      memoryMb: Number(d["memoryMb"]),
      slots: Number(d["slots"]),
    };
    return d["dedicated"] === true ? { ...spec, dedicated: true } : spec;
  });
}
