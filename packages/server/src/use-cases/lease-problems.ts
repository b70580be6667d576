import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { LeaseRecord } from "../storage/store.js";

/**
 * The problems a lease ends with or is refused with when the pool, not the caller, is the reason,
 * and the arithmetic of what such a lease held. Pure: the engine passes what it knows.
 */

/**
 * When a lease on a node that went silent stopped holding its GPU: when the node was last heard
 * from (never before the grant, never after now); now if that is not known.
 */
export function heldUntil(lease: LeaseRecord, lastHeard: number | null, now: number): number {
  return lastHeard === null ? now : Math.min(now, Math.max(lease.grantedAt ?? now, lastHeard));
}

/** A node stopped heartbeating. `endAt`: when an active lease stopped holding its GPU (see heldUntil). */
export function nodeLostProblem(heartbeatTimeoutMs: number, name: string, lease: LeaseRecord, endAt: number): Problem {
  const timeout = Math.round(heartbeatTimeoutMs / 1000);
  if (lease.status === "queued") {
    return problem("no_gpu_available", `Node ${name} stopped answering (no heartbeat for ${timeout}s) while this call waited for it. Nothing was charged and the reservation was refunded; try again once the node is back.`, { reason: "node_lost" });
  }
  const held = Math.ceil(Math.max(0, Math.min(endAt, lease.deadline ?? endAt) - (lease.grantedAt ?? endAt)) / 1000);
  const charge =
    held === 0
      ? "Nothing was charged: the node was not heard from after this call got its GPU."
      : `It was charged only the ${held}s it held the GPU (until the node was last heard from); the rest was refunded.`;
  return problem("no_gpu_available", `Node ${name} stopped answering (no heartbeat for ${timeout}s), so this call was stopped. ${charge}`, { reason: "node_lost" });
}

/** No GPU could ever take the call: too big for every GPU, or (`onlyAgents`) every GPU is an agent's and the call did not come through one. */
export function noCapacityProblem(size: { name: string; slots: number }, node: string | null, onlyAgents: boolean): Problem {
  if (onlyAgents) {
    return problem("no_gpu_available", `Every GPU of this pool is on a GPU host served by its node agent, and those GPUs go only to apps running on that host, through its agent (SPACES_ZERO_DEVICE_API_URL, or the SDK's createAgentClient). Nothing was charged.`, { reason: "no_capacity" });
  }
  const where = node === null ? "this pool" : `node ${node}`;
  return problem("no_gpu_available", `No GPU on ${where} can take a ${size.name} call (${size.slots} slots of one GPU). Nothing was charged; ask the app's developer to use a smaller size.`, { reason: "no_capacity" });
}

export function queueTimeoutProblem(lease: LeaseRecord, now: number, queueTimeoutMs: number): Problem {
  const waited = Math.round((now - lease.queuedAt) / 100) / 10;
  return problem(
    "queue_timeout",
    `Waited ${waited}s in the queue without a free GPU (the limit is ${queueTimeoutMs / 1000}s). Nothing was charged and the reservation was refunded; the pool is busy, try again shortly.`,
    { waited },
  );
}

/** The problem a lease that failed in the queue ended with, as recorded on it. */
export function queueTimeoutProblemFrom(lease: LeaseRecord): Problem {
  return problem((lease.problemCode ?? "queue_timeout") as "queue_timeout", lease.problemDetail ?? "", { waited: ((lease.endedAt ?? lease.queuedAt) - lease.queuedAt) / 1000 });
}
