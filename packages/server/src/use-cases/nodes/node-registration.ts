import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { NodeRecord } from "../../storage/store.js";

/**
 * Which registration of a node is current. An agent is answered it at registration and sends it
 * with each heartbeat; the moment of registration serves, since each registration stores its own.
 */
export function registrationOf(node: Pick<NodeRecord, "registeredAt">): string | null {
  return node.registeredAt === null ? null : registrationAt(node.registeredAt);
}

/** The registration a node registered at `at` holds. */
export function registrationAt(at: number): string {
  return String(at);
}

/**
 * Why an agent may not register `node` now, or null. Two agents with one node key would each
 * replace the other's devices and hand out GPUs of the other host, so while the node's agent
 * heartbeats only that agent (restarted: it presents its registration) may register it; another
 * waits for the node to time out. `node` must be read in the transaction that registers it: two
 * agents started together otherwise both find it free.
 */
export function nodeInUse(
  node: NodeRecord,
  presented: string | null,
  now: number,
  heartbeatTimeoutMs: number,
): Problem | null {
  const current = registrationOf(node);
  if (
    current === null ||
    node.devices === null ||
    node.heartbeatAt === null ||
    now - node.heartbeatAt >= heartbeatTimeoutMs ||
    presented === current
  )
    return null;
  const waitS = Math.max(1, Math.ceil((node.heartbeatAt + heartbeatTimeoutMs - now) / 1000));
  return problem(
    "conflict",
    `Node ${node.name} is in use by another agent (${node.agentUrl ?? "it gave no URL"}, last heartbeat ${Math.round((now - node.heartbeatAt) / 1000)}s ago): two agents cannot share a node key, each would overwrite the other's GPUs. Stop the other agent, or create a node for this host (POST /v1/admin/nodes) and use its key. If the other agent is gone, this one can register once the node times out, within ${waitS}s.`,
    { reason: "node_in_use", node: node.name, agent_url: node.agentUrl, retry_after_s: waitS },
  );
}
