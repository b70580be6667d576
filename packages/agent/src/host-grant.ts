import type { Lease } from "@gpupool/contract";
import { grantJson, leaseSpanMs } from "./device-answers.js";
import type { GrantJson } from "./device-answers.js";
import type { Logger } from "pino";
import type { ControlPlane } from "./control-plane.js";
import type { NodeDevice } from "./devices.js";
import type { LocalLeases } from "./local-leases.js";

/** What a /schedule request said about its caller, kept until its lease is granted (maybe after a wait). */
export interface Requester {
  readonly reuseKey: string | null;
  readonly cgroupPath: string | null;
  readonly uid: number | null;
}

/** A grant this agent cannot hand out; the lease was given back. `reason` goes into the 503. */
export class UnusableGrant extends Error {
  override readonly name = "UnusableGrant";
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}

/** What handing out a grant needs of the agent. */
export interface HostGrantDeps {
  readonly cp: ControlPlane;
  readonly leases: LocalLeases;
  readonly log: Logger;
  /** This host's devices: a grant of any other device is given back. */
  readonly devices: readonly NodeDevice[];
  readonly readiness: () => { readonly nodeName: string | null };
}

/**
 * Hands a lease the control plane granted to the app on this host: only a GPU of this node and of
 * this host will do — any other grant is given back at once (it would be useless here, and says
 * the pool's view of this node is wrong).
 */
export async function grantOnThisHost(
  options: HostGrantDeps,
  lease: Lease,
  appKey: string,
  requester: Requester,
): Promise<GrantJson> {
  const { cp, leases, log } = options;
  const node = options.readiness().nodeName;
  if (lease.device === null) throw new Error(`The control plane granted lease ${lease.id} without a device.`);
  if (node !== null && lease.device.node !== node) {
    // An app here cannot use another host's GPU: give it back rather than hand out a useless grant.
    await cp.release(appKey, lease.id, true).catch(() => undefined);
    log.error(
      { lease: lease.id, granted_node: lease.device.node, node },
      "the control plane granted a GPU of another node; released it",
    );
    throw new UnusableGrant(
      `The pool granted a GPU of node ${lease.device.node}, not of this node (${node}). Is the control plane a gpupool version that honours X-Gpupool-Node-Key?`,
      "foreign_node",
    );
  }
  const own = options.devices.find((d) => d.uuid === lease.device?.uuid);
  if (own === undefined) {
    // The pool's device list for this node is not this host's: most likely another agent
    // registered the same node (one node key on two hosts) and overwrote it.
    await cp.release(appKey, lease.id, true).catch(() => undefined);
    log.error(
      {
        lease: lease.id,
        granted_device: lease.device.uuid,
        granted_index: lease.device.index,
        own_devices: options.devices.map((d) => d.uuid),
        node,
      },
      "THE POOL GRANTED A GPU THIS HOST DOES NOT HAVE: released it. Is the node key of this agent also used by an agent on another host? Give each host a node of its own (POST /v1/admin/nodes)",
    );
    throw new UnusableGrant(
      `The pool granted GPU ${lease.device.uuid} (index ${lease.device.index}) of node ${lease.device.node}, which is not a GPU of this host; the lease was given back at once (charged at most the second it was held). The pool's device list for this node is not this agent's: is its node key also used by an agent on another host? Tell the operator.`,
      "foreign_device",
    );
  }
  const g = await leases.grant({
    leaseId: lease.id,
    app: lease.app,
    appKey,
    device: { index: lease.device.index, uuid: lease.device.uuid, name: lease.device.name },
    durationMs: leaseSpanMs(lease),
    reuseKey: requester.reuseKey,
    cgroupPath: requester.cgroupPath,
    scheduleUid: requester.uid,
  });
  log.info(
    {
      lease: lease.id,
      app: lease.app,
      device: g.lease.device.uuid,
      idle: g.idle,
      deadline: new Date(g.lease.deadlineAt).toISOString(),
    },
    "lease granted",
  );
  return grantJson(g.lease, g.token, g.idle, lease.device.node);
}
