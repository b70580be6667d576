import { problem } from "@gpupool/core";
import type { DeviceSpec, Problem } from "@gpupool/core";
import type { Logger } from "pino";
import type { Clock } from "../../clock.js";
import type { EngineRunner } from "../../engine/runner.js";
import type { LeaseRecord, NodeRecord, Tx } from "../../storage/store.js";
import type { LeaseAnnouncer } from "../leases/announcer.js";
import { heldUntil, nodeLostProblem } from "../leases/lease-problems.js";
import type { LeaseWrites } from "../leases/lease-writes.js";
import type { PoolState } from "../leases/pool-state.js";
import type { Timers } from "../timers.js";
import { nodeInUse } from "./node-registration.js";

/** A node's registration: when it took effect (its mark), or why another agent keeps the node. */
export type NodeRegistration =
  { readonly kind: "registered"; readonly at: number } | { readonly kind: "refused"; readonly problem: Problem };

interface Placed {
  readonly replaced: boolean;
  readonly ended: LeaseRecord[];
  readonly grants: LeaseRecord[];
  readonly at: number;
  readonly devices: number;
}

/**
 * Agent nodes joining and leaving the leader's pool: registration (unchanged devices keep their
 * leases; changed ones fail the leases they held), heartbeats, and a node that goes silent (its
 * leases fail, charged only until it was last heard from, and its slots leave the pool).
 */
export class NodeMembership {
  constructor(
    private readonly runner: EngineRunner,
    private readonly state: PoolState,
    private readonly writes: LeaseWrites,
    private readonly announcer: LeaseAnnouncer,
    private readonly timers: Timers<"heartbeat">,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly heartbeatTimeoutMs: number,
  ) {}

  /**
   * The store's half of a registration, on any replica: refused while another agent holds the
   * node (`presented` is the registration the calling agent held before it restarted, if any),
   * checked and written in one transaction so two agents started together cannot both win.
   */
  async claim(
    tx: Tx,
    node: NodeRecord,
    devices: readonly DeviceSpec[],
    agentUrl: string | null,
    presented: string | null,
    now: number,
  ): Promise<Problem | null> {
    const refused = nodeInUse((await tx.nodes.getByName(node.name)) ?? node, presented, now, this.heartbeatTimeoutMs);
    if (refused === null) await tx.nodes.setState(node.id, { devices, registeredAt: now, heartbeatAt: now, agentUrl });
    return refused;
  }

