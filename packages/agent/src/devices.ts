/**
 * A GPU (or a MIG slice of one) as the agent registers it with the control plane.
 * `index` is the device's position in this node's list: for a host without MIG it is the
 * nvidia-smi index; MIG slices are numbered after one another in nvidia-smi's order.
 */
export interface NodeDevice {
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly memoryMb: number;
  /** 2 for a whole GPU (`large` takes one half, `xlarge` both); 1 for a MIG slice. */
  readonly slots: number;
}

/** Slots of a whole GPU: `large` (half a GPU) takes one, `xlarge` (the whole GPU) both. */
export const WHOLE_GPU_SLOTS = 2;
/** A MIG slice is already a hardware partition: it is one `large` slot and never splits further. */
export const MIG_SLICE_SLOTS = 1;

/** Device discovery failed in a way the operator must fix; the agent does not start (exit code 2). */
export class DiscoveryError extends Error {
  override readonly name = "DiscoveryError";
}

/** The control plane's register body shape (snake_case on the wire). */
export function deviceJson(d: NodeDevice): {
  index: number;
  uuid: string;
  name: string;
  memory_mb: number;
  slots: number;
} {
  return { index: d.index, uuid: d.uuid, name: d.name, memory_mb: d.memoryMb, slots: d.slots };
}
