import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { LeaseRecord } from "../../storage/store.js";

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
    return problem(
      "no_gpu_available",
      `Node ${name} stopped answering (no heartbeat for ${timeout}s) while this call waited for it. Nothing was charged and the reservation was refunded; try again once the node is back.`,
      { reason: "node_lost" },
    );
  }
  const held = Math.ceil(Math.max(0, Math.min(endAt, lease.deadline ?? endAt) - (lease.grantedAt ?? endAt)) / 1000);
  const charge =
    held === 0
      ? "Nothing was charged: the node was not heard from after this call got its GPU."
      : `It was charged only the ${held}s it held the GPU (until the node was last heard from); the rest was refunded.`;
  return problem(
    "no_gpu_available",
    `Node ${name} stopped answering (no heartbeat for ${timeout}s), so this call was stopped. ${charge}`,
    { reason: "node_lost" },
  );
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
  return problem((lease.problemCode ?? "queue_timeout") as "queue_timeout", lease.problemDetail ?? "", {
    waited: ((lease.endedAt ?? lease.queuedAt) - lease.queuedAt) / 1000,
  });
}

/** An active lease whose device is no longer in the pool after a restart (not on a lost node). */
export function deviceGoneProblem(): Problem {
  return problem("no_gpu_available", "The GPU this lease held left the pool while the server was down.", {
    reason: "device_removed",
  });
}