  /** A registration on the leader: claimed in the store and placed in the pool in one operation. */
  register(
    node: NodeRecord,
    devices: readonly DeviceSpec[],
    agentUrl: string | null,
    presented: string | null,
  ): Promise<NodeRegistration> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        const refused = await this.claim(tx, node, devices, agentUrl, presented, now);
        return refused !== null ? { refused } : { placed: await this.place(tx, node.name, devices, now) };
      },
      (out): NodeRegistration => {
        if ("refused" in out) return { kind: "refused", problem: out.refused };
        this.placed(node.name, out.placed);
        return { kind: "registered", at: out.placed.at };
      },
    );
  }

  /** A node registered through another replica: its registration is in the store. */
  adopt(name: string): Promise<void> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        const node = await tx.nodes.getByName(name);
        return node?.devices ? this.place(tx, name, node.devices, node.heartbeatAt ?? now) : null;
      },
      (out) => {
        if (out !== null) this.placed(name, out);
      },
    );
  }

  /** The node's agent was heard from (the heartbeat is already in the store): its silence deadline moves. */
  heard(name: string, at: number): void {
    if (this.state.nodeDevices(name) !== undefined) this.timers.arm(name, "heartbeat", at + this.heartbeatTimeoutMs);
  }

  /** No heartbeat from a node for the timeout: fail its leases (charging only the time held) and drop its slots. */
  silent(name: string): Promise<void> {
    const now = this.clock.now();
    return this.runner.run(
      async (tx) => {
        const node = await tx.nodes.getByName(name);
        // Another replica may have recorded a heartbeat this one has not heard about yet.
        if (
          node !== null &&
          node.heartbeatAt !== null &&
          node.devices !== null &&
          node.heartbeatAt + this.heartbeatTimeoutMs > now
        ) {
          return { lost: false as const, at: node.heartbeatAt };
        }
        if (node !== null) await this.forget(tx, node);
        // Its leases held their GPUs as long as the node was heard from, not until now.
        const lastHeard = node?.heartbeatAt ?? null;
        const ended = await this.evict(
          tx,
          name,
          now,
          (lease) => nodeLostProblem(this.heartbeatTimeoutMs, name, lease, heldUntil(lease, lastHeard, now)),
          true,
          lastHeard,
        );
        return { lost: true as const, ended, grants: await this.writes.dispatch(tx, now) };
      },
      (out) => {
        if (!out.lost) return this.timers.arm(name, "heartbeat", out.at + this.heartbeatTimeoutMs);
        this.log.warn(
          { node: name, failed: out.ended.length },
          "node lost: no heartbeat; its leases failed and its slots were removed",
        );
        this.announcer.ended(out.ended);
        this.announcer.granted(out.grants);
      },
    );
  }

  /**
   * For a rebuild, inside its transaction: agent nodes still heartbeating rejoin the pool; the
   * others were lost while nobody led (their leases fail in the rebuild). Returns the lost nodes
   * with when each was last heard from.
   */
  async rebuild(tx: Tx, now: number): Promise<Map<string, number | null>> {
    this.timers.clearAll();
    const lost = new Map<string, number | null>();
    for (const node of await tx.nodes.list()) {
      if (node.devices === null) continue;
      if (node.heartbeatAt !== null && node.heartbeatAt + this.heartbeatTimeoutMs > now) {
        this.state.addNode(node.name, node.devices);
        this.timers.arm(node.name, "heartbeat", node.heartbeatAt + this.heartbeatTimeoutMs);
      } else {
        lost.set(node.name, node.heartbeatAt);
        await this.forget(tx, node);
      }
    }
    return lost;
  }

  private async place(tx: Tx, name: string, devices: readonly DeviceSpec[], now: number): Promise<Placed> {
    const changed = this.state.devicesChanged(name, devices);
    const replaced = changed === true;
    let ended: LeaseRecord[] = [];
    if (changed !== false) {
      if (replaced) {
        const why = (lease: LeaseRecord) =>
          problem(
            "no_gpu_available",
            `Node ${name} re-registered with different GPUs; this call's GPU is gone. It was charged only the ${Math.ceil((now - (lease.grantedAt ?? now)) / 1000)}s it held.`,
            { reason: "device_removed" },
          );
        ended = await this.evict(tx, name, now, why, false);
      }
      this.state.addNode(name, devices);
    }
    return { replaced, ended, grants: await this.writes.dispatch(tx, now), at: now, devices: devices.length };
  }

  private placed(name: string, out: Placed): void {
    this.timers.arm(name, "heartbeat", out.at + this.heartbeatTimeoutMs);
    this.announcer.ended(out.ended);
    this.announcer.granted(out.grants);
    this.log.info({ node: name, devices: out.devices, replaced: out.replaced }, "node registered");
  }

  /**
   * Takes the node's devices out of the pool and fails the leases that held them; with
   * `waitingToo`, also the queued requests that could only run on that node (nothing is requeued
   * elsewhere: the app runs on that host).
   */
  private async evict(
    tx: Tx,
    name: string,
    now: number,
    why: (lease: LeaseRecord) => Problem,
    waitingToo: boolean,
    lastHeard: number | null = now,
  ): Promise<LeaseRecord[]> {
    const evicted = this.state.removeNode(name);
    const ended: LeaseRecord[] = [];
    for (const lease of [...this.state.live.values()]) {
      if (lease.status === "active" && evicted.has(lease.id)) {
        ended.push(
          await this.writes.finishActive(tx, lease, "failed", now, why(lease), false, heldUntil(lease, lastHeard, now)),
        );
      } else if (waitingToo && lease.status === "queued" && lease.node === name) {
        ended.push(await this.writes.finishQueued(tx, lease, "failed", now, why(lease)));
      }
    }
    return ended;
  }

  /** Marks a node unregistered, so its agent's next heartbeat is told to register again (when it was last heard from stays known). */
  private async forget(tx: Tx, node: NodeRecord): Promise<void> {
    this.timers.clear(node.name);
    await tx.nodes.setState(node.id, {
      devices: null,
      registeredAt: null,
      heartbeatAt: node.heartbeatAt,
      agentUrl: node.agentUrl,
    });
  }
}
