import { DomainError, fail } from "@gpupool/core";
import type { DeviceSpec } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { KeyedRecord, NodeRecord, Store } from "../../storage/store.js";
import type { NodeRegistration } from "./node-membership.js";
import { registrationAt, registrationOf } from "./node-registration.js";

/**
 * The pool's side of node membership, whichever replica an agent reaches (replication/Replica:
 * the leader places the node itself, another replica records it and tells the leader).
 */
export interface PoolMembership {
  register(
    node: NodeRecord,
    devices: readonly DeviceSpec[],
    agentUrl: string | null,
    presented: string | null,
  ): Promise<NodeRegistration>;
  /** The node's agent was heard from at `at` (recorded in the store already). */
  heard(name: string, at: number): void;
}

export interface RegisteredDevice {
  readonly index: number;
  readonly uuid: string;
  readonly name: string;
  readonly memoryMb: number;
  readonly slots?: number | undefined;
}

/** Slots per GPU when the agent does not say (docs/design.md: a `large` call takes half a GPU). */
const DEFAULT_SLOTS = 2;

/** What node agents do: register their node's devices, then heartbeat (see docs/agent.md). */
export class NodeAgents {
  constructor(
    private readonly store: Store,
    private readonly membership: PoolMembership,
    private readonly configured: readonly DeviceSpec[],
    private readonly clock: Clock,
  ) {}

  /** An agent registers its node's devices (its key authenticated it as `caller`). */
  async register(
    caller: KeyedRecord,
    input: { devices: readonly RegisteredDevice[]; agentUrl: string | null; previousRegistration: string | null },
  ): Promise<{ node: NodeRecord; devices: number; registration: string }> {
    const node = await this.current(caller);
    if (this.configured.some((d) => d.node === node.name)) {
      fail(
        "conflict",
        `Node name ${node.name} is also a node of the server's own pool configuration (pool.simulated); give the agent a node of its own (POST /v1/admin/nodes).`,
      );
    }
    const seen = new Set<string>();
    const devices: DeviceSpec[] = input.devices.map((d, i) => {
      if (seen.has(`i${d.index}`))
        fail("invalid_request", `devices.${i}.index: device ${d.index} is listed twice.`, {
          errors: [{ field: `devices.${i}.index`, message: "is listed twice" }],
        });
      if (seen.has(`u${d.uuid}`))
        fail("invalid_request", `devices.${i}.uuid: ${d.uuid} is listed twice.`, {
          errors: [{ field: `devices.${i}.uuid`, message: "is listed twice" }],
        });
      seen.add(`i${d.index}`).add(`u${d.uuid}`);
      // Dedicated: only apps on that host (through its agent) may use these GPUs.
      return {
        node: node.name,
        index: d.index,
        uuid: d.uuid,
        name: d.name,
        memoryMb: d.memoryMb,
        slots: d.slots ?? DEFAULT_SLOTS,
        dedicated: true,
      };
    });
    // Whether another agent holds the node is decided in the registering transaction (nodeInUse).
    const registered = await this.membership.register(node, devices, input.agentUrl, input.previousRegistration);
    if (registered.kind === "refused") throw new DomainError(registered.problem);
    return { node, devices: devices.length, registration: registrationAt(registered.at) };
  }

  /**
   * A heartbeat. `sent`: the registration the agent holds (agents from before registrations
   * existed send none, and are not checked).
   */
  async heartbeat(caller: KeyedRecord, sent: string | undefined): Promise<{ node: NodeRecord }> {
    const node = await this.current(caller);
    const now = this.clock.now();
    const current = registrationOf(node);
    if (sent !== undefined && current !== null && node.devices !== null && sent !== current) {
      fail(
        "node_not_registered",
        `Node ${node.name} was registered since by another agent (${node.agentUrl ?? "it gave no URL"}): this agent's registration is no longer current, and the node's GPUs are now the other agent's. Two agents cannot share a node key: stop one of them, or give each host a node of its own (POST /v1/admin/nodes).`,
        { reason: "replaced", node: node.name, agent_url: node.agentUrl },
      );
    }
    const known = await this.store.transaction((tx) => tx.nodes.heartbeat(node.id, now));
    if (!known) {
      fail(
        "node_not_registered",
        `Node ${node.name} is not registered (it was lost after missing heartbeats, or never registered): register its devices again with POST /v1/nodes/register.`,
      );
    }
    this.membership.heard(node.name, now);
    return { node };
  }

  /** The calling node as the store has it now (a cached caller may be seconds old; registration state must be current). */
  private async current(caller: KeyedRecord): Promise<NodeRecord> {
    const node = await this.store.transaction((tx) => tx.nodes.getByName(caller.name));
    if (node === null) fail("unauthorized", "This node was removed from the pool.");
    return node;
  }
}
