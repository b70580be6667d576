import type { Policy } from "../policy.js";
import type { Problem } from "../problem.js";
import { problem } from "../problem.js";
import type { WaitReason } from "../scheduling/scheduler.js";

/** The texts of refusals whose reason is the pool, not the caller's quota (see admission.ts). */

/** A call through a node's agent, while that node has no GPUs in the pool. */
export function nodeNotRegisteredProblem(node: string): Problem {
  return problem(
    "no_gpu_available",
    `Node ${node} has no GPUs in the pool right now: its agent has not registered, or stopped heartbeating. Nothing was charged; check the agent on that host (gpupool pool shows the nodes).`,
    { reason: "node_not_registered" },
  );
}

/** No GPU the call may use could ever take it: too big for every GPU, or (`onlyAgents`) every GPU is an agent's and the call did not come through one. */
export function noCapacityProblem(
  size: { name: string; slots: number },
  node: string | null,
  onlyAgents: boolean,
): Problem {
  if (onlyAgents) {
    return problem(
      "no_gpu_available",
      "Every GPU of this pool is on a GPU host served by its node agent, and those GPUs go only to apps running on that host, through its agent (SPACES_ZERO_DEVICE_API_URL, or the SDK's createAgentClient). Nothing was charged.",
      { reason: "no_capacity" },
    );
  }
  const where = node === null ? "this pool" : `node ${node}`;
  return problem(
    "no_gpu_available",
    `No GPU on ${where} can take a ${size.name} call (${size.slots} slots of one GPU). Nothing was charged; ask the app's developer to use a smaller size.`,
    {
      reason: "no_capacity",
    },
  );
}

export function queueFullProblem(maxLength: number): Problem {
  return problem(
    "no_gpu_available",
    `Every GPU is busy and the queue is full (${maxLength} waiting). Nothing was reserved or charged; try again in a minute.`,
    { reason: "queue_full" },
  );
}

/** `queue: false` and the call would wait: for a slot, or for one of its app's calls to end (`concurrency`). */
export function queueDisabledProblem(waitingFor: WaitReason = "node"): Problem {
  return problem(
    "no_gpu_available",
    waitingFor === "concurrency"
      ? "This app already has as many calls on GPUs as its operator allows (its max concurrency), and the request asked not to queue (queue: false). Nothing was reserved or charged; retry when one of the app's calls ends, or allow queueing."
      : "Every GPU slot that fits this call is busy and the request asked not to queue (queue: false). Nothing was reserved or charged; retry, or allow queueing.",
    { reason: "queue_disabled" },
  );
}

/** What a `predicted_wait` refusal says: the expected wait, its bound, and what the call could wait. */
export interface PredictedWait {
  readonly expectedMs: number;
  readonly boundMs: number;
  readonly limitMs: number;
  /** Whether the limit is the caller's `max_wait` or the tier's queue timeout. */
  readonly limitBy: "max_wait" | "queue_timeout";
  readonly tier: string | null;
  /** Policy.predictedWaitHeadroom (for the retry time it says). */
  readonly headroom: number;
}

/**
 * The share of what a call may wait that it must be expected to leave unused when nothing promises
 * it a start in time (its bound is later than it may wait), by default: a call expected to start in
 * the last tenth of its wait is refused at once (the lowest class excepted, see `placementRefusal`;
 * `queue.predicted_wait_headroom`, Policy.predictedWaitHeadroom).
 */
export const PREDICTED_WAIT_HEADROOM = 0.1;

/** The policy's headroom (Policy.predictedWaitHeadroom), or the default. */
export function predictedWaitHeadroomOf(policy: Pick<Policy, "predictedWaitHeadroom">): number {
  return policy.predictedWaitHeadroom ?? PREDICTED_WAIT_HEADROOM;
}

/** The longest expected wait a call that may wait `limitMs`, with bound `boundMs`, is queued with. */
export function expectedWaitLimitMs(limitMs: number, boundMs: number, headroom = PREDICTED_WAIT_HEADROOM): number {
  return boundMs <= limitMs ? limitMs : Math.floor(limitMs * (1 - headroom));
}

/**
 * When to retry a `predicted_wait` refusal: once the expected wait would leave the headroom of what
 * the call may wait unused (at least a second). From the problem's own figures, so that a replica
 * that relays the leader's refusal says the same: `eta_s` and `max_wait_s`.
 */
export function predictedWaitRetryS(etaS: number, maxWaitS: number, headroom = PREDICTED_WAIT_HEADROOM): number {
  return Math.max(1, Math.ceil(etaS - maxWaitS * (1 - headroom)));
}

/** A call not expected to start in time: refused at once instead of timing out in the queue. */
export function predictedWaitProblem(w: PredictedWait): Problem {
  const etaS = Math.ceil(w.expectedMs / 1000);
  const etaMaxS = Math.ceil(w.boundMs / 1000);
  // Whole seconds unless the caller asked for a fraction (max_wait: 0.5 is "0.5s", not "0s").
  const limitS = Math.round(w.limitMs) / 1000;
  const limit =
    w.limitBy === "max_wait"
      ? `the ${limitS}s this request allows (max_wait)`
      : `the ${limitS}s queue timeout${w.tier === null ? "" : ` of the ${w.tier} tier`}`;
  const why = w.expectedMs > w.limitMs ? `longer than ${limit}` : `too close to ${limit} to count on`;
  return problem(
    "no_gpu_available",
    `Every GPU slot that fits this call is busy and the wait is expected to be about ${etaS}s (at most ${etaMaxS}s), ${why}. It was refused now rather than left to time out; nothing was reserved or charged. Retry in about ${predictedWaitRetryS(etaS, limitS, w.headroom)}s${w.limitBy === "max_wait" ? ", or allow a longer max_wait" : ""}.`,
    { reason: "predicted_wait", eta_s: etaS, eta_max_s: etaMaxS, max_wait_s: limitS },
  );
}
